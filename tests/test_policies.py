"""Policies: budget, monotone decay by age and over time, pins, exact content, determinism, edge cases."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimem.ladders import DEEPSEEK_OCR_V1
from optimem.policies import (
    Ladder,
    PageInfo,
    Planner,
    Policy,
    PolicyError,
    Schedule,
    TierCost,
    TurnInfo,
    detect_exact,
    plan,
)

L = DEEPSEEK_OCR_V1.costs  # a model's ladder, as a backend hands it to the policies
RANK = {name: i for i, name in enumerate(L.names)} | {"dropped": len(L.names)}


def make(tokens: list[int], per_page: int = 3, pinned: frozenset[int] = frozenset()):
    turns = [TurnInfo(i, t, pinned=i in pinned) for i, t in enumerate(tokens)]
    pages = []
    for first in range(0, max(len(tokens) - per_page, 0), per_page):
        last = first + per_page - 1
        pages.append(PageInfo(len(pages), first, last, sum(tokens[first : last + 1])))
    return turns, pages


def tiers_by_page(p):
    return dict(p.page_tiers)


conversations = st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=120)
budgets = st.integers(min_value=400, max_value=40_000)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations, budgets, st.integers(min_value=1, max_value=5))
def test_budget_never_exceeded_and_older_never_sharper(tokens, budget, per_page):
    turns, pages = make(tokens, per_page)
    try:
        p = plan(turns, pages, budget, L)
    except PolicyError:
        assert max(tokens[-1:]) > budget or sum(tokens[len(pages) * per_page:]) > budget
        return
    assert p.total_tokens <= budget
    assert p.total_tokens == sum(s.tokens for s in p.segments)
    ranks = [RANK[t] for _, t in sorted(p.page_tiers)]
    assert ranks == sorted(ranks, reverse=True), "an older page is sharper than a newer one"
    # every turn is represented somewhere or reported dropped: nothing silently vanishes
    covered = set()
    for s in p.segments:
        covered.update(s.turns)
    assert covered == set(range(len(tokens)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=5, max_value=300), min_size=10, max_size=90), budgets, st.booleans(),
       st.lists(budgets, min_size=1, max_size=4))
def test_age_floors_monotone_over_time_and_budget_leaves_no_trace(tokens, budget, fill, other_budgets):
    """As turns are added, no page's age floor ever gets sharper; with strict decay no page is shown
    sharper than its floor; a squeeze at another budget changes no floor, so it changes no later plan."""
    pol = Policy(fill_budget=fill)
    planner = Planner(L, pol)
    best: dict[int, int] = {}
    per_page = 2
    sealed = 0
    for i, tok in enumerate(tokens):
        planner.extend([TurnInfo(i, tok)])
        while (sealed + 1) * per_page + per_page <= i + 1:
            first = sealed * per_page
            planner.extend(pages=[PageInfo(sealed, first, first + per_page - 1, sum(tokens[first : first + per_page]))])
            sealed += 1
        try:
            squeezed = planner.plan(other_budgets[i % len(other_budgets)])
            planner.set_floors(squeezed.floors())
            p = planner.plan(budget)
        except PolicyError:
            continue
        floors = p.floors()
        for page in range(len(planner.pages)):
            rank = RANK[floors.get(page, L.names[0])]
            assert rank >= best.get(page, 0), f"page {page}'s age floor came back sharper"
            best[page] = rank
        if not fill:
            for page, tier in p.page_tiers:
                assert RANK[tier] >= RANK[floors.get(page, L.names[0])], f"page {page} shown sharper than its age"
        planner.set_floors(floors)
        fresh = Planner(L, pol)
        fresh.extend(planner.turns, [PageInfo(q.index, q.first_turn, q.last_turn, q.text_tokens) for q in planner.pages])
        assert fresh.plan(budget).to_json() == p.to_json(), "an earlier squeeze changed this plan"


@settings(max_examples=100, deadline=None)
@given(conversations, budgets, st.sets(st.integers(min_value=0, max_value=119), max_size=5))
def test_pins_stay_text_or_the_plan_refuses(tokens, budget, pins):
    pins = frozenset(i for i in pins if i < len(tokens))
    turns, pages = make(tokens, 3, pins)
    try:
        p = plan(turns, pages, budget, L)
    except PolicyError as exc:
        assert "pinned" in str(exc) or "newest" in str(exc) or "sealed" in str(exc)
        return
    text_turns = {t for s in p.segments if s.kind == "text" for t in s.turns}
    assert pins <= text_turns


@given(conversations, budgets)
@settings(max_examples=50, deadline=None)
def test_deterministic(tokens, budget):
    turns, pages = make(tokens)
    try:
        a = plan(turns, pages, budget, L).to_json()
    except PolicyError:
        return
    assert a == plan(turns, pages, budget, L).to_json()


def test_empty_conversation_is_an_empty_plan():
    p = plan([], [], 1000, L)
    assert p.segments == () and p.total_tokens == 0


def test_budget_smaller_than_the_newest_turn_is_an_error():
    turns, pages = make([50, 60, 500])
    with pytest.raises(PolicyError, match="newest turn"):
        plan(turns, pages, 400, L)


def test_recent_turns_that_do_not_fit_become_pages():
    tokens = [300] * 30
    turns, pages = make(tokens, 3)
    p = plan(turns, pages, 1000, L, Policy(recent_turns=6))
    text = [s for s in p.segments if s.kind == "text"]
    assert p.total_tokens <= 1000
    assert sum(len(s.turns) for s in text) < 6
    assert 29 in text[-1].turns


def test_reserve_and_bad_settings():
    turns, pages = make([10] * 10)
    with pytest.raises(PolicyError, match="no room"):
        plan(turns, pages, 100, L, Policy(reserve_tokens=100))
    with pytest.raises(PolicyError):
        Policy(recent_turns=0)
    with pytest.raises(PolicyError, match="unknown tier"):
        L.index("huge")


def test_default_schedule_decays_through_every_tier():
    tokens = [250] * 300
    turns, pages = make(tokens, 3)
    p = plan(turns, pages, 1_000_000, L, Policy(fill_budget=False))
    tiers = [t for _, t in sorted(p.page_tiers)]
    assert [t for _, t in sorted(p.floors().items())] == [t for t in tiers if t != "large"]
    assert plan(turns, pages, 1_000_000, L).floors() == p.floors()  # filling the budget leaves floors alone
    assert tiers[0] == "tiny" and tiers[-1] == "large"
    assert {"large", "base", "small", "tiny"} <= set(tiers)
    # age in turns: a page whose last turn is <= 12 turns old is large
    newest_large = max(i for i, t in enumerate(tiers) if t == "large")
    assert pages[newest_large].last_turn >= 299 - 12


def test_tight_budget_drops_oldest_first_and_reports_it():
    tokens = [250] * 300
    turns, pages = make(tokens, 3)
    p = plan(turns, pages, 3000, L)
    assert p.dropped and p.dropped[0].pages.start == 0
    assert "dropped" in p.explain()
    assert p.total_tokens <= 3000


def test_schedule_in_tokens_and_seconds():
    tokens = [100] * 60
    turns = [TurnInfo(i, 100, timestamp=1000.0 + 60 * i) for i in range(60)]
    _, pages = make(tokens, 3)
    by_tokens = plan(turns, pages, 100_000, L, Policy(schedule=Schedule("tokens", (500, 2000, 4000)), fill_budget=False))
    assert dict(by_tokens.page_tiers)[0] == "tiny"
    by_time = plan(turns, pages, 100_000, L, Policy(schedule=Schedule("seconds", (600, 1800, 3600, 7200)), fill_budget=False),
                   now=1000 + 60 * 59)
    assert dict(by_time.page_tiers)[17] == "large" and dict(by_time.page_tiers)[0] == "small"  # 3420 s old
    with pytest.raises(PolicyError, match="now"):
        plan(turns, pages, 1000, L, Policy(schedule=Schedule("seconds", (1,))))


def test_exact_content_kept_as_text_within_its_share():
    tokens = [100] * 40
    turns = [TurnInfo(i, 100, exact=i in (3, 10)) for i in range(40)]
    _, pages = make(tokens, 3)
    p = plan(turns, pages, 4000, L, Policy(exact_share=0.1))
    text = {t for s in p.segments if s.kind == "text" for t in s.turns}
    assert 3 in text and 10 in text
    p = plan(turns, pages, 4000, L, Policy(exact_share=0.0))
    text = {t for s in p.segments if s.kind == "text" for t in s.turns}
    assert 3 not in text


def test_detect_exact():
    assert "uuid" in detect_exact("id 123e4567-e89b-12d3-a456-426614174000")
    assert "url" in detect_exact("see https://example.com/a?b=c")
    assert "number" in detect_exact("account 1234 5678 9012")
    assert "id" in detect_exact("booking QX7-4431Z confirmed")
    assert "code" in detect_exact("```python\nx = 1\n```")
    assert detect_exact("Let us meet for lunch tomorrow.") == ()


def test_ladder_from_another_backend():
    ladder = Ladder((TierCost("hi", 257, 0.95), TierCost("lo", 145, 0.8)))
    turns, pages = make([200] * 50)
    p = plan(turns, pages, 3000, ladder)
    assert p.total_tokens <= 3000
    assert set(t for _, t in p.page_tiers) <= {"hi", "lo", "dropped"}


def test_cli_plan_json(tmp_path):
    src = tmp_path / "chat.jsonl"
    src.write_text("\n".join(json.dumps({"role": "user" if i % 2 == 0 else "assistant",
                                         "content": f"Turn {i}: " + "some words here " * 60}) for i in range(60)))
    out = subprocess.run([sys.executable, "-m", "optimem", "plan", str(src), "--budget", "4000", "--json"],
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert set(doc) >= {"segments", "total_tokens", "text_tokens_represented"}
    assert doc["total_tokens"] <= 4000
    assert {s["kind"] for s in doc["segments"]} >= {"text", "page"}
    for s in doc["segments"]:
        assert set(s) >= {"kind", "tier", "tokens", "turns"}


# -- budget squeezes leave no trace; spare budget is spent --------------------------------------------


def test_a_squeeze_then_a_wide_call_equals_a_fresh_wide_call():
    turns, pages = make([250] * 300, 3)
    planner = Planner(L)
    planner.extend(turns, pages)
    tight = planner.plan(2048)
    assert tight.dropped, "the squeeze drops pages for this call"
    planner.set_floors(tight.floors())
    assert all(t != "dropped" for t in tight.floors().values()), "a budget drop is never a floor"
    assert planner.plan(8192).to_json() == plan(turns, pages, 8192, L).to_json()


def test_fill_budget_spends_spare_budget_and_strict_keeps_the_age_floor():
    turns, pages = make([250] * 300, 3)  # pages are tiny by age beyond 100 turns
    strict = plan(turns, pages, 20_000, L, Policy(fill_budget=False))
    filled = plan(turns, pages, 20_000, L)
    assert strict.floors() == filled.floors()
    assert filled.total_tokens > strict.total_tokens
    assert filled.total_tokens >= 0.9 * 20_000
    rank = lambda p: [RANK[t] for _, t in sorted(p.page_tiers)]  # noqa: E731
    assert all(a <= b for a, b in zip(rank(filled), rank(strict))), "filling never coarsens a page"
    assert rank(filled) == sorted(rank(filled), reverse=True), "older is never sharper than newer"
    assert "spare budget" in filled.explain()
    # a page dropped by age (a schedule as long as the ladder) stays dropped however large the budget
    aged = plan(turns, pages, 1_000_000, L, Policy(schedule=Schedule("turns", (12, 40, 100, 200))))
    assert dict(aged.page_tiers)[0] == "dropped" and aged.floors()[0] == "dropped"
    assert "dropped by age" in aged.explain()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations, budgets, st.integers(min_value=1, max_value=5))
def test_filling_never_loses_value_against_strict_decay(tokens, budget, per_page):
    turns, pages = make(tokens, per_page)
    try:
        strict = plan(turns, pages, budget, L, Policy(fill_budget=False))
    except PolicyError:
        return
    filled = plan(turns, pages, budget, L)
    assert filled.total_tokens <= budget
    assert filled.text_tokens_represented >= strict.text_tokens_represented
    s, f = strict.tiers(), filled.tiers()
    for page, tier in f.items():
        assert RANK[tier] <= RANK[s[page]], f"page {page} coarser when filling"


# -- the prompt template's overhead ---------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations, budgets, st.integers(min_value=1, max_value=4), st.integers(0, 60), st.integers(0, 8),
       st.integers(0, 12))
def test_overhead_is_counted_and_the_budget_holds(tokens, budget, per_page, fixed, page_oh, turn_oh):
    from optimem.policies import Overhead

    turns, pages = make(tokens, per_page)
    oh = Overhead(fixed, page_oh, turn_oh)
    try:
        p = plan(turns, pages, budget, L, overhead=oh)
    except PolicyError:
        return
    shown = [s for s in p.segments if s.kind == "page"]
    texts = [s for s in p.segments if s.kind == "text"]
    n_pages = sum(len(s.pages) for s in shown)
    n_text = sum(len(s.turns) for s in texts)
    cost = {t.name: t.tokens for t in L.tiers}
    expect = fixed + sum((cost[s.tier] + page_oh) * len(s.pages) for s in shown) \
        + sum(tokens[t] for s in texts for t in s.turns) + turn_oh * n_text
    assert p.total_tokens == expect == sum(s.tokens for s in p.segments) + p.overhead_tokens
    assert p.total_tokens <= budget
    assert p.page_tokens == sum(s.tokens for s in shown) and n_pages >= 0


def test_overhead_errors():
    from optimem.policies import Overhead

    turns, pages = make([10] * 10)
    with pytest.raises(PolicyError, match="template"):
        plan(turns, pages, 50, L, overhead=Overhead(fixed=50))
    with pytest.raises(PolicyError, match="newest turn"):
        plan(turns, pages, 20, L, overhead=Overhead(per_turn=15))
    with pytest.raises(PolicyError, match=">= 0"):
        Overhead(per_page=-1)


# -- where each turn is: segments never overlap ---------------------------------------------------


def _check_partition(p, n_turns, turns_tokens):
    held: list[int] = []
    for s in p.segments:
        held.extend(s.turns)
    assert sorted(held) == list(range(n_turns)), "every turn is held by exactly one segment"
    pages = [q for s in p.segments if s.kind != "text" for q in s.pages]
    assert len(pages) == len(set(pages)), "a page belongs to one segment"
    assert p.text_tokens_represented == sum(turns_tokens[t] for s in p.segments if s.kind != "dropped" for t in s.turns)
    for i, s in enumerate(p.segments):
        for t in s.turns:
            loc = p.where(t)
            assert loc.segment == i and loc.kind == s.kind
            if s.kind == "page":
                assert loc.tier == s.tier and any(tier == s.tier for _, tier in loc.pages)
            if s.kind == "text":
                assert loc.tier is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations, budgets, st.integers(min_value=1, max_value=5), st.sets(st.integers(0, 119), max_size=4))
def test_segments_partition_the_turns_and_where_agrees(tokens, budget, per_page, pins):
    pins = frozenset(i for i in pins if i < len(tokens))
    turns, pages = make(tokens, per_page, pins)
    try:
        p = plan(turns, pages, budget, L)
    except PolicyError:
        return
    _check_partition(p, len(tokens), tokens)


def test_a_page_straddling_the_text_boundary_and_turns_split_across_pages():
    # pages of 3 turns; turn 4 continues from page 1 onto page 2 (partial), turn 10 is pinned
    turns = [TurnInfo(i, 100, pinned=i == 10) for i in range(16)]
    pages = [PageInfo(0, 0, 2, 300), PageInfo(1, 3, 4, 150, partial_last=True), PageInfo(2, 4, 6, 250),
             PageInfo(3, 7, 9, 300), PageInfo(4, 9, 11, 250, partial_last=False), PageInfo(5, 12, 13, 200)]
    p = plan(turns, pages, 100_000, L, Policy(recent_turns=3, fill_budget=False))
    _check_partition(p, 16, [100] * 16)
    # the newest page draws turns 12-13: 13 is text (recent), 12 is held by the page
    assert p.where(13).kind == "text" and (5, p.where(12).tier) in p.where(13).pages
    assert p.where(12).kind == "page" and p.where(12).pages == ((5, p.where(12).tier),)
    # turn 4 lies on pages 1 and 2: held by the older one's segment, both pages listed
    assert [q for q, _ in p.where(4).pages] == [1, 2]
    # the pin splits page 4's turns: 9 stays with the pages before, 11 is held after the text turn
    assert p.where(10).kind == "text"
    seg11 = p.segments[p.where(11).segment]
    assert seg11.kind == "page" and 10 not in seg11.turns
    with pytest.raises(PolicyError, match="not in this plan"):
        p.where(16)


def test_squeezed_segments_explain_why():
    turns, pages = make([250] * 300, 3)
    text = plan(turns, pages, 3000, L).explain()
    assert "dropped to fit the budget (this call)" in text


def test_spare_budget_beyond_the_sharpest_pages_goes_to_older_turns_as_text():
    turns, pages = make([300] * 40, 3)  # 12,000 text tokens
    everything = plan(turns, pages, 20_000, L)
    assert [s.kind for s in everything.segments] == ["text"] and everything.total_tokens == 12_000
    assert "spare budget" in everything.explain()
    strict = plan(turns, pages, 20_000, L, Policy(fill_budget=False))
    assert any(s.kind == "page" for s in strict.segments)
    some = plan(turns, pages, 8_000, L)
    text = {t for s in some.segments if s.kind == "text" for t in s.turns}
    assert len(text) > 6 and 39 in text and some.total_tokens <= 8_000
    assert all(t == L.names[0] for _, t in some.page_tiers), "text is added only while pages stay sharpest"
    assert some.floors() == strict.floors() == plan(turns, pages, 8_000, L, Policy(fill_budget=False)).floors()
