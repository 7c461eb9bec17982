"""OpticalMemory: one chat session's long memory.

    from optimem import OpticalMemory
    mem = OpticalMemory("alice", "sqlite:///memory.db")
    mem.add("user", "My booking reference is QX7-4431Z.")
    mem.add("assistant", "Noted.")
    ctx = mem.context(budget=8192)          # plan + page images (+ vision tokens with a model)
    print(ctx.plan.explain())

Write path: `add` only appends to the store (milliseconds; no rendering, no tokenizer). Pages are
packed lazily: `sync()` (called by `context()`, or by you from a background thread) re-renders the
*open* page from its first (turn, offset), seals every page that filled up and stores it (PNG master,
spans, text, token count, hash) together with the new open position, in one atomic store write.
Rendering is deterministic, so two processes that sync the same session write identical pages.

Read path: `context(budget)` plans with `policies` (age schedule, budget, pins, monotone floors that
are persisted after each plan), derives each shown page's tier image from its master, and with a
model backend encodes the pages it needs, batched by tier, through a cache keyed by (page hash,
model, tier): a page is encoded at most once per tier.

With a model backend two more things happen by default, so that a chat turn costs little more than
its decode: a fresh plan leaves `prefix_slack` of the budget free and the next calls keep it, the new
turns appended as text (the decode engine reuses the KV of the unchanged part), and after each reply
a background worker (`optimem.ahead`) seals pages and encodes the tier views the next plans are
expected to show, so `context()` mostly looks things up (`last_context_stats` says where its time went).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from optimem.backends import Backend, NoModelBackend
from optimem.context import Context, ContextPage, ContextTurn
from optimem.errors import InputError, ModelError, StoreError
from optimem.pages import PageEncoder, PageViews
from optimem.records import TailCuts, page_infos, stored_turn_infos, tail_infos
from optimem.store import Store, StoredPage, check_session, open_store
from optimem.policies import Plan, Planner, Policy
from optimem.policies import PolicyError
from optimem.policies.stable import extend, slack_tokens
from optimem.renderers import Paginator, RenderSettings, Turn, iter_pages, normalize_text
from optimem.renderers.records import normalize_name, normalize_role

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant", "tool")
MAX_TURN_CHARS = 50_000_000
_TURN_STATS_KEY = "stats|turn-tokens|v2"  # v2: a speaker's name is counted with its turn
_STATS_WRITE_EVERY = 32  # turns counted beyond what the store holds before the list is written again
# A turn with at least this many characters already on sealed pages is a long one (a pasted log, a
# file): its tail is sealed on a page of its own at once, so only the open page's newer turns wait as
# text. Otherwise the whole long turn would count as not yet on a page and no budget could hold it.
LONG_TURN_TAIL_CHARS = 4000
SEAL_BATCH = 16  # pages drawn, then written in one compare-and-set; bounds what a huge turn holds in memory
DEFAULT_PREFIX_SLACK = 0.25  # with a model backend: a fresh plan leaves a quarter of the budget for later turns
AHEAD_BATCH = 8  # pages per background encode batch
# with the worker on, context() seals itself only when more turns than this wait unsealed (the open page
# holds at most a page of text however many turns that is; the bound is for sessions that never reply)
AHEAD_UNSEALED_TURNS = 64
AHEAD_NEXT_TIER_PAGES = 4  # per tier run, its oldest (newest) pages also encoded one tier coarser (sharper) ahead


class OpticalMemory:
    def __init__(
        self,
        session: str,
        store: Store | str | None = None,
        *,
        render: RenderSettings | None = None,
        policy: Policy | None = None,
        backend: Backend | None = None,
        prefix_slack: float | None = None,
        ahead: bool | None = None,
    ) -> None:
        """`prefix_slack`: the share of the budget a fresh plan leaves free so the next turns can be
        appended to it unchanged (its KV reused by the decode engine; `optimem.policies.stable`); 0
        plans every call afresh. Default: 0.25 with a model backend, 0 without. `ahead`: seal pages and
        encode the tier views the next plans are expected to show in a background worker after each
        assistant turn added (default: with a model backend; `wait_ahead()` waits for it)."""
        self.session = check_session(session)
        self.store = store if isinstance(store, Store) else open_store(store)
        self.backend = backend or NoModelBackend()
        self.policy = policy or Policy()
        self._render_arg = render
        self._render: RenderSettings | None = None  # read from the session on first use, not here
        # one instance may serve concurrent calls (acontext from several tasks, a background sync): the
        # planner's incremental state is guarded so they take turns instead of racing on it
        self._lock = threading.RLock()
        self._synced_turns = 0
        self._planner: Planner | None = None
        self._planned_turns = 0
        self._planned_pages = 0
        self._floors: dict[int, str | None] = {}
        self.views = PageViews(self.backend.ladder, store=self.store, session=self.session)
        self._encoder: PageEncoder | None = None
        has_model = bool(getattr(self.backend, "has_model", False))
        self.prefix_slack = (DEFAULT_PREFIX_SLACK if has_model else 0.0) if prefix_slack is None else float(prefix_slack)
        slack_tokens(1, 0, self.prefix_slack)  # validates the fraction
        self.ahead = has_model if ahead is None else bool(ahead)
        self._kept: tuple[Any, int, int, Plan] | None = None  # (planner, budget, reserve, plan) to extend
        self._last_call: tuple[int, int] | None = None  # (budget, reserve) of the last context()
        self._ahead_gen = 0  # bumped by each context(): a background encode still running stops early
        self.last_context_stats: dict[str, Any] = {}

    @property
    def render(self) -> RenderSettings:
        """The session's render settings: those it was first rendered with, else the ones given."""
        if self._render is None:
            stored = self.store.get_meta(self.session).get("render")
            if stored and self._render_arg is not None and _render_dict(self._render_arg) != stored:
                log.warning("session %s was rendered with %s; keeping those settings", self.session, stored)
            self._render = RenderSettings(**stored) if stored else (self._render_arg or RenderSettings())
        return self._render

    # -- writing ------------------------------------------------------------------------------------
    def add(self, role: str, content: str, metadata: Mapping[str, Any] | None = None, *, pinned: bool = False,
            key: str | None = None, name: str | None = None) -> int:
        """Append one turn; returns its id. Fast: a store append, nothing else.

        `key` (optional, unique per session) makes the append idempotent: if a call fails with a
        `StoreError` saying it may have been applied, calling again with the same key returns the
        first id instead of storing the turn twice. `name`: who spoke, drawn in the page header."""
        return self.add_many([{"role": role, "content": content, "metadata": metadata, "pinned": pinned,
                               "key": key, "name": name}])[0]

    def add_many(self, turns: Iterable[Mapping[str, Any] | Turn]) -> list[int]:
        rows = []
        for i, t in enumerate(turns):
            if isinstance(t, Turn):
                t = {"role": t.role, "content": t.content, "metadata": dict(t.metadata), "name": t.name}
            role, content = t.get("role"), t.get("content")
            try:  # the renderer's one role table: human -> user, ai -> assistant, ... (as render and plan do)
                role = normalize_role(role, i)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            if role not in ROLES:
                raise InputError(f"turn {i}: role must be one of {', '.join(ROLES)}, not {role!r}")
            if not isinstance(content, str):
                raise InputError(f"turn {i}: content must be a string, not {type(content).__name__}")
            if len(content) > MAX_TURN_CHARS:
                raise InputError(f"turn {i}: {len(content)} characters is over the {MAX_TURN_CHARS} limit")
            meta = t.get("metadata") or {}
            if not isinstance(meta, Mapping):
                raise InputError(f"turn {i}: metadata must be a mapping")
            try:  # a speaker's name travels in the metadata, so the store keeps its schema
                name = normalize_name(t.get("name"), i)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            if name:
                meta = {**meta, "name": name}
            rows.append({"role": role, "content": content, "metadata": dict(meta), "pinned": bool(t.get("pinned")),
                         "created": time.time(), "key": t.get("key")})
        if not rows:
            return []
        ids = self.store.append_turns(self.session, rows)
        # after a reply (the user reads and types; an agent runs its tool) the worker seals and
        # encodes ahead; not after a user turn, whose context() call follows at once and would only
        # wait for the worker
        if self.ahead and rows[-1]["role"] == "assistant":
            self._schedule_ahead()
        return ids

    def pin(self, turn_id: int) -> None:
        """Keep this turn as raw text in every context (the plan refuses a budget too small for pins)."""
        with self._lock:
            self.store.set_pinned(self.session, turn_id, True)
            self._planner = None

    def unpin(self, turn_id: int) -> None:
        with self._lock:
            self.store.set_pinned(self.session, turn_id, False)
            self._planner = None

    def turns(self, start: int = 0, stop: int | None = None):
        return self.store.get_turns(self.session, start, stop)

    # -- pages --------------------------------------------------------------------------------------
    def sync(self) -> int:
        """Seal the pages that filled up since the last call; returns how many this call sealed.

        Pages are drawn and written in batches of `SEAL_BATCH` as they are rendered, so a huge turn
        never has all its pages in memory. Each batch is a compare-and-set on the session's page counter
        (`Store.seal_pages`): a writer that finds another process sealed first re-reads the open
        position and carries on from there, so overlapping syncs never write an older state."""
        sealed = 0
        with self._lock:
            for _ in range(1000):  # each retry means another writer made progress
                done, n = self._seal_some()
                sealed += n
                if done:
                    return sealed
        raise StoreError(f"session {self.session!r}: sealing kept losing to other writers; try again")

    def _seal_some(self) -> tuple[bool, int]:
        """One pass from the stored open position: (finished, pages sealed). Not finished when another
        writer sealed first (then the caller reads the new position and goes on)."""
        head = self.store.snapshot(self.session, turns_from=1 << 62, pages_from=1 << 62)  # counters only
        meta, expect = head.meta, head.next_page
        t0, c0 = meta.get("open", [0, 0])
        render = _render_dict(self.render)
        self._synced_turns = head.turn_count
        if head.turn_count <= t0:
            if meta.get("render") is None and head.turn_count:
                self.store.update_meta(self.session, {"render": render})
            return True, 0
        turns = [Turn(t.role, t.content, name=t.metadata.get("name")) for t in self.store.get_turns(self.session, t0)]
        self._synced_turns = t0 + len(turns)
        if c0 < LONG_TURN_TAIL_CHARS and not self._open_page_filled(turns, c0):  # most turns: layout only
            if meta.get("render") is None:
                self.store.update_meta(self.session, {"render": render})
            return True, 0
        sealed = 0
        batch: list[Any] = []
        held = None  # the last full page: sealed once the next page shows where the open page starts
        last = None
        for page in iter_pages(turns, self.render, start=(0, c0), first_index=expect):
            last = page
            if held is not None:
                batch.append(held)
                if len(batch) >= SEAL_BATCH:
                    nxt = page.spans[0]
                    if not self._seal(batch, t0, expect, [t0 + nxt.turn, nxt.start], render):
                        return False, sealed
                    expect += len(batch)
                    sealed += len(batch)
                    batch = []
            held = page if page.full else None
            if not page.full:
                break
        if held is not None:  # the input ended exactly where a full page ended
            batch.append(held)
            end = held.spans[-1]
            open_at = [t0 + end.turn, end.end] if end.continues else [t0 + end.turn + 1, 0]
        elif last is not None and batch:
            open_at = [t0 + last.spans[0].turn, last.spans[0].start]
        pos = open_at if batch else [t0, c0]
        if pos[1] >= LONG_TURN_TAIL_CHARS:  # the open page starts inside a long turn: seal its tail now
            k = pos[0] - t0
            tail = next(iter_pages(turns[: k + 1], self.render, start=(k, pos[1]), first_index=expect + len(batch)), None)
            if tail is not None and tail.spans:
                batch.append(tail)
            open_at = [pos[0] + 1, 0]
        if batch:
            if not self._seal(batch, t0, expect, open_at, render):
                return False, sealed
            sealed += len(batch)
        elif meta.get("render") is None:
            self.store.update_meta(self.session, {"render": render})
        return True, sealed

    def _open_page_filled(self, turns: list[Turn], c0: int) -> bool:
        """Whether the open page (from char `c0` of `turns[0]`) has filled up, from its layout alone."""
        for _lines, full, _contents in Paginator(self.render).iter_page_lines(turns, (0, c0)):
            return full
        return False

    def _seal(self, pages: list[Any], t0: int, expect: int, open_at: list[int], render: dict[str, Any]) -> bool:
        records = [
            StoredPage(
                index=p.index,
                spans=[{"turn": t0 + s.turn, "start": s.start, "end": s.end, "continued": s.continued,
                        "continues": s.continues} for s in p.spans],
                text=p.text,
                text_tokens=p.text_tokens,
                content_hash=p.content_hash,
                png=p.png_bytes(),
                meta={"missing_glyphs": p.missing_glyphs, "fonts": list(p.fonts), "chars": p.chars},
            )
            for p in pages
        ]
        ok = self.store.seal_pages(self.session, records, expect=expect,
                                   meta={"open": open_at, "pages": expect + len(records), "render": render})
        if ok:
            for p in pages[-self.views.max_masters:]:  # the newest pages are the next to be shown
                self.views.remember(p.content_hash, p.image)
            log.debug("session %s: sealed pages %d-%d", self.session, expect, expect + len(records) - 1)
        return ok

    def forget(self) -> None:
        """Delete the whole session from the store: turns, pages, floors, cached vision tokens, metadata.
        The object stays usable and starts an empty session."""
        with self._lock:
            self.store.delete_session(self.session)
            self._planner = None
            self._synced_turns = 0
            self._render = None

    def restore(self, page: int) -> None:
        """Let a page (and every newer page) be planned sharp again: clears their floors."""
        n = self.store.next_page(self.session)
        with self._lock:
            self.store.set_floors(self.session, {i: None for i in range(page, n)})  # no ladder: sharpening on purpose
            self._planner = None

    # -- planning -----------------------------------------------------------------------------------
    def _sync_planner(self, limit: int | None = None) -> Planner:
        """Bring the planner up to date from one snapshot of the session (turns, pages, every floor and
        pin as of one instant). Turns from `limit` on (appended by another writer after this call's
        sync) wait for the next call instead of arriving unsealed."""
        for _ in range(2):
            if self._planner is None:
                self._planner = Planner(self.backend.ladder.costs, self.policy,
                                        getattr(self.backend, "template_overhead", None))
                self._planned_turns = self._planned_pages = 0
                self._floors = {}
                self._pinned: frozenset[int] = frozenset()
                self._page_refs: dict[int, tuple[range, int, str]] = {}  # sealed pages: turns, tokens, hash
                self._turn_stats_saved = 0  # turns whose counts the store holds
                self._cuts = TailCuts()  # where long turns may be cut (their tail as text)
                self._tail_at: dict[tuple[int, int], tuple[int, int]] = {}  # (turn, page) -> (first char, tokens)
                self._planner.tail_source = self._tail_infos  # asked only for a turn too long to be text whole
            planner = self._planner
            snap = self.store.snapshot(self.session, turns_from=self._planned_turns, pages_from=self._planned_pages)
            if snap.pinned != self._pinned and (self._planned_turns or self._pinned):
                self._planner = None  # pins changed (here or in another process): plan from scratch
                continue
            self._pinned = snap.pinned
            new_turns = [t for t in snap.turns if limit is None or t.id < limit]
            if new_turns:
                planner.extend(self._turn_infos(new_turns))
                self._planned_turns += len(new_turns)
            if any("doc_id" in p.meta or "doc" in p.meta for p in snap.pages):
                raise InputError(f"session {self.session!r} holds ingested documents (DocumentMemory); a chat "
                                 "memory needs a session of its own")
            new_pages = [p for p in snap.pages if p.spans[-1]["turn"] < self._planned_turns]
            new_pages = new_pages[: next((k for k, p in enumerate(new_pages) if p.index != self._planned_pages + k),
                                         len(new_pages))]
            if new_pages:
                floors = [self._floor_on_ladder(p.floor) for p in new_pages]
                planner.extend(pages=page_infos(new_pages, floors=floors))
                self._floors.update((p.index, f) for p, f in zip(new_pages, floors))
                self._page_refs.update((p.index, (range(p.spans[0]["turn"], p.spans[-1]["turn"] + 1), p.text_tokens,
                                                  p.content_hash)) for p in new_pages)
                self._planned_pages += len(new_pages)
                planner.drop_tails(self._cuts.add(new_pages))
            # floors another writer let fade since this planner read them (the store only coarsens them)
            faded = {i: f for i, f in ((i, self._floor_on_ladder(f)) for i, f in snap.floors.items())
                     if i < self._planned_pages and f is not None and self._floors.get(i) != f}
            if faded:
                planner.set_floors(faded)
                self._floors.update(faded)
            return planner
        raise AssertionError("unreachable")

    def _turn_infos(self, turns: list[Any]) -> list[Any]:
        """Planner records of new turns. Token counts and exact-content flags of counted turns are kept
        in the store (a JSON list by turn id; turns never change), so a new process planning a long
        session does not send its whole history through the tokenizer again."""
        known: list[Any] = []
        if turns[0].id == 0 or len(turns) > _STATS_WRITE_EVERY:
            blob = self.store.get_cache_blob(self.session, _TURN_STATS_KEY)
            try:
                known = json.loads(blob) if blob else []
                if not all(isinstance(k, list) and len(k) == 2 and isinstance(k[0], int) for k in known):
                    raise ValueError("not a list of [tokens, exact] pairs")
            except ValueError as exc:
                log.warning("session %s: discarding stored turn counts: %s", self.session, exc)
                known = []
        infos = stored_turn_infos(turns, known)
        planner = self._planner
        assert planner is not None
        counted = planner.turns + infos
        stored_upto = len(known) if known else self._turn_stats_saved
        if len(counted) - stored_upto >= _STATS_WRITE_EVERY and all(t.index == i for i, t in enumerate(counted)):
            self.store.put_cache(self.session, _TURN_STATS_KEY,
                                 json.dumps([[t.tokens, int(t.exact)] for t in counted]).encode())
            self._turn_stats_saved = len(counted)
        else:
            self._turn_stats_saved = max(self._turn_stats_saved, stored_upto)
        return infos

    def _tail_infos(self, t: int) -> list[Any]:
        """Where turn `t` may be cut (the planner asks only for a turn too long to be text whole): each
        tail's tokens, counted over the turn's normalised text from the cut on (what `context()` sends)."""
        points = self._cuts.cuts(t)
        if not points:
            return []
        (st,) = self.store.get_turns(self.session, t, t + 1)
        infos, starts = tail_infos(t, normalize_text(st.content, self.render.tab_width),
                                   (st.metadata or {}).get("name"), points)
        self._tail_at.update(((t, c.page), (starts[c.page], c.tokens)) for c in infos)
        return infos

    def _floor_on_ladder(self, floor: str | None) -> str | None:
        """A stored floor on the current backend's ladder. A session planned with another model's
        ladder (v1 'tiny' read by OCR-2, say) keeps forgetting monotone: an unknown tier becomes the
        coarsest tier this ladder has, never a sharper one."""
        names = self.backend.ladder.names
        if floor is None or floor == "dropped" or floor in names:
            return floor
        log.warning("session %s: stored tier %r is not on %s's ladder; treating it as %r",
                    self.session, floor, self.backend.model_id, names[-1])
        return names[-1]

    def plan(self, budget: int, *, reserve: int = 0) -> Plan:
        """Seal pages, plan under `budget` (minus `reserve`), persist the new floors.

        Floors are written coarsen-only in the store (`set_floors(..., ladder=...)`): a process holding
        an older plan can never make a page sharper than another process already let it fade.

        With `prefix_slack`, a fresh plan leaves that share of the budget free, and the following calls
        keep its segments unchanged with the new turns appended as text while that fits
        (`optimem.policies.stable.extend`), so the decode engine reuses the KV of everything before.
        The age floors are those of this call's fresh plan either way."""
        with self._lock:
            t0 = t1 = time.perf_counter()
            slack = slack_tokens(budget, reserve, self.prefix_slack) if self.prefix_slack else 0
            kept = self._kept
            plan = fresh = planner = None
            if self.ahead:
                # sealing is the background worker's (after each reply): plan without it while only a
                # few turns wait unsealed (they are text, as the planner requires); seal here only when
                # more wait, or when what waits does not fit as text
                head = self.store.snapshot(self.session, turns_from=1 << 62, pages_from=1 << 62)  # counters only
                open_turn = (head.meta.get("open") or [0, 0])[0]
                if head.turn_count - open_turn <= AHEAD_UNSEALED_TURNS:
                    self._synced_turns = max(self._synced_turns, head.turn_count)
                    planner = self._sync_planner(self._synced_turns)
                    try:  # with the slack only: sealing (below) is what makes room when this fails
                        fresh = self._fresh_plan(planner, budget, reserve, slack, fall_back=False)
                    except PolicyError:
                        fresh = None
            if fresh is None:
                self.sync()
                t1 = time.perf_counter()
                planner = self._sync_planner(self._synced_turns)  # what this sync saw, not what arrived since
                fresh = self._fresh_plan(planner, budget, reserve, slack)
            if slack and kept is not None and kept[0] is planner and kept[1:3] == (budget, reserve):
                plan = extend(kept[3], planner, budget, reserve, fresh)
            extended = plan is not None
            assert fresh is not None
            changed = {i: t for i, t in fresh.floors().items() if self._floors.get(i) != t}
            if changed:
                stored = self.store.set_floors(self.session, changed, ladder=self.backend.ladder.names)
                now = {i: self._floor_on_ladder(f) for i, f in stored.items() if f is not None}
                planner.set_floors(now)
                self._floors.update(now)
            if plan is None:
                plan = fresh if not slack else dataclasses.replace(
                    fresh, available=budget - reserve - planner.overhead.fixed)
            self._kept = (planner, budget, reserve, plan) if slack else None
            self.last_context_stats = {"seal_ms": 1000 * (t1 - t0), "plan_ms": 1000 * (time.perf_counter() - t1),
                                       "plan_kept": extended}
            return plan

    def _fresh_plan(self, planner: Planner, budget: int, reserve: int, slack: int = 0, *,
                    fall_back: bool = True) -> Plan:
        """A fresh plan under `budget - reserve - slack`, or (`fall_back`) under `budget - reserve` when
        the slack leaves too little room for what must be text (then the next call plans afresh again)."""
        for r in ((reserve + slack, reserve) if slack and fall_back else (reserve + slack,)):
            if r != planner.policy.reserve_tokens:
                planner.policy = dataclasses.replace(self.policy, reserve_tokens=r)
            try:
                return planner.plan(budget, now=time.time())
            except PolicyError:
                if r == reserve or not fall_back:
                    raise
        raise AssertionError("unreachable")

    def context(self, budget: int, *, reserve: int = 0, encode: bool | None = None,
                new_message: str | None = None) -> Context:
        """What the next model call receives: shown pages (tier image, and vision tokens with a model
        backend) and raw-text turns, oldest first, fitting `budget` tokens.

        `last_context_stats` says where the call's time went: seal (pages that filled up, or waiting
        for the background worker doing it), plan, encode-wait (a background encode finishing its
        batch) and encode (pages no cache held), and whether the previous plan was kept."""
        t_start = time.perf_counter()
        self._ahead_gen += 1
        plan = self.plan(budget, reserve=reserve)
        stats = self.last_context_stats
        items: list[ContextPage | ContextTurn] = []
        refs = self._page_refs  # sealed pages never change: what the planner read is all a page needs
        text_ids = [t for s in plan.segments if s.kind == "text" for t in s.turns]
        turns = {t.id: t for t in self._turns_by_id(text_ids)}
        planner = self._planner
        assert planner is not None
        for s in plan.segments:
            if s.kind == "page":
                for p in s.pages:
                    turns_on_page, text_tokens, content_hash = refs[p]
                    items.append(ContextPage(p, s.tier or "", turns_on_page, self.backend.placeholder_count(s.tier or ""),
                                             text_tokens, content_hash, self.views))
            elif s.kind == "text" and s.tail_from is not None:  # a long turn: its tail (the rest is on pages)
                (t,) = s.turns
                st = turns[t]
                start, tokens = self._tail_at[(t, s.tail_from)]
                items.append(ContextTurn(t, st.role, normalize_text(st.content, self.render.tab_width)[start:],
                                         tokens, (st.metadata or {}).get("name"), start=start))
            elif s.kind == "text":
                for t in s.turns:
                    st = turns[t]
                    items.append(ContextTurn(t, st.role, st.content, planner.turns[t].tokens,
                                             (st.metadata or {}).get("name")))
        ctx = Context(plan, items, new_message)
        stats.update(encode_wait_ms=0.0, encode_ms=0.0, pages_encoded=0)
        if self.backend.has_model if encode is None else encode:
            t = time.perf_counter()
            with self.encoder.held():  # a background batch (or a generation on the device) finishes first
                t1 = time.perf_counter()
                before = self.encoder.encoded
                self.encode_pages(ctx.pages)
                stats["pages_encoded"] = self.encoder.encoded - before
            stats["encode_wait_ms"], stats["encode_ms"] = 1000 * (t1 - t), 1000 * (time.perf_counter() - t1)
        stats["context_ms"] = 1000 * (time.perf_counter() - t_start)
        self._last_call = (budget, reserve)  # what the background worker encodes ahead for, after the next turn
        return ctx

    def _turns_by_id(self, ids: list[int]):
        if not ids:
            return []
        return self.store.get_turns(self.session, min(ids), max(ids) + 1)

    # -- encoding -----------------------------------------------------------------------------------
    @property
    def encoder(self) -> PageEncoder:
        """The page encoder: hot vision tokens on the device, then the store's cache, then the model."""
        if self._encoder is None:
            self._encoder = PageEncoder.for_session(self.backend, self.store, self.session)
        return self._encoder

    def encode_pages(self, pages: list[ContextPage]) -> None:
        """Fill `embeds` for each page: from the caches, else encoded (batched per tier) and cached."""
        self.encoder.encode(pages)

    # -- work ahead of need (a background worker, optimem.ahead) -------------------------------------
    def _ahead_key(self) -> tuple[str, str, int]:
        return ("memory", self.session, id(self))

    def _schedule_ahead(self) -> None:
        from optimem.ahead import worker

        worker().submit(self._ahead_key(), self._work_ahead)

    def wait_ahead(self, timeout: float | None = None) -> bool:
        """Block until this memory's background work (sealing, encoding ahead) is done; False on timeout."""
        from optimem.ahead import worker

        return worker().wait(self._ahead_key(), timeout)

    def ahead_targets(self, budget: int, reserve: int = 0, *, next_tier_pages: int = AHEAD_NEXT_TIER_PAGES
                      ) -> list[ContextPage]:
        """The pages (at their tiers) the next fresh plan is expected to show: this moment's fresh plan
        (what a re-plan would show now) plus, at each tier run's ends, where the boundaries move next:
        its oldest `next_tier_pages` pages one tier coarser (squeezed as the history grows) and its
        newest ones one tier sharper (when the text part of the next plan is shorter)."""
        with self._lock:
            self.sync()
            return self._ahead_targets(budget, reserve, next_tier_pages)

    def _ahead_targets(self, budget: int, reserve: int, next_tier_pages: int) -> list[ContextPage]:
        """`ahead_targets` on what the last `sync` sealed (the caller synced)."""
        with self._lock:
            planner = self._sync_planner(self._synced_turns)
            slack = slack_tokens(budget, reserve, self.prefix_slack) if self.prefix_slack else 0
            fresh = self._fresh_plan(planner, budget, reserve, slack)
            refs = self._page_refs
            names = self.backend.ladder.names
            want: dict[tuple[int, str], None] = {}
            for a, b, tier in sorted(fresh.tier_runs):
                if tier == "dropped":
                    continue
                for p in range(a, b):
                    want[(p, tier)] = None
                k = names.index(tier)
                if k + 1 < len(names):
                    for p in range(a, min(b, a + next_tier_pages)):
                        want[(p, names[k + 1])] = None
                if k > 0:
                    for p in range(max(a, b - next_tier_pages), b):
                        want[(p, names[k - 1])] = None
            out = []
            for p, tier in want:
                turns_on_page, text_tokens, content_hash = refs[p]
                out.append(ContextPage(p, tier, turns_on_page, self.backend.placeholder_count(tier), text_tokens,
                                       content_hash, self.views))
            return out

    def _work_ahead(self) -> None:
        """The background job: seal what filled up, then encode the expected pages not cached yet,
        one tier batch at a time, stopping early when a `context()` call starts meanwhile."""
        gen = self._ahead_gen
        self.sync()
        if self._last_call is None or not self.backend.has_model:
            return
        targets = [p for p in self._ahead_targets(*self._last_call, AHEAD_NEXT_TIER_PAGES)
                   if not self.encoder.is_hot(p.content_hash, p.tier)]
        if not targets:
            return
        self.views.many([(p.index, p.content_hash, p.tier) for p in targets])  # CPU work, no lock held
        by_tier: dict[str, list[ContextPage]] = {}
        for p in targets:
            by_tier.setdefault(p.tier, []).append(p)
        # small batches: a context() call starting meanwhile waits for one batch at most
        batch = max(min(int(getattr(self.backend, "batch_size", 16)), AHEAD_BATCH), 1)
        for tier, pages in by_tier.items():
            for i in range(0, len(pages), batch):
                if self._ahead_gen != gen:
                    return
                self.encoder.encode(pages[i : i + batch])
        self.views.flush()  # the derived views' PNG writes finish here, not during the next turn

    # -- the native path --------------------------------------------------------------------------
    def _need_model(self, what: str) -> None:
        if not self.backend.has_model:
            raise ModelError(f"{what} needs a model: OpticalMemory(..., backend=DeepseekOCRBackend.from_pretrained(path))")

    def chat(self, user_text: str, *, budget: int = 8192, max_new_tokens: int = 256) -> str:
        """Answer `user_text` with the model backend and record both turns."""
        return "".join(self.stream(user_text, budget=budget, max_new_tokens=max_new_tokens))

    def stream(self, user_text: str, *, budget: int = 8192, max_new_tokens: int = 256) -> Iterator[str]:
        """`chat`, yielding the reply in pieces as it is decoded; both turns are recorded at the end."""
        self._need_model("chat")
        self.add("user", user_text)
        ctx = self.context(budget, reserve=max_new_tokens)
        prompt = self.backend.prompts().chat(ctx, session=self.session)
        pieces = []
        for piece in self.backend.stream(prompt, max_new_tokens=max_new_tokens):
            pieces.append(piece)
            yield piece
        self.add("assistant", "".join(pieces))

    def recall(self, page: int, tier: str | None = None, *, max_new_tokens: int = 2048) -> str:
        """Read a sealed page back to text with the model's OCR (at its current floor tier by default)."""
        self._need_model("recall")
        (sp,) = self.store.get_pages(self.session, page, page + 1, with_png=False) or [None]
        if sp is None:
            raise InputError(f"session {self.session!r} has no sealed page {page}")
        if tier is None:
            floor = self._floor_on_ladder(sp.floor)
            tier = floor if floor not in (None, "dropped") else self.backend.ladder.names[0]
        return self.backend.ocr(self.views.master(page, sp.content_hash), tier, max_new_tokens=max_new_tokens)

    def stats(self) -> dict[str, Any]:
        return self.store.stats(self.session)

    # -- async variants (the store calls are blocking: run them off the event loop) ------------------
    async def aadd(self, role: str, content: str, metadata: Mapping[str, Any] | None = None, *, pinned: bool = False,
                   key: str | None = None) -> int:
        return await asyncio.to_thread(self.add, role, content, metadata, pinned=pinned, key=key)

    async def aadd_many(self, turns: Iterable[Mapping[str, Any] | Turn]) -> list[int]:
        return await asyncio.to_thread(self.add_many, list(turns))

    async def acontext(self, budget: int, **kwargs: Any) -> Context:
        return await asyncio.to_thread(self.context, budget, **kwargs)

    async def achat(self, user_text: str, **kwargs: Any) -> str:
        return await asyncio.to_thread(self.chat, user_text, **kwargs)

    async def arecall(self, page: int, tier: str | None = None, **kwargs: Any) -> str:
        return await asyncio.to_thread(self.recall, page, tier, **kwargs)

    async def async_sync(self) -> int:
        return await asyncio.to_thread(self.sync)

    async def aturns(self, start: int = 0, stop: int | None = None):
        return await asyncio.to_thread(self.turns, start, stop)

    async def apin(self, turn_id: int) -> None:
        await asyncio.to_thread(self.pin, turn_id)

    async def aunpin(self, turn_id: int) -> None:
        await asyncio.to_thread(self.unpin, turn_id)

    async def aforget(self) -> None:
        await asyncio.to_thread(self.forget)

    async def arestore(self, page: int) -> None:
        await asyncio.to_thread(self.restore, page)

    async def astats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats)


def _render_dict(r: RenderSettings) -> dict[str, Any]:
    d = {k: getattr(r, k) for k in ("page_px", "font_px", "line_spacing", "margin_px", "tab_width", "cjk_face")}
    if getattr(r, "turn_breaks", False):  # only when set: sessions stored before it compare equal
        d["turn_breaks"] = True
    return d


__all__ = ["Context", "ContextPage", "ContextTurn", "OpticalMemory"]  # the context types live in optimem.context
