"""Planning: which turns stay text, which pages are shown at which tier, which are dropped.

Two kinds of forgetting are kept apart, because they mean different things:

- **Age** (the schedule, and earlier floors) is forgetting proper: persistent and monotone. A plan's
  `floors()` are the tiers age alone gives each page; a memory stores them, and no later plan (in
  this process or another) starts a page sharper than its floor. Only age, or an explicit floor of
  "dropped" (a `forget`), drops a page for good.
- **Budget** is a squeeze on one call: coarsening and dropping to fit `budget` leave no trace
  (`tiers()` is this call's view and is never persisted), so a later call with more budget shows
  the pages again as sharp as their age allows.

What a plan does, in order (each step documented because a user must be able to say why a turn is
blurred):

1. **Budget.** `available = budget - policy.reserve_tokens - overhead.fixed` (room for the reply and
   the system prompt is the caller's to reserve; `Overhead` is the backend's prompt template: BOS,
   the generation prompt, a separator per page, role markers per text turn). Every shown page costs
   its tier's tokens plus `overhead.per_page`, every text turn its tokens plus `overhead.per_turn`,
   and `total_tokens` (which includes `overhead.fixed`) never exceeds `budget - reserve_tokens`.
2. **Text.** The newest turn is text; then the most recent `recent_turns` turns (also bounded
   by `recent_tokens` when set, and by `recent_share` of the budget so that pages keep room). Turns
   that are not on any sealed page yet (the memory's open page) must be text. If the recent turns do
   not fit, the oldest of them become pages instead: the recent turns that fit win.
   A long turn (a pasted log, a file) that does not fit whole is *cut*: the caller names where it may
   be cut (`TailInfo`: from a page on which it continues, or after its last sealed page), its earlier
   pages are shown like any other page (step 3 on) and only its tail is text, the largest tail that
   fits (for the newest turn, within `recent_share` when one does). A sealed newest turn with no tail
   that fits is shown on its pages alone. So what users or tools write never makes a plan refuse;
   `PolicyError` is raised only when the text not yet on any sealed page (at most about one page)
   does not fit, or the pinned turns (always whole) do not fit in what is left: never a silent
   overflow. Pinned turns are text, never cut. Turns flagged *exact* (see `detect_exact`) are text
   while they fit in `exact_share` of the budget, newest first.
3. **Age floors.** A page is shown when at least one of its turns is not text. Its age floor is the
   tier the schedule gives the age of its last turn (in turns, tokens or seconds), or the floor it
   already carries, whichever is coarser; older pages are never sharper than newer ones.
4. **Fitting.** While pages cost more than what is left, coarsen: each step moves the oldest pages of
   one tier down one tier (the last step drops them). Steps are taken in order of least value lost per
   token saved, where a page's value at a tier is `text_tokens x fidelity(tier)` from the ladder (the
   legibility benchmark's measurements, or the paper's).
5. **Filling.** Budget left over goes back, by the same rule run in reverse (most value gained per
   token spent first, newest pages first, older never sharper than newer): pages dropped or coarsened
   in step 4 come back, and with `Policy.fill_budget` (the default) pages are shown sharper than their
   age floor while the budget holds them, and once every shown page is at the sharpest tier, older
   turns become text too (newest first, while the pages left stay sharpest); a page dropped by age or
   `forget` stays dropped.
   `fill_budget=False` is the paper's fixed decay: a page is never sharper than its age floor.

Segments never overlap: every turn is *held* by exactly one segment (see `Plan.where`). A turn shown
as text is held by its text segment, even when a shown page also draws it (a page that straddles the
text boundary is shown whole). Otherwise it is held by the oldest shown segment whose pages draw part
of it, and only a turn no shown page draws is held by a dropped segment. A page run that draws a text
turn in its middle (a pin, exact content) is split there into two segments; each page belongs to the
segment holding the first turn it draws that the run holds, so a segment may hold turns whose ink lies
on its older neighbour's last page (its `pages` then start after that page, and can be empty).

Plans are cheap: everything is prefix sums and bisections over the pages, plus one pass to emit
segments; `Planner` keeps its arrays between turns for incremental planning.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter
from typing import Any, Literal

from .ladder import Ladder, PolicyError


_INDEX, _TOKENS, _TIMESTAMP = attrgetter("index"), attrgetter("tokens"), attrgetter("timestamp")
_FIRST, _LAST, _TEXT_TOKENS, _FLOOR = attrgetter("first_turn"), attrgetter("last_turn"), attrgetter("text_tokens"), attrgetter("floor")


@dataclass(frozen=True)
class TurnInfo:
    index: int
    tokens: int
    pinned: bool = False
    exact: bool = False
    timestamp: float | None = None  # seconds; non-decreasing over turns when the schedule uses seconds


@dataclass(frozen=True)
class PageInfo:
    index: int
    first_turn: int
    last_turn: int
    text_tokens: int
    floor: str | None = None  # the coarsest tier age gave this page before ("dropped" included)
    partial_last: bool = False  # its last turn continues on a later (maybe not yet sealed) page

    @property
    def turns(self) -> range:
        return range(self.first_turn, self.last_turn + 1)


@dataclass(frozen=True)
class TailInfo:
    """Where a long turn may be cut: from page `page` on, the turn is sent as raw text (`tokens` tokens,
    its text from where that page starts drawing it to its end) and the pages before `page` that draw
    it are shown as images. `page` is a page on which the turn continues (its first turn, begun on the
    page before), or the number of sealed pages when the turn's tail is not on a sealed page yet."""

    turn: int
    page: int
    tokens: int


