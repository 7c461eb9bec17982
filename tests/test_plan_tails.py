"""Long turns in the planner: a turn that does not fit as text is cut (its earlier pages shown, only its
tail as text), so what a user or a tool wrote never makes a plan refuse; pins are never cut."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimem.ladders import DEEPSEEK_OCR_V1
from optimem.policies import PageInfo, Policy, PolicyError, TailInfo, TurnInfo, plan

L = DEEPSEEK_OCR_V1.costs
PAGE_TOKENS = 1000  # text tokens a page of the long turn holds


def long_turn(before: int = 3, pages_of_long: int = 20, after: int = 0, open_tail: bool = False, pinned=False):
    """`before` short turns on page 0 with the long turn's start, the long turn over `pages_of_long`
    pages, then `after` short turns (unsealed). With `open_tail` the long turn's last part is not on
    a sealed page (its last sealed page continues). Tails: at each of its last 3 continuation pages,
    and after its last sealed page when it is open."""
    t = before
    n_pages = pages_of_long
    tail_open = 300 if open_tail else 0
    turns = [TurnInfo(i, 40) for i in range(before)]
    turns.append(TurnInfo(t, PAGE_TOKENS * n_pages + tail_open, pinned=pinned))
    turns += [TurnInfo(t + 1 + i, 30) for i in range(after)]
    pages = [PageInfo(0, 0, t, PAGE_TOKENS, partial_last=True)]
    for i in range(1, n_pages):
        pages.append(PageInfo(i, t, t, PAGE_TOKENS, partial_last=open_tail or i < n_pages - 1))
    tails = [TailInfo(t, p, PAGE_TOKENS * (n_pages - p) + tail_open) for p in range(max(n_pages - 3, 1), n_pages)]
    if open_tail:
        tails.append(TailInfo(t, n_pages, tail_open))
    return turns, pages, tails


def held(p):
    out = []
    for s in p.segments:
        out.extend(s.turns)
    return out


def test_a_huge_newest_turn_is_its_tail_as_text_and_its_earlier_part_on_pages():
    turns, pages, tails = long_turn()
    alone = plan(turns, pages, 4096, L)  # no cut points given: shown on its pages alone, no refusal
    assert alone.where(3).kind == "page" and alone.total_tokens <= 4096
    p = plan(turns, pages, 4096, L, tails=tails)
    assert p.total_tokens <= 4096
    assert sorted(held(p)) == list(range(len(turns))), "every turn held once"
    tail = p.segments[p.where(3).segment]
    # the largest tail within the recent share (half of 4096): two pages of text
    assert tail.kind == "text" and tail.tail_from == 18 and tail.tokens == 2 * PAGE_TOKENS
    assert p.tails == ((3, 18),) and p.to_json()["tails"] == [[3, 18]]
    shown = dict(p.page_tiers)
    assert 18 not in shown and 19 not in shown, "the pages its tail lies on are not shown again"
    assert any(t != "dropped" for q, t in shown.items() if q < 18), "its earlier part is on pages"
    # the earlier part comes right before the tail, after the older text turns
    order = [s for s in p.segments if s.turns.start <= 3 or not s.turns]
    assert order[-1] is tail
    assert "turn 3 from page 18 on: raw text" in p.explain() and "tail of a long turn" in p.explain()
    assert "turn 3, its earlier part" in p.explain()


def test_a_large_budget_takes_a_larger_tail_and_a_small_one_the_pages_alone():
    turns, pages, tails = long_turn()
    big = plan(turns, pages, 9000, L, tails=tails)
    assert big.segments[big.where(3).segment].tail_from == 17  # three pages of text
    assert big.total_tokens <= 9000
    tiny = plan(turns, pages, 900, L, tails=tails)  # no tail fits: the turn is shown on its pages alone
    assert tiny.total_tokens <= 900 and tiny.where(3).kind in ("page", "dropped") and not tiny.tails
    assert any(t != "dropped" for _, t in tiny.page_tiers)


def test_questions_after_a_long_turn_keep_its_tail_as_text():
    turns, pages, tails = long_turn(after=4)
    p = plan(turns, pages, 4096, L, tails=tails)
    assert [p.where(i).kind for i in range(4, 8)] == ["text"] * 4
    loc = p.where(3)
    assert loc.kind == "text" and p.segments[loc.segment].tail_from is not None
    assert p.total_tokens <= 4096


def test_an_open_tail_is_text_and_the_sealed_part_pages():
    turns, pages, tails = long_turn(open_tail=True, after=2)
    p = plan(turns, pages, 2000, L, tails=tails)
    seg = p.segments[p.where(3).segment]
    assert seg.kind == "text" and seg.tail_from is not None and p.total_tokens <= 2000
    # without a cut after the last sealed page, the unsealed part cannot be left out
    with pytest.raises(PolicyError, match="not on a sealed page yet"):
        plan(turns, pages, 2000, L, tails=[c for c in tails if c.page < len(pages)][:0])


def test_pinned_huge_turns_refuse_with_a_clear_error():
    turns, pages, tails = long_turn(pinned=True)
    with pytest.raises(PolicyError, match="pinned.*never cut"):
        plan(turns, pages, 4096, L, tails=tails)
    turns, pages, tails = long_turn(pinned=True, after=2)
    with pytest.raises(PolicyError, match="pinned turns need"):
        plan(turns, pages, 4096, L, tails=tails)


def test_tails_that_do_not_match_the_pages_are_ignored():
    turns, pages, _ = long_turn()
    bogus = [TailInfo(3, 0, 10), TailInfo(3, 25, 10), TailInfo(1, 5, 10)]  # not continuation pages of turn 3
    p = plan(turns, pages, 4096, L, tails=bogus)
    assert not p.tails and p.total_tokens <= 4096
    with pytest.raises(PolicyError, match=">= 0"):
        plan(turns, pages, 4096, L, tails=[TailInfo(3, 19, -1)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 6), st.integers(2, 60), st.integers(0, 8), st.booleans(), st.integers(300, 30_000),
       st.booleans())
def test_long_turns_never_refuse_and_never_overflow(before, n_long, after, open_tail, budget, strict):
    turns, pages, tails = long_turn(before, n_long, after, open_tail)
    policy = Policy(fill_budget=not strict)
    try:
        p = plan(turns, pages, budget, L, policy, tails=tails)
    except PolicyError:
        # only when what is not on a sealed page (short turns after it, its open tail) cannot fit
        unsealed = 30 * after + (300 if open_tail else 0)
        assert unsealed > budget - 64 or (open_tail and 30 * after + 300 > budget)
        return
    assert p.total_tokens <= budget
    assert p.total_tokens == sum(s.tokens for s in p.segments)
    assert sorted(held(p)) == list(range(len(turns)))
    for s in p.segments:
        if s.kind == "text" and s.tail_from is not None:
            assert s.tail_from not in dict(p.page_tiers), "a page of the tail is shown again"
    assert p.text_tokens_represented <= sum(t.tokens for t in turns)


def test_a_tail_source_is_asked_only_for_turns_too_long_to_be_text():
    from optimem.policies import Planner

    turns, pages, tails = long_turn(after=3)
    asked = []

    def source(t):
        asked.append(t)
        return [c for c in tails if c.turn == t]

    planner = Planner(L)
    planner.extend(turns, pages)
    planner.tail_source = source
    p = planner.plan(4096)
    assert asked == [3] and p.tails and p.total_tokens <= 4096
    planner.plan(5000)
    assert asked == [3], "kept until the turn's pages change"
    planner.drop_tails([3])
    planner.plan(4096)
    assert asked == [3, 3]
    short = Planner(L)
    short.extend([TurnInfo(i, 50) for i in range(10)], [PageInfo(0, 0, 2, 150)])
    short.tail_source = source
    short.plan(4096)
    assert asked == [3, 3], "turns that fit whole are never asked about"


def paginate(tokens: list[int], cap: int):
    """Turns of `tokens` laid out greedily on pages of `cap` text tokens (a turn may straddle pages);
    the last, unfilled page stays open. Returns (turns, sealed pages, tails at every continuation page
    and after the last sealed page)."""
    pages, cur, room = [], [], cap  # cur: [(turn, tokens on this page)]
    starts: dict[int, list[tuple[int, int]]] = {}  # turn -> [(page, tokens from this page on)]
    for t, n in enumerate(tokens):
        left = n
        while True:
            take = min(left, room)
            if cur and take == 0:
                break
            if take < left or left == 0 or take > 0:
                cur.append((t, take))
            left -= take
            room -= take
            if room == 0:
                pages.append(cur)
                cur, room = [], cap
                if left > 0:
                    starts.setdefault(t, []).append((len(pages), left))
                    continue
            if left == 0:
                break
    infos = []
    for i, pg in enumerate(pages):
        last_t = pg[-1][0]
        continues = i + 1 < len(pages) and pages[i + 1][0][0] == last_t or (i + 1 == len(pages) and cur and cur[0][0] == last_t)
        infos.append(PageInfo(i, pg[0][0], last_t, sum(k for _, k in pg), partial_last=bool(continues)))
    turns = [TurnInfo(i, n) for i, n in enumerate(tokens)]
    tails = [TailInfo(t, p, left) for t, lst in starts.items() for p, left in lst]
    return turns, infos, tails


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.integers(1, 300), st.integers(2_000, 40_000)), min_size=1, max_size=12),
       st.integers(400, 30_000), st.booleans())
def test_several_long_turns_never_overflow_and_every_turn_is_held_once(tokens, budget, strict):
    turns, pages, tails = paginate(tokens, 1000)
    try:
        p = plan(turns, pages, budget, L, Policy(fill_budget=not strict), tails=tails)
    except PolicyError:
        sealed_upto = pages[-1].last_turn if pages else -1
        unsealed = sum(tokens[sealed_upto + 1:]) if not (pages and pages[-1].partial_last) else None
        assert unsealed is None or unsealed > budget or tokens[-1] > budget
        return
    assert p.total_tokens <= budget and p.total_tokens == sum(s.tokens for s in p.segments)
    assert sorted(held(p)) == list(range(len(turns)))
    text = {t for s in p.segments if s.kind == "text" and s.tail_from is None for t in s.turns}
    cut = dict(p.tails)
    for q, tier in p.page_tiers:  # a page is shown or dropped only when something on it is not text
        drawn = range(pages[q].first_turn, pages[q].last_turn + 1)
        assert any(t not in text and not (t in cut and q >= cut[t]) for t in drawn), (q, tier)
    ranks = [RANK[t] for _, t in sorted(p.page_tiers)]
    assert ranks == sorted(ranks, reverse=True), "an older page is sharper than a newer one"


RANK = {name: i for i, name in enumerate(L.names)} | {"dropped": len(L.names)}
