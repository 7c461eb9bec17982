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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from optimem.backends import Backend, NoModelBackend
from optimem.context import Context, ContextPage, ContextTurn
from optimem.errors import InputError, ModelError
from optimem.pages import PageEncoder, PageViews, VisionCache
from optimem.records import page_infos, stored_turn_infos
from optimem.store import Store, StoredPage, check_session, open_store
from policies import Plan, Planner, Policy
from renderers import RenderSettings, Turn, render_transcript

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant", "tool")
MAX_TURN_CHARS = 50_000_000


class OpticalMemory:
    def __init__(
        self,
        session: str,
        store: Store | str | None = None,
        *,
        render: RenderSettings | None = None,
        policy: Policy | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.session = check_session(session)
        self.store = store if isinstance(store, Store) else open_store(store)
        self.backend = backend or NoModelBackend()
        self.policy = policy or Policy()
        meta = self.store.get_meta(self.session)
        stored = meta.get("render")
        if stored and render is not None and _render_dict(render) != stored:
            log.warning("session %s was rendered with %s; keeping those settings", session, stored)
        self.render = RenderSettings(**stored) if stored else (render or RenderSettings())
        self._planner: Planner | None = None
        self._planned_turns = 0
        self._planned_pages = 0
        self._floors: dict[int, str | None] = {}
        self.views = PageViews(self.backend.ladder, self._load_png)
        self._encoder: PageEncoder | None = None

    # -- writing ------------------------------------------------------------------------------------
    def add(self, role: str, content: str, metadata: Mapping[str, Any] | None = None, *, pinned: bool = False) -> int:
        """Append one turn; returns its id. Fast: a store append, nothing else."""
        return self.add_many([{"role": role, "content": content, "metadata": metadata, "pinned": pinned}])[0]

    def add_many(self, turns: Iterable[Mapping[str, Any] | Turn]) -> list[int]:
        rows = []
        for i, t in enumerate(turns):
            if isinstance(t, Turn):
                t = {"role": t.role, "content": t.content, "metadata": dict(t.metadata)}
            role, content = t.get("role"), t.get("content")
            if role not in ROLES:
                raise InputError(f"turn {i}: role must be one of {', '.join(ROLES)}, not {role!r}")
            if not isinstance(content, str):
                raise InputError(f"turn {i}: content must be a string, not {type(content).__name__}")
            if len(content) > MAX_TURN_CHARS:
                raise InputError(f"turn {i}: {len(content)} characters is over the {MAX_TURN_CHARS} limit")
            meta = t.get("metadata") or {}
            if not isinstance(meta, Mapping):
                raise InputError(f"turn {i}: metadata must be a mapping")
            rows.append({"role": role, "content": content, "metadata": dict(meta), "pinned": bool(t.get("pinned")),
                         "created": time.time()})
        if not rows:
            return []
        return self.store.append_turns(self.session, rows)

    def pin(self, turn_id: int) -> None:
        """Keep this turn as raw text in every context (the plan refuses a budget too small for pins)."""
        self.store.set_pinned(self.session, turn_id, True)
        self._planner = None

    def unpin(self, turn_id: int) -> None:
        self.store.set_pinned(self.session, turn_id, False)
        self._planner = None

    def turns(self, start: int = 0, stop: int | None = None):
        return self.store.get_turns(self.session, start, stop)

    # -- pages --------------------------------------------------------------------------------------
    def sync(self) -> int:
        """Seal the pages that filled up since the last call; returns how many were sealed."""
        meta = self.store.get_meta(self.session)
        t0, c0 = meta.get("open", [0, 0])
        n_pages = meta.get("pages", 0)
        new_turns = self.store.get_turns(self.session, t0)
        if not new_turns:
            return 0
        turns = [Turn(t.role, t.content) for t in new_turns]
        pages = render_transcript(turns, self.render, start=(0, c0), first_index=n_pages)
        sealed = [p for p in pages if p.full]
        if not sealed:
            if "render" not in meta:
                self.store.set_meta(self.session, {**meta, "render": _render_dict(self.render)})
            return 0
        nxt = pages[len(sealed)].spans[0] if len(pages) > len(sealed) else None
        if nxt is not None:
            open_at = [t0 + nxt.turn, nxt.start]
        else:  # the last sealed page ended exactly at a turn boundary
            last = sealed[-1].spans[-1]
            open_at = [t0 + last.turn + 1, 0] if not last.continues else [t0 + last.turn, last.end]
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
            for p in sealed
        ]
        new_meta = {**meta, "open": open_at, "pages": n_pages + len(sealed), "render": _render_dict(self.render)}
        self.store.put_pages(self.session, records, meta=new_meta)
        log.debug("session %s: sealed pages %d-%d", self.session, n_pages, n_pages + len(sealed) - 1)
        return len(sealed)

    def restore(self, page: int) -> None:
        """Let a page (and every newer page) be planned sharp again: clears their floors."""
        n = self.store.get_meta(self.session).get("pages", 0)
        self.store.set_floors(self.session, {i: None for i in range(page, n)})
        self._planner = None

    # -- planning -----------------------------------------------------------------------------------
    def _sync_planner(self) -> Planner:
        if self._planner is None:
            self._planner = Planner(self.backend.ladder.costs, self.policy, getattr(self.backend, "template_overhead", None))
            self._planned_turns = self._planned_pages = 0
            self._floors = {}
        planner = self._planner
        new_turns = self.store.get_turns(self.session, self._planned_turns)
        if new_turns:
            planner.extend(stored_turn_infos(new_turns))
            self._planned_turns += len(new_turns)
        new_pages = self.store.get_pages(self.session, self._planned_pages, with_png=False)
        if new_pages:
            floors = [self._floor_on_ladder(p.floor) for p in new_pages]
            planner.extend(pages=page_infos(new_pages, floors=floors))
            self._floors.update((p.index, f) for p, f in zip(new_pages, floors))
            self._planned_pages += len(new_pages)
        return planner

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
        """Seal pages, plan under `budget` (minus `reserve`), persist the new floors."""
        self.sync()
        planner = self._sync_planner()
        if reserve != planner.policy.reserve_tokens:
            planner.policy = dataclasses.replace(self.policy, reserve_tokens=reserve)
        plan = planner.plan(budget, now=time.time())
        changed = {i: t for i, t in plan.floors().items() if self._floors.get(i) != t}
        if changed:
            self.store.set_floors(self.session, changed)
            planner.set_floors(changed)
            self._floors.update(changed)
        return plan

    def context(self, budget: int, *, reserve: int = 0, encode: bool | None = None,
                new_message: str | None = None) -> Context:
        """What the next model call receives: shown pages (tier image, and vision tokens with a model
        backend) and raw-text turns, oldest first, fitting `budget` tokens."""
        plan = self.plan(budget, reserve=reserve)
        items: list[ContextPage | ContextTurn] = []
        page_ids = [p for s in plan.segments if s.kind == "page" for p in s.pages]
        stored = {p.index: p for p in self._pages_by_index(page_ids)}
        text_ids = [t for s in plan.segments if s.kind == "text" for t in s.turns]
        turns = {t.id: t for t in self._turns_by_id(text_ids)}
        planner = self._planner
        assert planner is not None
        for s in plan.segments:
            if s.kind == "page":
                for p in s.pages:
                    sp = stored[p]
                    items.append(ContextPage(p, s.tier or "", range(sp.spans[0]["turn"], sp.spans[-1]["turn"] + 1),
                                             self.backend.placeholder_count(s.tier or ""), sp.text_tokens,
                                             sp.content_hash, self.views))
            elif s.kind == "text":
                for t in s.turns:
                    st = turns[t]
                    items.append(ContextTurn(t, st.role, st.content, planner.turns[t].tokens))
        ctx = Context(plan, items, new_message)
        if self.backend.has_model if encode is None else encode:
            self.encode_pages(ctx.pages)
        return ctx

    def _pages_by_index(self, indices: list[int]) -> list[StoredPage]:
        if not indices:
            return []
        return self.store.get_pages(self.session, min(indices), max(indices) + 1, with_png=False)

    def _turns_by_id(self, ids: list[int]):
        if not ids:
            return []
        return self.store.get_turns(self.session, min(ids), max(ids) + 1)

    def _load_png(self, index: int) -> bytes:
        (page,) = self.store.get_pages(self.session, index, index + 1) or [None]
        if page is None or not page.png:
            raise InputError(f"session {self.session!r} has no sealed page {index}")
        return page.png

    # -- encoding -----------------------------------------------------------------------------------
    @property
    def encoder(self) -> PageEncoder:
        """The page encoder: hot vision tokens on the device, then the store's cache, then the model."""
        if self._encoder is None:
            self._encoder = PageEncoder(self.backend, VisionCache(self.store, self.session, self.backend.model_id))
        return self._encoder

    def encode_pages(self, pages: list[ContextPage]) -> None:
        """Fill `embeds` for each page: from the caches, else encoded (batched per tier) and cached."""
        self.encoder.encode(pages)

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
        prompt = self.backend.prompts().chat(ctx)
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
    async def aadd(self, role: str, content: str, metadata: Mapping[str, Any] | None = None, *, pinned: bool = False) -> int:
        return await asyncio.to_thread(self.add, role, content, metadata, pinned=pinned)

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


def _render_dict(r: RenderSettings) -> dict[str, Any]:
    d = {k: getattr(r, k) for k in ("page_px", "font_px", "line_spacing", "margin_px", "tab_width", "cjk_face")}
    return d


__all__ = ["Context", "ContextPage", "ContextTurn", "OpticalMemory"]  # the context types live in optimem.context