@dataclass(frozen=True)
class Overhead:
    """What the backend's prompt template adds around the plan's items, in the model's tokens.

    `fixed`: once per prompt (BOS, the generation prompt); `per_page`: per shown page (a separator, or a
    page label for an API model); `per_turn`: per text turn (role markers, separators; an upper bound
    over roles). The backend supplies the numbers; a policy never names a model.
    """

    fixed: int = 0
    per_page: int = 0
    per_turn: int = 0

    def __post_init__(self) -> None:
        if min(self.fixed, self.per_page, self.per_turn) < 0:
            raise PolicyError(f"template overhead must be >= 0, got {self}")


NO_OVERHEAD = Overhead()


@dataclass(frozen=True)
class Schedule:
    """Age decay: a page of age <= limits[i] gets at most ladder tier i; older ones the next tier.

    With as many limits as the ladder has tiers, pages older than the last limit are dropped by age.
    """

    unit: Literal["turns", "tokens", "seconds"] = "turns"
    limits: tuple[float, ...] = (12, 40, 100)

    def __post_init__(self) -> None:
        if self.unit not in ("turns", "tokens", "seconds"):
            raise PolicyError(f"schedule unit must be turns, tokens or seconds, not {self.unit!r}")
        if list(self.limits) != sorted(self.limits) or any(x < 0 for x in self.limits):
            raise PolicyError("schedule limits must be non-negative and increasing")


@dataclass(frozen=True)
class Policy:
    recent_turns: int = 6
    recent_tokens: int | None = None
    schedule: Schedule = field(default_factory=Schedule)
    reserve_tokens: int = 0
    exact_share: float = 0.25
    recent_share: float = 0.5  # recent turns beyond the newest take at most this share of the budget
    fill_budget: bool = True  # spare budget shows pages sharper than their age floor (False: fixed decay)
    # the text turns are one suffix of the conversation, so a cut turn is the oldest of them (for a
    # caller that cannot put text between pages, like the LangChain compressor)
    text_suffix: bool = False

    def __post_init__(self) -> None:
        if self.recent_turns < 1:
            raise PolicyError("recent_turns must be at least 1 (the newest turn is always text)")
        if not 0.0 <= self.exact_share <= 1.0:
            raise PolicyError("exact_share must be within 0..1")
        if not 0.0 <= self.recent_share <= 1.0:
            raise PolicyError("recent_share must be within 0..1")
        if self.reserve_tokens < 0:
            raise PolicyError("reserve_tokens must be >= 0")


