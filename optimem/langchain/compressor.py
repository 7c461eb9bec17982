"""`OpticalCompressor`: a conversation → the messages to send a provider, old units as page images.

Per thread (the `thread_id` of the call's config), the conversation lives in an `OpticalMemory`
session of optimem's store: each unit (see `units`) is appended once, the memory seals pages as they
fill, keeps their floors, and plans. An invoke therefore costs the new messages, not the history:
units already stored are recognised by their key and skipped, sealed pages are drawn once, and each
page's PNG at a tier is made once and kept in the store's cache, so the same page is sent as the
same bytes call after call (provider prompt caches hit) until its tier changes.

What a request holds, in order: the system messages; one human message with the page images,
oldest first, each after a short label (pages of the units that aged out); then the recent units as
the original messages. The newest unit is always text. The text part starts only at a page's cut
(the first unit not wholly on that page and the ones before it). Where that unit begins inside the
page and continues past it, the page is sent whole and the unit's tail, from the next page's start,
is the text (`_page_cut`; its AI message with tool calls stays whole, so a call keeps its results):
a page, once sent, is sent as the same bytes until its tier changes, and moving units from text
onto pages appends pages after it. (The asking user message, which stays text whole while its tool
loop runs, is the exception: the page it begins on is drawn without it until it moves onto pages.)
Nothing is sent both as text and as a page beyond that AI message, and a tool call and its results
are on the same side. Between calls a background worker stores the newest unit,
seals the pages it fills and draws the images the next call is expected to add.

Budgets are counted the provider's way: system prompt, tool schemas, labels, per-message framing and
every image at its documented price (`optimem.providers`), with the caller's `token_counter` for
text when one is given. The plan is made in the planner's estimate, the request is counted, and the
plan is redone tighter while the count is over (the correction is kept per thread). A long unit (a
pasted log, a large tool result) that is recent but too long to be text is cut as the plan says
(`Plan.tails`, the chat memory's long turns): its pages before the cut whole, its tail as text; the
newest unit is stored first when it alone does not fit. When even that cannot fit (a system prompt
near the budget), the newest messages are cut to fit: the call never fails because of what the
conversation holds. Images per request and request bytes are kept
under the provider's limits by leaving out the oldest pages. Every decision is in the report, which
goes out in the first message's `response_metadata["optimem"]` and as the `optimem_compression`
custom callback event (visible in `astream_events` and traces).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, PrivateAttr

from optimem.backends import NoModelBackend
from optimem.errors import ConfigError, InputError, ModelError
from optimem.ladders import ModelLadder, TierView
from optimem.langchain.units import Unit, content_text, group_units, image_blocks, strip_images
from optimem.providers import Provider, get_provider, image_size, page_png, text_tokens, tier_size

log = logging.getLogger(__name__)
_SESSION_OK = re.compile(r"[A-Za-z0-9._-]{1,100}")
_PNG_CACHE_ID = "lc-page-png-g4"  # the cache namespace of page PNGs as sent (16-level grey)
_PENDING = "optimem_pending"  # a page image not drawn yet (priced by its tier while the plan is checked)
_HEADER = "Earlier conversation, as page images (oldest first):"


@dataclasses.dataclass
class Compressed:
    messages: list[BaseMessage]
    report: dict[str, Any]


class _ProviderBackend:
    """An API model as optimem's `Backend`: its ladder is the renderer's tiers priced by the provider
    (plus each page's label and framing); it encodes nothing, the provider reads the PNGs."""

    has_model = False
    device_lock = NoModelBackend.device_lock  # no device of its own

    def __init__(self, provider: Provider, extra: int) -> None:
        self.model_id = f"api:{provider.family}"
        costs = provider.ladder(extra)
        self._cost = {t.name: t.tokens for t in costs.tiers}
        self.ladder = ModelLadder(self.model_id, tuple(
            TierView(t.name, tier_size(t.name), "resize", t.tokens, t.tokens, t.fidelity) for t in costs.tiers))

    def placeholder_count(self, tier: str) -> int:
        return self._cost[tier]

    def encode(self, images: list[Any], tier: str) -> list[Any]:
        raise ModelError("an API provider reads the page images itself; nothing to encode")


@dataclasses.dataclass
class _Thread:
    mem: Any  # OpticalMemory
    keys: list[str]
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    adjust: int = 0  # tokens the planner's estimate fell short by, learned per thread
    pages: dict[int, tuple[str, list[dict]]] = dataclasses.field(default_factory=dict)  # index -> (hash, spans)
    cuts: list[int] = dataclasses.field(default_factory=list)  # page -> first unit not wholly on pages <= it
    masters: OrderedDict = dataclasses.field(default_factory=OrderedDict)  # boundary pages as drawn
    floors: dict[int, int] = dataclasses.field(default_factory=dict)  # page -> coarsest ladder index sent
    first_page: int = 0  # pages before it were left out and stay out
    pngs: OrderedDict = dataclasses.field(default_factory=OrderedDict)  # (hash, tier) -> base64
    last_make: tuple | None = None  # how the newest page of the last request was drawn
    last_sent: dict[int, str] = dataclasses.field(default_factory=dict)  # page -> tier, last request


class OpticalCompressor(RunnableSerializable[Any, list[BaseMessage]]):
    """Compress a conversation for `provider` (optionally a `model` name for its family's prices)
    under `budget` input tokens of that provider. Input: what `trim_messages` accepts (a message
    list, tuples, dicts, strings, or a `PromptValue`). Output: the message list to send.

    `store`: optimem store or URL holding each thread's pages (default: in memory, per compressor).
    `token_counter`: a chat model (its `get_num_tokens_from_messages`) or a function of a message
    list, for text; images are priced by `optimem.providers`. `ahead`: between calls, a background
    thread stores the newest unit, seals the pages it fills and draws the page images the next call is
    expected to send (the call then finds them done). `tools`: tool schemas sent with every
    request (the middleware passes the agent's own). `thread_id`: the thread when the config names
    none (`configurable.thread_id`, or `session_id`); without either, a thread is keyed by the
    conversation's first message.
    """

    provider: str = "anthropic"
    model: str | None = None
    budget: int = 8000
    recent_turns: int = 6
    store: Any = None
    token_counter: Any = None
    tools: list[Any] = []
    thread_id: str | None = None
    max_images: int | None = None
    max_request_bytes: int | None = None
    render: Any = None
    ahead: bool = True

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    _threads: dict[str, _Thread] = PrivateAttr(default_factory=dict)
    _guard: Any = PrivateAttr(default_factory=threading.Lock)
    _store: Any = PrivateAttr(default=None)
    _counts: OrderedDict = PrivateAttr(default_factory=OrderedDict)
    _additive: bool | None = PrivateAttr(default=None)  # the token_counter is per message + a constant
    _counter_base: int = PrivateAttr(default=0)
    _ahead: Any = PrivateAttr(default=None)

    def model_post_init(self, __context: Any) -> None:
        if not isinstance(self.budget, int) or self.budget < 1:
            raise ConfigError(f"budget must be a positive number of tokens, not {self.budget!r}")
        if self.recent_turns < 1:
            raise ConfigError("recent_turns must be at least 1 (the newest unit is always text)")
        get_provider(self.provider, self.model)  # unknown provider: fail now, not on the first call
        from optimem.renderers import RenderSettings

        # pages fill up (no turn_breaks): where a unit continues past a page, the page is still sent
        # whole and the unit's tail is text (`_page_cut`), so pages are final once drawn
        if self.render is None:
            self.render = RenderSettings()

    @property
    def pricing(self) -> Provider:
        return get_provider(self.provider, self.model)

    # -- Runnable ---------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> list[BaseMessage]:
        _no_options(kwargs)
        return self._call_with_config(self._invoke, input, config, run_type="chain")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> list[BaseMessage]:
        _no_options(kwargs)
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain")

    def _invoke(self, input: Any, run_manager: Any, config: RunnableConfig) -> list[BaseMessage]:
        res = self._compress(coerce_messages(input), system=None, tools=None, thread_id=None, config=config)
        _emit(res.report, config)
        return res.messages

    async def _ainvoke(self, input: Any, run_manager: Any, config: RunnableConfig) -> list[BaseMessage]:
        msgs = coerce_messages(input)
        res = await run_in_executor(config, self._compress, msgs, system=None, tools=None, thread_id=None, config=config)
        _emit(res.report, config)
        return res.messages

    def compress(self, messages: Sequence[BaseMessage], *, system: SystemMessage | None = None,
                 tools: Sequence[Any] | None = None, thread_id: str | None = None,
                 config: RunnableConfig | None = None) -> Compressed:
        """The agent-side entry: `messages` without the system prompt, which comes as `system` (and
        stays out of the result), `tools` as bound to the model. Traced as a run of this Runnable."""
        def fn(msgs: list[BaseMessage], run_manager: Any, config: RunnableConfig) -> Compressed:
            res = self._compress(msgs, system=system, tools=tools, thread_id=thread_id, config=config)
            _emit(res.report, config)
            return res

        return self._call_with_config(fn, list(messages), config, run_type="chain")

    async def acompress(self, messages: Sequence[BaseMessage], *, system: SystemMessage | None = None,
                        tools: Sequence[Any] | None = None, thread_id: str | None = None,
                        config: RunnableConfig | None = None) -> Compressed:
        async def fn(msgs: list[BaseMessage], run_manager: Any, config: RunnableConfig) -> Compressed:
            res = await run_in_executor(config, self._compress, msgs, system=system, tools=tools, thread_id=thread_id,
                                        config=config)
            _emit(res.report, config)
            return res

        return await self._acall_with_config(fn, list(messages), config, run_type="chain")

    # -- the work ---------------------------------------------------------------------------------
    def _compress(self, messages: list[BaseMessage], *, system: SystemMessage | None, tools: Sequence[Any] | None,
                  thread_id: str | None, config: RunnableConfig | None) -> Compressed:
        prov = self.pricing
        if system is not None:
            head, convo = [system], list(messages)
            keep_head = False
        else:
            n = 0
            while n < len(messages) and isinstance(messages[n], SystemMessage):
                n += 1
            head, convo = list(messages[:n]), list(messages[n:])
            keep_head = True
        units = group_units(convo)
        tool_schemas = list(tools) if tools is not None else list(self.tools)
        report: dict[str, Any] = {"provider": prov.name, "family": prov.family, "budget": self.budget,
                                  "units": len(units), "messages_in": len(messages)}
        if not units:
            out = head if keep_head else []
            report.update(self._measure(head, tool_schemas, prov))
            return Compressed(_with_report(out, report), report)
        thread = self._thread_key(thread_id, config, units)
        st = self._thread(thread, prov)
        report["thread"] = thread
        with st.lock:
            committed, tail = units[:-1], units[-1:]
            report["reset"] = self._sync_units(st, committed, tail[0])
            out, extra = self._fit(st, prov, head, committed, tail, tool_schemas)
        if self.ahead:
            self._schedule_ahead(st, units)
        report.update(extra)
        if not keep_head:
            out = out[len(head):]
        return Compressed(_with_report(out, report), report)

    def _fit(self, st: _Thread, prov: Provider, head: list[BaseMessage], committed: list[Unit], tail: list[Unit],
             tools: list[Any]) -> tuple[list[BaseMessage], dict[str, Any]]:
        from optimem.langchain.units import pending_calls

        tail_msgs = [m for u in tail for m in u.messages]
        fixed = self._measure(head + tail_msgs, tools, prov)["tokens"]
        info: dict[str, Any] = {}
        attempts = 0
        if committed and fixed < self.budget:
            # the user message that started the current agent turn (or the one before the newest) stays
            # text while its tool loop runs, when that can fit (a pasted log cannot): else, or when no
            # plan fits with it, the plan places it like any other unit
            ask = _asking_unit(committed)
            fits = ask is not None and fixed + self._measure(
                [m for u in committed[ask:] for m in u.messages], [], prov)["tokens"] - prov.request_tokens <= self.budget
            for keep_ask in (True, False) if fits else (False,):
                res, info, n = self._attempts(st, prov, head, committed, tail_msgs, tools, fixed, keep_ask)
                attempts += n
                if res is not None:
                    return self._accept(st, prov, res, info, attempts)
        if not pending_calls(tail[0]):
            # the newest unit itself is too long to be text whole (a pasted log, a large tool result):
            # it goes into the thread's memory like any unit, and the plan shows its earlier pages and
            # only its tail as text (the planner's cut turns)
            self._sync_units(st, committed + tail, tail[0])
            fixed_head = self._measure(head, tools, prov)["tokens"]
            if fixed_head < self.budget:
                res, info, n = self._attempts(st, prov, head, committed + tail, [], tools, fixed_head, True)
                attempts += n
                if res is not None:
                    info["text_units"] -= 1  # the newest unit was counted among the committed ones
                    return self._accept(st, prov, res, info, attempts)
        # text only: the newest whole units that fit, the newest messages cut if even they do not
        info.pop("_tiers", None)
        info.pop("_last_make", None)
        out, cut, kept = self._text_only(head, committed + tail, tools, prov)
        info.update(self._measure(out, tools, prov), degraded=bool(committed) or cut > 0, cut_messages=cut,
                    pages=0, page_tiers={}, capped_pages=0, text_units=kept,
                    omitted_units=len(committed) + len(tail) - kept)
        return out, info

    def _attempts(self, st: _Thread, prov: Provider, head: list[BaseMessage], committed: list[Unit],
                  tail_msgs: list[BaseMessage], tools: list[Any], fixed: int,
                  keep_ask: bool) -> tuple[list[BaseMessage] | None, dict[str, Any], int]:
        """Plan, assemble and count until the request is within budget (the planner's estimate is
        corrected per thread); returns the request or None, its report, and the attempts made."""
        from optimem.policies import PolicyError

        room = self.budget - fixed
        plan = None
        info: dict[str, Any] = {}
        over = 0
        attempt = 0
        for attempt in range(8):
            plan_budget = room - st.adjust
            if plan_budget < 1:
                break
            try:
                plan = st.mem.plan(plan_budget)
            except PolicyError as exc:
                info["planner"] = str(exc)
                break
            out, info, over = self._try(st, prov, plan, committed, head, tail_msgs, tools, 0, keep_ask)
            if over <= 0:
                if over < -self.budget // 10 and st.adjust > 0:  # give back what is no longer needed
                    st.adjust = max(0, st.adjust - (-over) // 2)
                return out, info, attempt + 1
            st.adjust += over + over // 2 + 8
        # the plan could not bring the request under budget (the text part that must stay text, the
        # asking user message with its tool loop, is more than the plan left to text): leave out the
        # oldest pages, a few at a time, before giving up on pages altogether
        if plan is not None:
            step_cost = prov.page_tokens(st.mem.backend.ladder.names[-1]) + self._page_extra(prov)
            skip, pages = 0, info.get("pages", 0)
            while pages > 0:
                skip += max(1, over // step_cost)
                out, info, over = self._try(st, prov, plan, committed, head, tail_msgs, tools, skip, keep_ask)
                pages = info["pages"]
                attempt += 1
                if over <= 0:
                    return out, info, attempt + 1
        return None, info, attempt + 1

    def _try(self, st: _Thread, prov: Provider, plan: Any, committed: list[Unit], head: list[BaseMessage],
             tail_msgs: list[BaseMessage], tools: list[Any], skip: int,
             keep_ask: bool = True) -> tuple[list[BaseMessage], dict[str, Any], int]:
        # a unit the plan cut is sent whole while that fits (as the call before may have sent it: the
        # page before it keeps its bytes); only when it does not, its earlier pages and its tail
        cuts = any(t < len(committed) for t, _ in getattr(plan, "tails", ()))
        for use_cut in (False, True) if cuts else (False,):
            body, info = self._assemble(st, prov, plan, committed, head + tail_msgs, skip, keep_ask, use_cut)
            out = head + body + tail_msgs
            measured = self._measure(out, tools, prov)
            info.update(measured)
            if measured["tokens"] <= self.budget:
                break
        return out, info, measured["tokens"] - self.budget

    def _accept(self, st: _Thread, prov: Provider, out: list[BaseMessage], info: dict[str, Any],
                attempts: int) -> tuple[list[BaseMessage], dict[str, Any]]:
        out = self._materialize(st, prov, out)  # page images are drawn only for the plan that fits
        names = st.mem.backend.ladder.names
        sent = info.pop("_tiers")
        for p, tier in sent.items():
            st.floors[p] = max(st.floors.get(p, 0), names.index(tier))
        if sent:
            st.first_page = max(st.first_page, min(sent))
        st.last_make = info.pop("_last_make")
        st.last_sent = sent
        info.update(attempts=attempts, degraded=False, cut_messages=0, request_bytes=request_bytes(out))
        return out, info

    # -- state per thread --------------------------------------------------------------------------
    def _thread_key(self, thread_id: str | None, config: RunnableConfig | None, units: list[Unit]) -> str:
        if thread_id is None:
            conf = (config or {}).get("configurable", {}) or {}
            thread_id = conf.get("thread_id") or conf.get("session_id") or self.thread_id
        if thread_id is None:  # no persistence named: the conversation's first unit identifies it
            thread_id = "anon-" + units[0].key()
        return str(thread_id)

    def _open_store(self):
        if self._store is None:
            from optimem.store import Store, open_store

            self._store = self.store if isinstance(self.store, Store) else open_store(self.store or "sqlite://")
        return self._store

    def _thread(self, thread: str, prov: Provider) -> _Thread:
        key = f"{prov.family}:{thread}"
        with self._guard:
            st = self._threads.get(key)
            if st is None:
                from optimem.memory import OpticalMemory
                from optimem.policies import Policy

                name = f"lc-{prov.family}-{thread}"
                if not _SESSION_OK.fullmatch(name):
                    name = f"lc-{prov.family}-" + hashlib.sha1(thread.encode()).hexdigest()[:32]
                backend = _ProviderBackend(prov, self._page_extra(prov))
                mem = OpticalMemory(name, self._open_store(), render=self.render, backend=backend,
                                    policy=_policy(Policy, self.recent_turns))
                keys = [t.metadata.get("k", "") for t in mem.turns()]
                st = self._threads[key] = _Thread(mem, keys)
            return st

    def _sync_units(self, st: _Thread, committed: list[Unit], tail: Unit) -> bool:
        """Append the units the thread's memory has not seen; rebuild it when the history changed
        under it (messages removed or edited upstream). Returns whether it was rebuilt."""
        n = len(st.keys)
        reset = False
        if n == len(committed) + 1 and tail.key() == st.keys[-1] and (not committed or committed[0].key() == st.keys[0]):
            return False  # the same conversation again: its newest unit was stored ahead already
        if n:
            if len(committed) < n or committed[n - 1].key() != st.keys[n - 1] or committed[0].key() != st.keys[0]:
                log.info("thread %s: history changed upstream; rebuilding its pages", st.mem.session)
                st.mem.store.delete_session(st.mem.session)
                from optimem.memory import OpticalMemory

                st.mem = OpticalMemory(st.mem.session, st.mem.store, render=self.render, backend=st.mem.backend,
                                       policy=st.mem.policy)
                st.keys, st.pages, st.cuts, st.floors, st.adjust, st.first_page = [], {}, [], {}, 0, 0
                n, reset = 0, True
        new = committed[n:]
        if new:
            keys = [u.key() for u in new]
            # the store's idempotency key (position + identity): two processes serving the same
            # thread append each unit once
            st.mem.add_many([{"role": "assistant" if u.role == "tool" else u.role, "content": u.text(),
                              "metadata": {"k": k}, "key": f"{n + i}-{k}", "name": u.name}
                             for i, (u, k) in enumerate(zip(new, keys))])
            st.keys.extend(keys)
        return reset

    # -- work ahead of need -----------------------------------------------------------------------
    def _schedule_ahead(self, st: _Thread, units: list[Unit]) -> None:
        if self._ahead is None:
            with self._guard:
                if self._ahead is None:
                    from optimem.ahead import AheadWorker

                    self._ahead = AheadWorker(max_pending=16, name="optimem-langchain-ahead")
        self._ahead.submit(("lc", id(st)), lambda: self._work_ahead(st, units))

    @property
    def ahead_stats(self) -> dict[str, Any]:
        """The background worker's counters: jobs done, replaced, dropped, failed, busy seconds."""
        return {} if self._ahead is None else dict(self._ahead.stats)

    def wait_ahead(self, timeout: float | None = None) -> bool:
        """Block until the background work of every thread is done (False on timeout)."""
        return True if self._ahead is None else self._ahead.wait(None, timeout)

    def _work_ahead(self, st: _Thread, units: list[Unit]) -> None:
        """Between calls: store the newest unit (the next call's history holds it; a unit still
        waiting for tool results is left for that call), seal the pages it fills, and draw the
        images the next request is expected to add: the page the text part starts on and the next
        page, whole (both at the newest page's tier), and the
        oldest two pages not yet at the coarsest tier one tier coarser (where aging moves them next)."""
        from optimem.langchain.units import pending_calls

        with st.lock:
            if len(st.keys) == len(units) - 1 and not pending_calls(units[-1]):
                if not st.keys or st.keys[-1] == units[-2].key():
                    self._sync_units(st, units, units[-1])  # appends just the newest unit
            st.mem.sync()
            self._load_pages(st)
            make = st.last_make
            if make is None:
                return
            q, tier = make[1], make[-1]
            wanted: list[tuple[int, str, str]] = []  # (page, content hash, tier)
            if make[0] == "boundary":
                wanted.append((q, st.pages[q][0], tier))
            if q + 1 < len(st.pages):  # whole: a unit continuing past it is cut there (`_page_cut`)
                wanted.append((q + 1, st.pages[q + 1][0], tier))
            # pages fade oldest first: the oldest two not yet at the coarsest tier, one tier coarser
            names = st.mem.backend.ladder.names
            fading = [(p, t) for p, t in sorted(st.last_sent.items()) if p != q and t in names and t != names[-1]]
            wanted += [(p, st.pages[p][0], names[names.index(t) + 1]) for p, t in fading[:2]]
            wanted = [w for w in wanted if (w[1], w[2]) not in st.pngs]
        # drawn without the thread's lock, so a call arriving meanwhile does not wait for an image;
        # none is started once a call is under way (it draws what it needs itself)
        for index, content_hash, tier in wanted:
            if st.lock.locked():
                return
            b64 = self._draw_page_b64(st, index, content_hash, tier)
            with st.lock:
                self._keep_png(st, (content_hash, tier), b64)

    # -- assembling a request ----------------------------------------------------------------------
    def _page_extra(self, prov: Provider) -> int:
        """What one page costs beyond its image: its label (and, for the first, the header)."""
        return text_tokens("[page 000: turns 0000-0000, large]") + 2

    def _assemble(self, st: _Thread, prov: Provider, plan: Any, committed: list[Unit],
                  other: list[BaseMessage], skip: int = 0,
                  keep_ask: bool = True, use_cut: bool = True) -> tuple[list[BaseMessage], dict[str, Any]]:
        text_ids = sorted(t for s in plan.segments if s.kind == "text" for t in s.turns)
        planned = text_ids[0] if text_ids else len(committed)
        self._load_pages(st)
        cut = self._plan_cut(st, plan, len(committed)) if use_cut else None
        plan_cut = cut is not None
        if cut is None:
            # the user message that started the current agent turn stays text while its tool loop runs
            ask = _asking_unit(committed) if keep_ask else None
            limit = ask if ask is not None else len(committed)
            first_text = self._snap(st, planned, limit)
            cut = self._page_cut(st, first_text, limit)
        if cut is not None:
            # a unit cut at a page's start (by the plan: a long unit; or `_page_cut`): its pages
            # before the cut are shown whole, its tail is text, and every unit before it is on pages
            first_text, stop_page, start = cut
            text_ids = list(range(first_text, len(committed)))
            text_msgs = self._tail_messages(st, committed[first_text], start, stop_page)
            text_msgs += [m for i in text_ids[1:] for m in committed[i].messages]
        else:
            stop_page = len(st.pages)
            text_ids = list(range(first_text, len(committed)))  # a suffix: no pins or exact turns here
            text_msgs = [m for i in text_ids for m in committed[i].messages]
        plan_tiers = self._monotone(st, {p: s.tier for s in plan.segments if s.kind == "page" for p in s.pages})
        # every page holding a unit older than the text part, from the plan's oldest shown page on;
        # pages the plan left to text (units moved to pages by the snap) take its newest page's tier
        if plan_tiers:
            lo = min(plan_tiers)
            extra_tier = plan_tiers[max(plan_tiers)]
        else:
            lo = next((i for i in range(len(st.pages)) if st.pages[i][1][-1]["turn"] >= planned), len(st.pages))
            extra_tier = st.mem.backend.ladder.names[-1]
        if lo > st.first_page and plan_tiers and st.floors:  # (a thread's first request has no cache to keep)
            # pages leave in batches: dropping a quarter more than the plan asks leaves slack, so the
            # next calls keep the same first page and the request's leading bytes stay the same
            # (the batch is counted from the first page still sent, so it does not shrink as the
            # plan drops more: a tighter plan always leaves out more pages)
            # (a long unit cut by the plan adds many pages at once: a quarter of those the plan shows)
            span = len(st.pages) - st.first_page
            lo += max(1, (min(span, len(plan_tiers)) if plan_cut else span) // 4)
        lo = max(lo, st.first_page) + skip  # a page left out once stays out
        entries: list[tuple[int, int, int, str, dict[str, Any]]] = []  # (page, first turn, last turn, tier, block)
        for p in range(lo, stop_page):
            h, spans = st.pages[p]
            t0, t1 = spans[0]["turn"], spans[-1]["turn"]
            if t0 >= first_text and cut is None:
                break  # this page and the later ones hold only text units
            tier = plan_tiers.get(p, extra_tier)
            if t1 >= first_text and cut is None:  # the boundary page: drawn again with only its older units
                make: tuple = ("boundary", p, spans[0]["turn"], spans[0]["start"], first_text, tier)
                t1 = first_text - 1
            else:
                make = ("page", p, h, tier)
            entries.append((p, t0, t1, tier, {"type": "image", _PENDING: make}))
        # provider limits: the oldest pages go first
        max_images = self.max_images if self.max_images is not None else prov.max_images
        max_bytes = self.max_request_bytes if self.max_request_bytes is not None else prov.max_request_bytes
        n_img = sum(len(image_blocks(m)) for m in other + text_msgs) + len(entries)
        size = request_bytes(other + text_msgs) + sum(self._b64_len(st, e[4][_PENDING]) + 120 for e in entries)
        capped = 0
        while entries and ((max_images is not None and n_img > max_images) or (max_bytes is not None and size > max_bytes)):
            e = entries.pop(0)
            n_img -= 1
            size -= self._b64_len(st, e[4][_PENDING]) + 120
            capped += 1
        blocks: list[dict[str, Any]] = []
        tiers: dict[str, int] = {}
        for p, t0, t1, tier, block in entries:
            blocks.append({"type": "text", "text": f"[page {p}: turns {t0}-{t1}, {tier}]"})
            blocks.append(block)
            tiers[tier] = tiers.get(tier, 0) + 1
        omitted = entries[0][1] if entries else first_text
        body: list[BaseMessage] = []
        if blocks or omitted:
            content: list[dict[str, Any]] = [{"type": "text", "text": _HEADER}, *blocks] if blocks else []
            if omitted:  # after the pages, so the request's leading bytes do not change with it
                content.append({"type": "text", "text": f"[{omitted} earlier turns left out to fit the context budget]"})
            body.append(HumanMessage(content=content))
        body.extend(text_msgs)
        extra: dict[str, Any] = {"cut_unit": [first_text, stop_page]} if cut is not None else {}
        return body, {**extra, "_tiers": {e[0]: e[3] for e in entries}, "_last_make": entries[-1][4][_PENDING] if entries else None, "pages": len(entries), "page_tiers": tiers, "text_units": len(text_ids) + 1,
                      "omitted_units": omitted, "capped_pages": capped, "plan_tokens": plan.total_tokens}

    def _plan_cut(self, st: _Thread, plan: Any, n_units: int) -> tuple[int, int, int] | None:
        """The newest unit the plan cut (`Plan.tails`: shown on its pages up to one, its tail as text)
        as (unit, first page of its tail, first character of the tail in the unit's drawn text), when
        the pages agree (the tail starts where that page starts drawing the unit, or after the last
        sealed page when the unit continues past it)."""
        tails = [(t, p) for t, p in getattr(plan, "tails", ()) if t < n_units]
        if not tails:
            return None
        return self._cut_at(st, *max(tails))

    @staticmethod
    def _cut_at(st: _Thread, t: int, p: int) -> tuple[int, int, int] | None:
        """Unit `t` cut where page `p` starts drawing it: (t, p, first character of its tail), when
        page `p` starts inside the unit (or is the open page after the last sealed one, which the
        unit continues onto)."""
        if 0 < p < len(st.pages):
            s0 = st.pages[p][1][0]
            if s0["turn"] == t and s0.get("continued", s0["start"] > 0):
                return t, p, s0["start"]
        elif p == len(st.pages) and p:
            last = st.pages[p - 1][1][-1]  # (pages are keyed by index)
            if last["turn"] == t and last["continues"]:
                return t, p, last["end"]
        return None

    def _tail_messages(self, st: _Thread, unit: Unit, start: int, page: int) -> list[BaseMessage]:
        """A cut unit's messages from character `start` of its drawn text on: a message wholly before
        it says where it is, the one it falls in keeps its rest; AI messages stay whole (a tool call
        goes with its results, and a reasoning block with its turn)."""
        from langchain_core.messages import AIMessage

        from optimem.renderers import normalize_text

        tab = st.mem.render.tab_width
        note = f"[the earlier part of this is on the pages above, up to page {page - 1}; it continues here]\n"
        out: list[BaseMessage] = []
        pos = 0
        for i, (m, parts) in enumerate(unit.parts()):
            text = "\n".join(normalize_text(x, tab) for x in parts)
            a, b = pos, pos + len(text)
            pos = b + (1 if parts else 0)
            if isinstance(m, AIMessage) and (getattr(m, "tool_calls", None) or len(unit.messages) > 1):
                out.append(m)
            elif start <= a:
                out.append(m)
            elif start >= b:
                out.append(m.model_copy(update={"content": f"[on the pages above, up to page {page - 1}]"}))
            else:
                off = start - a
                if isinstance(m, ToolMessage):  # its drawn text starts with a label ("[name result] "), not sent
                    off = max(off, len(normalize_text(parts[0][: parts[0].index("] ") + 2], tab)))
                out.append(m.model_copy(update={"content": note + text[off:]}))
        return out

    def _b64_len(self, st: _Thread, make: tuple) -> int:
        """Bytes a pending page will take (its PNG's when made before; else a generous estimate)."""
        key = (make[2], make[3]) if make[0] == "page" else make
        b64 = st.pngs.get(key)
        if b64 is not None:
            return len(b64)
        size = tier_size(make[-1])
        return int(size * size * 0.1)  # 16-level grey text pages: ~0.4 bit a pixel, base64 4/3

    def _materialize(self, st: _Thread, prov: Provider, out: list[BaseMessage]) -> list[BaseMessage]:
        for i, m in enumerate(out):
            if isinstance(m.content, list) and any(isinstance(b, dict) and _PENDING in b for b in m.content):
                blocks = []
                for b in m.content:
                    if isinstance(b, dict) and _PENDING in b:
                        make = b[_PENDING]
                        if make[0] == "page":
                            b64 = self._page_b64(st, make[1], make[2], make[3])
                        else:
                            b64 = self._boundary_png(st, *make[1:])
                        b = _image_block(prov, b64, make[-1])
                    blocks.append(b)
                out = out[:i] + [m.model_copy(update={"content": blocks})] + out[i + 1:]
        return out

    def _monotone(self, st: _Thread, tiers: dict[int, str]) -> dict[int, str]:
        """A page never comes back sharper than it was last sent: forgetting stays monotone even where
        the budget (not age) coarsened it, so the pages already sent keep their bytes from call to
        call and provider prompt caches keep hitting. (Coarser costs less: the budget still holds.)"""
        names = st.mem.backend.ladder.names
        out = {}
        for p, tier in tiers.items():
            k = max(names.index(tier), st.floors.get(p, 0))
            out[p] = names[k]
        return out

    def _load_pages(self, st: _Thread) -> None:
        """Spans and hashes of the pages sealed since the last call (sealed pages never change)."""
        for sp in st.mem.store.get_pages(st.mem.session, len(st.pages), with_png=False):
            st.pages[sp.index] = (sp.content_hash, sp.spans)
            last = sp.spans[-1]
            st.cuts.append(last["turn"] if last["continues"] else last["turn"] + 1)

    def _page_cut(self, st: _Thread, first: int, limit: int) -> tuple[int, int, int] | None:
        """When the text part starts at a unit that begins inside a page and continues past it: cut
        that unit at the next page's start instead (as `_plan_cut`'s triple), so the page is sent
        whole, never drawn without its last unit. Sent whole, the page keeps its bytes when the unit
        later moves onto pages (the request grows by pages appended after it: a provider's prefix
        cache still holds everything up to there), and the unit's text is shorter by what that page
        shows. Not for the unit that must stay text whole (`limit`: the asking user message)."""
        import bisect

        if not 0 < first < limit:
            return None
        p = bisect.bisect_left(st.cuts, first)  # the first page whose cut is this unit
        if p >= len(st.cuts) or st.cuts[p] != first:
            return None
        last = st.pages[p][1][-1]
        if last["turn"] != first or not last["continues"]:
            return None  # the page ends where the unit before ends: it is whole already
        return self._cut_at(st, first, p + 1)

    def _snap(self, st: _Thread, planned: int, limit: int) -> int:
        """Where the text part starts: always at a page's cut (the first unit not wholly on that page
        and the ones before it), never inside a page; where that unit continues past the page,
        `_page_cut` then cuts it at the next page (or, for the asking message, the page is drawn
        without it: a function of the page alone, the same bytes on every call until the text part
        moves past it). The smallest cut at or after the plan's start is taken (more
        on pages than planned costs nothing: that page is sent anyway), but not past `limit` (the
        unit that must stay text); units not wholly on sealed pages are always text."""
        import bisect

        cuts = [0, *st.cuts]  # 0: no page at all
        first = cuts[min(bisect.bisect_left(cuts, planned), len(cuts) - 1)]
        if first > limit:
            first = cuts[bisect.bisect_right(cuts, limit) - 1]
        return first

    def _page_b64(self, st: _Thread, index: int, content_hash: str, tier: str) -> str:
        """The page at `tier` as sent: made once, kept in the store's cache and in memory."""
        key = (content_hash, tier)
        b64 = st.pngs.get(key)
        if b64 is not None:
            st.pngs.move_to_end(key)
            return b64
        b64 = self._draw_page_b64(st, index, content_hash, tier)
        self._keep_png(st, key, b64)
        return b64

    def _draw_page_b64(self, st: _Thread, index: int, content_hash: str, tier: str) -> str:
        """The page's PNG at `tier`, base64: from the store's cache, else drawn and cached there
        (no state of the thread is touched: the background worker calls it without the lock)."""
        from optimem.store import cache_key

        store, session = st.mem.store, st.mem.session
        ck = cache_key(content_hash, _PNG_CACHE_ID, tier)
        png = store.get_cache_blob(session, ck)
        if png is None:
            (sp,) = store.get_pages(session, index, index + 1)
            png = page_png(_open_png(sp.png), tier)
            store.put_cache(session, ck, png)
        return base64.b64encode(png).decode()

    @staticmethod
    def _keep_png(st: _Thread, key: Any, b64: str) -> None:
        st.pngs[key] = b64
        if len(st.pngs) > 512:
            st.pngs.popitem(last=False)

    def _boundary_png(self, st: _Thread, index: int, turn: int, start: int, stop_turn: int, tier: str) -> str:
        """Page `index` drawn again with only the units before `stop_turn` (its master is kept, so
        a change of tier costs a resize, not a render)."""
        from optimem.renderers import Turn, render_transcript

        key = ("boundary", index, turn, start, stop_turn, tier)
        b64 = st.pngs.get(key)
        if b64 is None:
            mkey = (index, turn, start, stop_turn)
            master = st.masters.get(mkey)
            if master is None:
                rows = st.mem.turns(turn, stop_turn)
                master = render_transcript([Turn(t.role, t.content, name=t.metadata.get("name")) for t in rows],
                                           st.mem.render, start=(0, start))[0].image
                st.masters[mkey] = master
                while len(st.masters) > 4:
                    st.masters.popitem(last=False)
            b64 = base64.b64encode(page_png(master, tier)).decode()
            self._keep_png(st, key, b64)
        return b64

    def _text_only(self, head: list[BaseMessage], units: list[Unit], tools: list[Any],
                   prov: Provider) -> tuple[list[BaseMessage], int, int]:
        kept: list[BaseMessage] = []
        used = self._measure(head, tools, prov)["tokens"]
        n_units = 0
        for u in reversed(units):
            cost = self._measure(list(u.messages), [], prov)["tokens"] - prov.request_tokens
            if kept and used + cost > self.budget:
                break
            kept[:0] = list(u.messages)
            n_units += 1
            used += cost
        cut = 0
        for _ in range(4):
            over = self._measure(head + kept, tools, prov)["tokens"] - self.budget
            if over <= 0:
                break
            kept, n = _shorten(kept, over + 16, self._count_text)
            cut += n
            if not n:
                break
        return head + kept, cut, n_units

    # -- counting ---------------------------------------------------------------------------------
    def _count_text(self, msgs: list[BaseMessage]) -> int:
        counter = self.token_counter
        if counter is None:
            return sum(self._message_tokens(m) for m in msgs)
        count = counter.get_num_tokens_from_messages if hasattr(counter, "get_num_tokens_from_messages") else counter
        if self._additive is False or not msgs:
            return int(count(msgs))
        if self._additive is None:
            # a counter that is a constant plus a count per message (as chat models' are: framing per
            # message, reply priming once) is asked per message once, and the counts are reused:
            # each call resends mostly the same messages. Checked on the first request with several
            # messages; a counter that is not additive is asked for the whole list every time.
            full = int(count(msgs))
            if len(msgs) < 2:
                return full
            try:
                base = int(count([]))
                self._additive = full == base + sum(self._counted_message(count, m, base) for m in msgs)
            except Exception:  # noqa: BLE001 - a counter that refuses an empty list: count whole lists
                self._additive = False
            if self._additive:
                self._counter_base = base
            return full
        base = self._counter_base
        return base + sum(self._counted_message(count, m, base) for m in msgs)

    def _counted_message(self, count: Any, m: BaseMessage, base: int) -> int:
        """One message's count by the caller's counter (less the counter's constant), remembered by
        the message's content: the same message costs a lookup on later calls."""
        key = ("counter", type(m).__name__, hashlib.sha1(json.dumps(
            [m.content, m.name, m.additional_kwargs, getattr(m, "tool_calls", None),
             getattr(m, "invalid_tool_calls", None), getattr(m, "tool_call_id", None)],
            sort_keys=True, default=str, ensure_ascii=False).encode()).digest())
        n = self._counts.get(key)
        if n is None:
            n = int(count([m])) - base
            self._counts[key] = n
            if len(self._counts) > 20_000:
                self._counts.popitem(last=False)
        return n

    def _message_tokens(self, m: BaseMessage) -> int:
        key = m.id and (m.id, len(str(m.content)))
        if key and key in self._counts:
            return self._counts[key]
        n = text_tokens(content_text(m))
        for tc in getattr(m, "tool_calls", None) or []:
            n += text_tokens(tc.get("name", "") + json.dumps(tc.get("args", {}), ensure_ascii=False)) + 4
        if isinstance(m, ToolMessage):
            n += 4
        if key:
            self._counts[key] = n
            if len(self._counts) > 20_000:
                self._counts.popitem(last=False)
        return n

    def _measure(self, msgs: list[BaseMessage], tools: list[Any], prov: Provider) -> dict[str, Any]:
        """Tokens of a request by the provider's rules: text (the counter), framing, tools, images."""
        text_msgs = [strip_images(m) for m in msgs]
        text = self._count_text(text_msgs) if text_msgs else 0
        if self.token_counter is None:
            text += prov.message_tokens * len(msgs) + prov.request_tokens
        tool_tokens = self._tool_tokens(tools)
        images = 0
        n_images = 0
        for m in msgs:
            for b in image_blocks(m):
                images += image_tokens(b, prov)
                n_images += 1
        return {"tokens": text + tool_tokens + images, "text_tokens": text, "tool_tokens": tool_tokens,
                "image_tokens": images, "images": n_images, "request_bytes": request_bytes(msgs)}

    def _tool_tokens(self, tools: list[Any]) -> int:
        if not tools:
            return 0
        from langchain_core.utils.function_calling import convert_to_openai_tool

        total = 0
        for t in tools:
            try:
                schema = json.dumps(convert_to_openai_tool(t), sort_keys=True, ensure_ascii=False)
            except Exception:  # noqa: BLE001 - a provider-native tool dict: count it as written
                schema = json.dumps(t, sort_keys=True, default=str, ensure_ascii=False)
            key = ("tool", schema)
            n = self._counts.get(key)
            if n is None:
                n = self._counted_tool(t, schema)
                self._counts[key] = n
            total += n
        return total

    def _counted_tool(self, tool: Any, schema: str) -> int:
        """One tool's tokens: its JSON schema counted by the chat model's tokenizer (or the counter
        function, as a message)."""
        counter = self.token_counter
        if counter is None:
            return text_tokens(schema)
        if hasattr(counter, "get_num_tokens"):  # a chat model: its own tokenizer (langchain-openai's
            return int(counter.get_num_tokens(schema))  # message counter ignores tools, with a warning)
        return self._count_text([SystemMessage(schema)])


# -- helpers -----------------------------------------------------------------------------------------
def _policy(policy_cls: Any, recent_turns: int) -> Any:
    """No exact-content turns kept as text (a unit is text only while recent, so the text part stays
    one suffix), and a fixed decay where the planner offers one: a page changes tier only when it
    ages or the budget forces it, so the request's leading bytes stay the same between calls and
    provider prompt caches hit."""
    kw: dict[str, Any] = {"recent_turns": recent_turns, "exact_share": 0.0}
    names = {f.name for f in dataclasses.fields(policy_cls)}
    if "fill_budget" in names:
        kw["fill_budget"] = False
    if "text_suffix" in names:  # the text part is one suffix: a long unit cut by the plan is its oldest
        kw["text_suffix"] = True
    return policy_cls(**kw)


ASK_WINDOW = 8  # units: a user message further back than this no longer asks for the running tool loop


def _asking_unit(committed: list[Unit]) -> int | None:
    """Index of the user message that started the current agent turn, if within the last ASK_WINDOW units."""
    ask = next((i for i in range(len(committed) - 1, -1, -1) if committed[i].role == "user"), None)
    return ask if ask is not None and ask >= len(committed) - ASK_WINDOW else None


def coerce_messages(input: Any) -> list[BaseMessage]:
    """What `trim_messages` accepts: a PromptValue, a string, or message-likes (messages, (role,
    text) tuples, dicts, strings)."""
    if isinstance(input, PromptValue):
        return input.to_messages()
    if isinstance(input, str):
        return [HumanMessage(input)]
    if isinstance(input, BaseMessage):
        return [input]
    if not isinstance(input, Sequence):
        raise InputError(f"OpticalCompressor takes messages, a PromptValue or a string, not {type(input).__name__}")
    try:
        return convert_to_messages(input)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise InputError(f"OpticalCompressor could not read the messages: {exc}") from exc


def _no_options(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise InputError(f"OpticalCompressor.invoke takes no options {sorted(kwargs)}; set them on the compressor")


def _emit(report: dict[str, Any], config: RunnableConfig | None) -> None:
    try:
        dispatch_custom_event("optimem_compression", report, config=config)
    except RuntimeError:  # no run to attach it to (called outside any traced run)
        pass


def _with_report(out: list[BaseMessage], report: dict[str, Any]) -> list[BaseMessage]:
    if out:
        out = list(out)
        out[0] = out[0].model_copy(update={"response_metadata": {**out[0].response_metadata, "optimem": report}})
    return out


def _image_block(prov: Provider, b64: str, tier: str) -> dict[str, Any]:
    if prov.image_format == "openai":
        return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}",
                                                   "detail": prov.tier_detail(tier) or "auto"}}
    block = {"type": "image", "base64": b64, "mime_type": "image/png"}
    level = prov.tier_detail(tier)
    if level is not None:  # Gemini 3: the part's media_resolution (langchain-google-genai passes it on)
        block["media_resolution"] = "MEDIA_RESOLUTION_" + level.upper()
    return block


def _open_png(data: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data))


def image_tokens(block: dict[str, Any], prov: Provider) -> int:
    """An image block's price: our pages by their tier; others by their real size (a URL we cannot
    read is priced as the largest page)."""
    if _PENDING in block:
        return prov.page_tokens(block[_PENDING][-1])
    detail = None
    data = None
    if block.get("type") == "image_url":
        iu = block.get("image_url")
        url = iu.get("url", "") if isinstance(iu, dict) else str(iu or "")
        detail = iu.get("detail") if isinstance(iu, dict) else None
        if url.startswith("data:") and "," in url:
            data = url.split(",", 1)[1]
    else:
        data = block.get("base64") or block.get("data")
        if block.get("source_type") not in (None, "base64") and not block.get("base64"):
            data = None
        detail = (block.get("extras") or {}).get("detail") if isinstance(block.get("extras"), dict) else None
        res = block.get("media_resolution")
        if isinstance(res, str) and res.upper().startswith("MEDIA_RESOLUTION_"):
            detail = res[len("MEDIA_RESOLUTION_"):].lower()
    if prov.detail is not None and detail == "low":
        return prov.image_tokens(512, 512, "low")
    size = _data_size(data) if data else None
    if size is None:
        return prov.page_tokens("large")
    return prov.image_tokens(size[0], size[1], detail or ("high" if prov.detail is not None else None))


_SIZES: OrderedDict = OrderedDict()


def _data_size(data: str) -> tuple[int, int] | None:
    """Width and height of base64 image data, from its header (PNG's is in the first bytes)."""
    key = (len(data), data[:128], data[-32:])
    if key in _SIZES:
        return _SIZES[key]
    size = None
    for n in (96, 1 << 16, len(data)):
        chunk = data[:n]
        try:
            size = image_size(base64.b64decode(chunk[: len(chunk) // 4 * 4]))
        except (ValueError, TypeError):
            size = None
        if size is not None or n >= len(data):
            break
    _SIZES[key] = size
    if len(_SIZES) > 4096:
        _SIZES.popitem(last=False)
    return size


def request_bytes(msgs: list[BaseMessage]) -> int:
    """Bytes of the messages' content as sent (strings and base64 data, plus a little framing per
    block): close enough for size limits, and cheap where a JSON dump of megabytes of images is not."""
    total = 0
    for m in msgs:
        c = m.content
        if isinstance(c, str):
            total += len(c) + 16
        else:
            for b in c:
                total += _block_bytes(b) + 16
        for tc in getattr(m, "tool_calls", None) or []:
            total += len(json.dumps(tc.get("args", {}), default=str)) + len(tc.get("name", "")) + 48
    return total


def _block_bytes(b: Any) -> int:
    if isinstance(b, str):
        return len(b)
    if isinstance(b, dict):
        return sum(_block_bytes(v) + len(k) + 6 for k, v in b.items())
    if isinstance(b, (list, tuple)):
        return sum(_block_bytes(v) for v in b)
    return 8


def _shorten(msgs: list[BaseMessage], tokens: int, count) -> tuple[list[BaseMessage], int]:
    """Cut about `tokens` tokens out of the longest text messages (the middle goes, with a marker)."""
    order = sorted(range(len(msgs)), key=lambda i: -len(content_text(msgs[i])))
    out = list(msgs)
    n = 0
    for i in order:
        if tokens <= 0:
            break
        m = out[i]
        text = content_text(m)
        have = count([HumanMessage(text)])
        if have < 64:
            continue
        drop = min(have - 32, tokens)
        keep_chars = int(len(text) * (have - drop) / have)
        if keep_chars >= len(text):
            continue
        half = max(keep_chars // 2, 1)
        cut = len(text) - 2 * half
        new = f"{text[:half]}\n[... {cut} characters cut to fit the context budget ...]\n{text[-half:]}"
        out[i] = m.model_copy(update={"content": new})
        tokens -= drop
        n += 1
    return out, n