@dataclass(frozen=True)
class Segment:
    kind: Literal["text", "page", "dropped"]
    tier: str | None  # None for text
    tokens: int  # what the segment costs, the template's per-item overhead included
    turns: range  # the turns this segment holds (never overlapping another segment's)
    pages: range = range(0)
    reason: str = ""
    # a text segment holding a cut turn: its text from this page on (the pages before are shown or dropped)
    tail_from: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "tier": self.tier, "tokens": self.tokens, "turns": list(self.turns)}
        if self.pages:
            out["pages"] = [self.pages.start, self.pages.stop - 1]
        if self.tail_from is not None:
            out["tail_from"] = self.tail_from
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Location:
    """Where one turn is in a plan: `kind` and `tier` of the segment holding it (tier None for text),
    `segment` its index in `Plan.segments`, and `pages`: every page drawing part of the turn that the
    plan shows or drops, as (page, tier or "dropped"), oldest first."""

    turn: int
    kind: Literal["text", "page", "dropped"]
    tier: str | None
    segment: int
    pages: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Plan:
    segments: tuple[Segment, ...]
    budget: int
    available: int
    total_tokens: int  # segments' tokens plus `overhead_tokens`
    text_tokens_represented: int  # tokens of every turn held by a text or page segment, once each
    page_text_tokens: int  # text tokens of the pages shown as images (their headers included)
    page_tokens: int  # what those pages cost (per-page template overhead included)
    tier_runs: tuple[tuple[int, int, str], ...] = ()  # this call: (first page, stop page, tier or "dropped")
    age_runs: tuple[tuple[int, int, str], ...] = ()  # age floors coarser than the sharpest tier, same form
    overhead_tokens: int = 0  # the template's fixed part (BOS, generation prompt)
    tails: tuple[tuple[int, int], ...] = ()  # cut turns: (turn, first page of its text tail)
    # the planner's page geometry, shared (append-only there), for `where`
    _firsts: Sequence[int] = field(default=(), repr=False, compare=False)
    _lasts: Sequence[int] = field(default=(), repr=False, compare=False)
    _turns: int = field(default=0, repr=False, compare=False)

    @property
    def page_tiers(self) -> tuple[tuple[int, str], ...]:
        """(page index, tier or "dropped") for every page this call shows or drops, oldest first."""
        return tuple((p, t) for a, b, t in sorted(self.tier_runs) for p in range(a, b))

    @property
    def dropped(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.kind == "dropped")

    @property
    def compression(self) -> float:
        """Text tokens the shown pages hold per token they cost (0 when no page is shown)."""
        return self.page_text_tokens / self.page_tokens if self.page_tokens else 0.0

    def tiers(self) -> dict[int, str]:
        """This call's tier per shown or dropped page. Per call only: never persist these."""
        return {p: t for a, b, t in self.tier_runs for p in range(a, b)}

    def floors(self) -> dict[int, str]:
        """What a memory persists so later plans never start these pages sharper: the age floors
        (coarser than the sharpest tier) of every page, budget squeezes left out."""
        return {p: t for a, b, t in self.age_runs for p in range(a, b)}

    def where(self, turn: int) -> Location:
        """Which segment holds `turn`, at which tier, and every shown or dropped page drawing it."""
        if not 0 <= turn < self._turns:
            raise PolicyError(f"turn {turn} is not in this plan's transcript of {self._turns} turns")
        seg = _find_segment(self.segments, turn)
        if seg is None:  # pragma: no cover - every turn is held by construction
            raise PolicyError(f"turn {turn} is held by no segment")
        s = self.segments[seg]
        pages: list[tuple[int, str]] = []
        lo, hi = bisect.bisect_left(self._lasts, turn), bisect.bisect_right(self._firsts, turn)
        if lo < hi:
            runs = sorted(self.tier_runs)
            starts = [r[0] for r in runs]
            for p in range(lo, hi):
                i = bisect.bisect_right(starts, p) - 1
                if i >= 0 and runs[i][0] <= p < runs[i][1]:
                    pages.append((p, runs[i][2]))
        return Location(turn, s.kind, s.tier if s.kind == "page" else ("dropped" if s.kind == "dropped" else None),
                        seg, tuple(pages))

    def explain(self) -> str:
        lines = []
        cut = dict(self.tails)
        for s in self.segments:
            if not s.turns:
                t = s.turns.start
                span = f"turn {t}, its earlier part" if t in cut else f"continues turn {t - 1}"
            elif len(s.turns) == 1:
                span = f"turn {s.turns.start}"
            else:
                span = f"turns {s.turns.start}-{s.turns.stop - 1}"
            if s.kind == "text" and s.tail_from is not None:
                lines.append(f"{span} from page {s.tail_from} on: raw text, {s.tokens} tokens ({s.reason})")
            elif s.kind == "text":
                lines.append(f"{span}: raw text, {s.tokens} tokens ({s.reason})")
            else:
                n = len(s.pages)
                pages = ("ink on the previous page" if n == 0 else
                         f"page {s.pages.start}" if n == 1 else f"pages {s.pages.start}-{s.pages.stop - 1}")
                what = "dropped" if s.kind == "dropped" else f"{s.tier} ({s.tokens} tokens)"
                lines.append(f"{span} ({pages}): {what}, {s.reason}")
        # below 1x the images cost more than the text they hold: say so with two significant digits
        # rather than rounding to "0.0x"
        ratio = ("no page shown" if not self.page_tokens else f"{self.compression:.1f}x" if self.compression >= 1
                 else f"{self.compression:.2g}x, the images cost more than their text")
        lines.append(
            f"total {self.total_tokens}/{self.available + self.overhead_tokens} tokens "
            f"(template {self.overhead_tokens}); {self.text_tokens_represented} text tokens "
            f"represented; pages {self.page_text_tokens}->{self.page_tokens} ({ratio})"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "segments": [s.to_json() for s in self.segments],
            "total_tokens": self.total_tokens,
            "text_tokens_represented": self.text_tokens_represented,
            "budget": self.budget,
            "available": self.available,
            "overhead_tokens": self.overhead_tokens,
            "page_text_tokens": self.page_text_tokens,
            "page_tokens": self.page_tokens,
            "compression": round(self.compression, 3),
            **({"tails": [list(t) for t in self.tails]} if self.tails else {}),
        }


def _find_segment(segments: Sequence[Segment], turn: int) -> int | None:
    # segments are sorted by first held turn; empty ones hold nothing
    lo, hi = 0, len(segments)
    while lo < hi:
        mid = (lo + hi) // 2
        if segments[mid].turns.start <= turn:
            lo = mid + 1
        else:
            hi = mid
    for i in range(lo - 1, -1, -1):
        if segments[i].turns:
            return i if turn in segments[i].turns else None
    return None


class Planner:
    """Holds the per-turn and per-page arrays so that planning after one new turn is cheap.

    `plan(...)` (the function) builds one for a single call; a memory keeps one and calls `extend`.
    """

    def __init__(self, ladder: Ladder, policy: Policy | None = None, overhead: Overhead | None = None) -> None:
        self.ladder = ladder
        self.policy = policy or Policy()
        self.overhead = overhead or NO_OVERHEAD
        limits = self.policy.schedule.limits
        # a schedule written for a longer ladder keeps its first limits; the coarsest tier takes the rest
        self._limits = limits if len(limits) <= len(ladder.tiers) else limits[: len(ladder.tiers) - 1]
        self.turns: list[TurnInfo] = []
        self.pages: list[PageInfo] = []
        self._pre = [0]  # token prefix sums over turns
        self._ts: list[float] = []
        self._lasts: list[int] = []
        self._firsts: list[int] = []
        self._floor_idx: list[int] = []  # per page, -1 for none
        self._ptext_pre = [0]  # page text-token prefix sums
        self._spare_text: frozenset[int] = frozenset()  # text this call only because the budget held it
        self._tails: dict[int, tuple[TailInfo, ...]] = {}  # where long turns may be cut, per turn
        # where cut points cost work to find (a memory counts each tail's tokens), the caller may hand
        # them over lazily: asked only for a turn that does not fit whole, its answer kept until
        # `drop_tails` names the turn again
        self.tail_source: Callable[[int], Sequence[TailInfo]] | None = None
        self._cut: dict[int, TailInfo] = {}  # this call's cut turns

    def extend(self, turns: Sequence[TurnInfo] = (), pages: Sequence[PageInfo] = (),
               tails: Sequence[TailInfo] = ()) -> None:
        """Append turns and pages; `tails` replace the cut points of the turns they name (a turn's
        cut points move as its pages are sealed; a tail that no longer matches the pages is ignored)."""
        if turns:
            base = len(self.turns)
            if list(map(_INDEX, turns)) != list(range(base, base + len(turns))):
                raise PolicyError(f"turn indices must be consecutive from {base}")
            toks = list(map(_TOKENS, turns))
            if min(toks) < 0:
                raise PolicyError("a turn has negative tokens")
            self.turns.extend(turns)
            self._pre.extend(accumulate(toks, initial=self._pre[-1]))
            del self._pre[-len(toks) - 1]  # accumulate repeats the initial value
            stamps = list(map(_TIMESTAMP, turns))
            self._ts.extend(math.nan if x is None else x for x in stamps) if None in stamps else self._ts.extend(stamps)
        if pages:
            base = len(self.pages)
            lasts = list(map(_LAST, pages))
            firsts = list(map(_FIRST, pages))
            prev_last = self._lasts[-1] if self._lasts else -1
            if (
                list(map(_INDEX, pages)) != list(range(base, base + len(pages)))
                or lasts[0] < prev_last
                or lasts != sorted(lasts)
                or any(map(int.__gt__, firsts, lasts))
            ):
                raise PolicyError("pages must be numbered in order and cover non-decreasing turns")
            self.pages.extend(pages)
            self._lasts.extend(lasts)
            self._firsts.extend(firsts)
            self._ptext_pre.extend(accumulate(map(_TEXT_TOKENS, pages), initial=self._ptext_pre[-1]))
            del self._ptext_pre[-len(pages) - 1]
            floors = list(map(_FLOOR, pages))
            if floors.count(None) == len(floors):
                self._floor_idx.extend([-1] * len(floors))
            else:
                self._floor_idx.extend(-1 if f is None else self.ladder.index(f) for f in floors)
        if tails:
            by_turn: dict[int, list[TailInfo]] = {}
            for c in tails:
                by_turn.setdefault(c.turn, []).append(c)
            for t, cs in by_turn.items():
                self._tails[t] = self._sorted_tails(t, cs)

    @staticmethod
    def _sorted_tails(t: int, cs: Iterable[TailInfo]) -> tuple[TailInfo, ...]:
        out = []
        for c in cs:
            if c.tokens < 0 or c.page < 0 or c.turn != t:
                raise PolicyError(f"a tail of turn {t} needs that turn, a page and tokens >= 0, got {c}")
            out.append(c)
        return tuple(sorted(out, key=lambda c: (-c.page, c.tokens)))  # smallest tail (latest page) first

    def drop_tails(self, turns: Iterable[int]) -> None:
        """Forget the cut points of these turns (their pages changed): `tail_source` is asked again."""
        for t in turns:
            self._tails.pop(t, None)

    def set_floors(self, floors: dict[int, str]) -> None:
        """Raise pages' floors (never lowers one; `Plan.floors()` is what to pass)."""
        for i, tier in floors.items():
            self._floor_idx[i] = max(self._floor_idx[i], self.ladder.index(tier))

    # -- planning ------------------------------------------------------------------------------
    def plan(self, budget: int, *, now: float | None = None) -> Plan:
        pol = self.policy
        if not isinstance(budget, int) or budget < 0:
            raise PolicyError(f"budget must be a non-negative integer, got {budget!r}")
        fixed = self.overhead.fixed
        n = len(self.turns)
        if n == 0:
            return Plan((), budget, max(budget - pol.reserve_tokens, 0), 0, 0, 0, 0)
        available = budget - pol.reserve_tokens - fixed
        if available <= 0:
            raise PolicyError(f"budget {budget} leaves no room after reserving {pol.reserve_tokens} tokens "
                              f"and the prompt template's {fixed}")
        if self.pages and self._lasts[-1] >= n:
            raise PolicyError("a page covers a turn that is not in the transcript")
        text = self._choose_text(available)
        cut = self._cut
        text_cost = (sum(self.turns[i].tokens for i in text if i not in cut) + sum(c.tokens for c in cut.values())
                     + self.overhead.per_turn * len(text))
        room = available - text_cost
        bounds, age, needed_pre = self._tiers(text, room, now)
        self._spare_text = frozenset()
        if pol.fill_budget and self.pages and bounds[1] == 0 and not (pol.text_suffix and cut):
            # every page is at the sharpest tier and the budget holds more: older turns as text too
            text, text_cost, bounds, age, needed_pre = self._more_text(text, text_cost, available, now,
                                                                       (bounds, age, needed_pre))
        return self._emit(budget, available, text, text_cost, bounds, age, needed_pre)

    def _more_text(self, text: set[int], text_cost: int, available: int, now: float | None, planned: tuple):
        """The most older turns (newest first) that can also be text while every page shown stays at
        the sharpest tier: a bisection over how many, one tier pass each."""
        per_turn, turns = self.overhead.per_turn, self.turns
        cands = [i for i in range(len(turns) - 1, -1, -1) if i not in text]
        costs = list(accumulate((turns[i].tokens + per_turn for i in cands), initial=0))

        def attempt(k: int):
            if text_cost + costs[k] > available:
                return None
            more = text | set(cands[:k])
            b, age, needed_pre = self._tiers(more, available - text_cost - costs[k], now)
            return (more, text_cost + costs[k], b, age, needed_pre) if b[1] == 0 else None

        best = (text, text_cost, *planned)
        lo, hi = 0, bisect.bisect_right(costs, available - text_cost) - 1  # k = lo fits; hi: the most that could
        while lo < hi:
            mid = (lo + hi + 1) // 2
            got = attempt(mid)
            if got is None:
                hi = mid - 1
            else:
                lo, best = mid, got
        self._spare_text = frozenset(cands[:lo])
        return best

    def _cuts(self, t: int) -> tuple[TailInfo, ...]:
        """The cut points of turn `t` that match the pages now, smallest tail first (none for a pin)."""
        if self.turns[t].pinned:
            return ()
        cs = self._tails.get(t)
        if cs is None and self.tail_source is not None:
            cs = self._tails[t] = self._sorted_tails(t, self.tail_source(t))
        if not cs:
            return ()
        pages, n_pages = self.pages, len(self.pages)
        ok = []
        for c in cs:
            if c.page == n_pages:  # after the last sealed page: the turn must continue beyond it
                valid = n_pages > 0 and pages[-1].partial_last and self._lasts[-1] == t
            else:  # a page continuing the turn begun on the page before
                valid = (0 < c.page < n_pages and self._firsts[c.page] == t and self._lasts[c.page - 1] == t
                         and pages[c.page - 1].partial_last)
            if valid:
                ok.append(c)
        return tuple(ok)

    def _best_cut(self, t: int, room: float) -> TailInfo | None:
        """The largest tail of turn `t` whose text (template included) fits `room`."""
        best = None
        for c in self._cuts(t):
            if c.tokens + self.overhead.per_turn <= room:
                best = c
        return best

    def _choose_text(self, available: int) -> set[int]:
        pol, turns = self.policy, self.turns
        per_turn = self.overhead.per_turn
        n = len(turns)
        cut: dict[int, TailInfo] = {}
        self._cut = cut

        def whole(i: int) -> int:
            return turns[i].tokens + per_turn

        # turns not (wholly) on a sealed page must stay text or they would be lost; of a turn that
        # continues past the last sealed page, only the part after it (its sealed pages can be shown)
        open_turn = None
        if self.pages:
            last = self.pages[-1]
            first_uncovered = last.last_turn if last.partial_last else last.last_turn + 1
            open_turn = last.last_turn if last.partial_last else None
        else:
            first_uncovered = 0
        forced = set(range(first_uncovered, n))
        forced_tokens = sum(whole(i) for i in forced)
        if forced_tokens > available and open_turn is not None:
            # its largest tail within the recent share when one fits there (its pages keep room), else any
            rest = forced_tokens - whole(open_turn)
            c = self._best_cut(open_turn, pol.recent_share * available - rest) or self._best_cut(open_turn, available - rest)
            if c is not None:
                cut[open_turn] = c
                forced_tokens = rest + c.tokens + per_turn
        if forced_tokens > available:
            if n - 1 in forced and n - 1 not in cut and whole(n - 1) > available:
                raise PolicyError(
                    f"the newest turn alone needs {whole(n - 1)} tokens (template included) but the budget leaves "
                    f"{available}, and it is not on a sealed page yet; raise the budget or shorten the message"
                )
            pins = " (a pinned turn is never cut: unpin it)" if any(turns[i].pinned for i in forced) else ""
            raise PolicyError(
                f"turns {first_uncovered}-{n - 1} are not on a sealed page yet and need {forced_tokens} tokens, "
                f"more than the {available} available{pins}; seal pages (render) or raise the budget"
            )
        newest = turns[-1]
        if newest.pinned and n - 1 not in forced and whole(n - 1) > available:
            raise PolicyError(
                f"the newest turn is pinned and needs {whole(n - 1)} tokens (template included) but the budget "
                f"leaves {available}; a pinned turn is never cut: unpin it or raise the budget"
            )
        text = set(forced)
        used = forced_tokens
        recent_room = max(forced_tokens, pol.recent_share * available)
        count = 0
        for i in range(n - 1, -1, -1):
            if count >= pol.recent_turns:
                break
            if i in forced:
                count += 1
                if pol.text_suffix and i in cut:
                    break
                continue
            limit: float = available if count == 0 else recent_room
            if pol.recent_tokens is not None and count > 0:
                limit = min(limit, max(pol.recent_tokens, used))
            tok = whole(i)
            if used + tok <= limit:
                text.add(i)
                used += tok
                count += 1
                continue
            # it does not fit whole: a long turn's tail may (the newest one's within the recent share
            # when it can, so that its own pages keep room), its earlier part goes on pages
            c = self._best_cut(i, min(limit, recent_room) - used) if count == 0 else None
            c = c or self._best_cut(i, limit - used)
            if c is None:
                break  # the recent turns that fit win; older ones become pages
            text.add(i)
            cut[i] = c
            used += c.tokens + per_turn
            count += 1
            if pol.text_suffix:
                break
        pinned = [t for t in turns if t.pinned and t.index not in text]
        pinned_tokens = sum(t.tokens for t in pinned) + per_turn * len(pinned)
        if used + pinned_tokens > available:
            raise PolicyError(
                f"pinned turns need {pinned_tokens} tokens but only {available - used} are left after the "
                "recent turns; unpin some or raise the budget"
            )
        text.update(t.index for t in pinned)
        used += pinned_tokens
        exact_room = pol.exact_share * available
        exact_used = 0
        for t in reversed(turns):
            if not t.exact or t.index in text:
                continue
            tok = t.tokens + per_turn
            if exact_used + tok <= exact_room and used + tok <= available:
                text.add(t.index)
                exact_used += tok
                used += tok
        return text

    def _tiers(self, text: set[int], room: int, now: float | None) -> tuple[list[int], list[int], list[int]]:
        """Boundaries b[k] = number of oldest pages at tier k or coarser (b[0] = all pages), for this
        call and for age alone."""
        lad, pol = self.ladder, self.policy
        L = len(lad.tiers)
        pages, lasts = self.pages, self._lasts
        n_pages = len(pages)
        # needed pages: not every turn on them is text. Text turns are few (recent, pinned, exact):
        # walk their runs and unmark the pages that lie wholly inside one.
        needed = [1] * n_pages
        cut = self._cut
        for a, b_ in _runs(sorted(text - cut.keys() if cut else text)):
            lo = bisect.bisect_left(self._firsts, a)
            hi = bisect.bisect_right(lasts, b_)
            for idx in range(lo, hi):
                needed[idx] = 0
        # a cut turn's pages from its cut on hold its tail (sent as text), and are not needed unless
        # they also draw a newer turn that is not wholly text (the head of another cut turn)
        for t, c in cut.items():
            for idx in range(c.page, bisect.bisect_right(self._firsts, t)):
                if all(j in text and j not in cut for j in range(t + 1, lasts[idx] + 1)):
                    needed[idx] = 0
        needed_pre = list(accumulate(needed, initial=0))
        b = [n_pages] + [0] * L + [0]
        # schedule: pages older than limit i sit at tier i+1 or coarser
        sched = pol.schedule
        n = len(self.turns)
        for i, lim in enumerate(self._limits):
            if sched.unit == "turns":
                cut = bisect.bisect_left(lasts, (n - 1) - lim)
            elif sched.unit == "tokens":
                q = bisect.bisect_left(self._pre, self._pre[-1] - lim)
                cut = bisect.bisect_left(lasts, q - 1)
            else:
                if now is None:
                    raise PolicyError("a schedule in seconds needs `now`")
                ts = self._ts
                if any(math.isnan(x) for x in ts):
                    raise PolicyError("a schedule in seconds needs a timestamp on every turn")
                q = bisect.bisect_left(ts, now - lim)
                cut = bisect.bisect_left(lasts, q)
            b[i + 1] = max(b[i + 1], cut)
        # floors: a page that reached tier k keeps every older page at k or coarser too
        newest_with = [-1] * (L + 1)
        for idx in range(n_pages - 1, -1, -1):
            f = self._floor_idx[idx]
            if f > 0 and newest_with[f] < idx:
                newest_with[f] = idx
        for k in range(1, L + 1):
            b[k] = max(b[k], newest_with[k] + 1)
        for k in range(L - 1, 0, -1):
            b[k] = max(b[k], b[k + 1])
        age = list(b)
        # fit the budget: coarsen in order of least value lost per token saved
        per_page = self.overhead.per_page
        costs = [t.tokens + per_page for t in lad.tiers] + [0]
        fids = list(lad.fidelities()) + [0.0]
        steps = sorted(range(L), key=lambda k: ((fids[k] - fids[k + 1]) / max(costs[k] - costs[k + 1], 1e-9), k))

        def cost() -> int:
            return sum(costs[k] * (needed_pre[b[k]] - needed_pre[b[k + 1]]) for k in range(L))

        total = cost()
        while total > room:
            before = list(b)
            for k in steps:
                if total <= room:
                    break
                saving = costs[k] - costs[k + 1]
                if saving <= 0:
                    continue
                m = math.ceil((total - room) / saving)
                new = min(bisect.bisect_left(needed_pre, needed_pre[b[k + 1]] + m), b[k])
                total -= saving * (needed_pre[new] - needed_pre[b[k + 1]])
                b[k + 1] = new  # stays within b[k] and above b[k+2]: boundaries remain nested
            if b == before:  # no step could move (odd ladder): drop everything left, oldest first
                for k in range(1, L + 1):
                    b[k] = n_pages
                total = 0
        # fill what is left: the same steps in reverse, most value gained per token spent first, the
        # newest pages of a tier first. Strict decay stops at the age floors; filling stops only at
        # pages age (or a forget) dropped for good.
        if pol.fill_budget:
            hard = [0] + [age[L]] * L + [0]
        else:
            hard = age + [0]
        changed = True
        while changed and total < room:
            changed = False
            for k in reversed(steps):  # moves pages from tier k+1 (L: dropped) up to tier k
                spend = costs[k] - costs[k + 1]
                if spend <= 0 or total + spend > room:
                    continue
                lo = max(hard[k + 1], b[k + 2] if k + 2 <= L else 0)
                if b[k + 1] <= lo:
                    continue
                m = (room - total) // spend
                new = max(bisect.bisect_left(needed_pre, needed_pre[b[k + 1]] - m), lo)
                moved = needed_pre[b[k + 1]] - needed_pre[new]
                if new < b[k + 1]:
                    total += spend * moved
                    b[k + 1] = new
                    changed = True
        assert total <= room, "dropping every page always fits"
        return b, age, needed_pre

    def _emit(self, budget: int, available: int, text: set[int], text_cost: int, b: list[int],
              age: list[int], needed_pre: list[int]) -> Plan:
        lad, turns = self.ladder, self.turns
        firsts, lasts, pre = self._firsts, self._lasts, self._pre
        L = len(lad.tiers)
        per_turn = self.overhead.per_turn
        names = list(lad.names) + ["dropped"]
        costs = [t.tokens + self.overhead.per_page for t in lad.tiers] + [0]
        ptext = self._ptext_pre
        text_sorted = sorted(text)
        items: list[tuple[int, int, Segment]] = []
        page_tiers: list[tuple[int, int, str]] = []
        page_text = page_tokens = 0
        runs: list[tuple[int, int, int]] = []  # (first page, stop page, tier index), oldest first
        for k in range(L, -1, -1):
            lo, hi = (0, b[L]) if k == L else (b[k + 1], b[k])
            for r0, r1 in _needed_runs(needed_pre, lo, hi):
                runs.append((r0, r1, k))
                page_tiers.append((r0, r1, names[k]))
                if k < L:
                    page_text += ptext[r1] - ptext[r0]
                    page_tokens += costs[k] * (r1 - r0)
        runs.sort()
        cut = self._cut
        if cut:  # the pages continuing a cut turn form a segment of their own, just before its tail
            split = []
            for r0, r1, k in runs:
                for t in sorted(cut):
                    s0 = bisect.bisect_left(firsts, t, r0, r1)
                    if r0 < s0 < r1 and firsts[s0] == t:
                        split.append((r0, s0, k))
                        r0 = s0
                split.append((r0, r1, k))
            runs = split
        # turns held: text first, then the oldest shown page drawing them, then dropped pages
        first_shown = next((r[0] for r in runs if r[2] < L), None)  # dropped runs all come before it
        shown_from = firsts[first_shown] if first_shown is not None else 1 << 62
        claimed = -1
        represented = 0
        for r0, r1, k in runs:
            t0, t1 = max(firsts[r0], claimed + 1), lasts[r1 - 1]
            if k == L:
                t1 = min(t1, shown_from - 1)
            claimed = max(claimed, t1)
            pieces = _minus(t0, t1, text_sorted)
            if not pieces:  # its pages only continue turns held elsewhere (text or an older segment)
                drawn = lasts[r1 - 1]  # a cut turn's earlier part comes just before its tail
                at = drawn if drawn in cut else t0
                seg = Segment("dropped" if k == L else "page", names[k], costs[k] * (r1 - r0), range(at, at),
                              range(r0, r1), self._reason(k, range(r0, r1), age))
                items.append((at, 0, seg))
                continue
            # each page goes to the piece holding the first turn it draws that this run holds: piece j
            # starts at the first page beginning after piece j-1's last turn (a page drawing only text
            # turns is not in the run)
            starts = [r0] + [bisect.bisect_right(firsts, pieces[j - 1][1], r0, r1) for j in range(1, len(pieces))]
            for j, (a, z) in enumerate(pieces):
                pr = range(starts[j], starts[j + 1] if j + 1 < len(pieces) else r1)
                seg = Segment("dropped" if k == L else "page", names[k], costs[k] * len(pr),
                              range(a, z + 1), pr, self._reason(k, pr, age))
                items.append((a, 0, seg))
                if k < L:
                    represented += pre[z + 1] - pre[a]
        # text runs (a cut turn is a segment of its own: only its tail is text)
        spare = self._spare_text
        for run in _runs(text_sorted):
            for a, z in _minus(*run, sorted(cut)) if cut else [run]:
                toks = pre[z + 1] - pre[a]
                why = {"pinned" if turns[j].pinned else "exact" if turns[j].exact else
                       "spare budget" if j in spare else "recent" for j in range(a, z + 1)}
                items.append((a, 1, Segment("text", None, toks + per_turn * (z + 1 - a), range(a, z + 1),
                                            reason=", ".join(sorted(why)))))
                represented += toks
        for t, c in cut.items():
            # its tail, and of its earlier part what the shown pages hold (text tokens, at most the rest)
            head = range(bisect.bisect_left(lasts, t), c.page)
            on_pages = sum(ptext[min(r1, head.stop)] - ptext[max(r0, head.start)] for r0, r1, k in runs
                           if k < L and r0 < head.stop and r1 > head.start)
            represented += c.tokens + min(max(turns[t].tokens - c.tokens, 0), on_pages)
            items.append((t, 1, Segment("text", None, c.tokens + per_turn, range(t, t + 1),
                                        reason="tail of a long turn; its earlier part on pages", tail_from=c.page)))
        items.sort(key=lambda x: (x[0], x[1]))
        fixed = self.overhead.fixed
        total = text_cost + page_tokens + fixed
        age_runs = []
        for k in range(L, 0, -1):
            lo, hi = (0, age[L]) if k == L else (age[k + 1], age[k])
            if hi > lo:
                age_runs.append((lo, hi, names[k]))
        return Plan(tuple(s for _, _, s in items), budget, available, total, represented,
                    page_text, page_tokens, tuple(page_tiers), tuple(age_runs), fixed,
                    tuple(sorted((t, c.page) for t, c in cut.items())),
                    self._firsts, self._lasts, len(turns))

    def _reason(self, k: int, pages: range, age: list[int]) -> str:
        L = len(self.ladder.tiers)
        if not pages:
            return "held on the previous segment's page"

        def floor(p: int) -> int:  # the age floor of page p (tier index, L = dropped)
            return next((j for j in range(L, 0, -1) if p < age[j]), 0)

        newest, oldest = floor(pages.stop - 1), floor(pages.start)  # oldest is the coarsest
        if k > newest:
            return "dropped to fit the budget (this call)" if k == L else "coarsened to fit the budget (this call)"
        if k == oldest:
            return "dropped by age" if k == L else "by age"
        if k == newest:
            return "by age; older pages sharper than their age: spare budget (this call)"
        return "sharper than its age: spare budget (this call)"


def _runs(sorted_ints: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers as inclusive (first, last) pairs."""
    out: list[tuple[int, int]] = []
    for i in sorted_ints:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _minus(a: int, z: int, sorted_text: list[int]) -> list[tuple[int, int]]:
    """The inclusive range a..z without the text turns, as maximal inclusive runs."""
    if z < a:
        return []
    lo, hi = bisect.bisect_left(sorted_text, a), bisect.bisect_right(sorted_text, z)
    out: list[tuple[int, int]] = []
    cur = a
    for t in sorted_text[lo:hi]:
        if t > cur:
            out.append((cur, t - 1))
        cur = t + 1
    if cur <= z:
        out.append((cur, z))
    return out


def _needed_runs(needed_pre: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """Maximal runs of needed pages within [lo, hi): one check in the common all-needed case."""
    if hi <= lo:
        return []
    if needed_pre[hi] - needed_pre[lo] == hi - lo:
        return [(lo, hi)]
    runs: list[tuple[int, int]] = []
    start = None
    for i in range(lo, hi):
        if needed_pre[i + 1] > needed_pre[i]:
            if start is None:
                start = i
        elif start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, hi))
    return runs


def plan(
    turns: Sequence[TurnInfo],
    pages: Sequence[PageInfo],
    budget: int,
    ladder: Ladder,
    policy: Policy | None = None,
    *,
    now: float | None = None,
    overhead: Overhead | None = None,
    tails: Sequence[TailInfo] = (),
) -> Plan:
    """Plan one model call. See the module docstring for exactly what is decided and why."""
    planner = Planner(ladder, policy, overhead)
    planner.extend(turns, pages, tails)
    return planner.plan(budget, now=now)
