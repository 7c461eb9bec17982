"""Policies: budget, monotone decay by age and over time, pins, exact content, determinism, edge cases."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    DEEPSEEK_OCR_V1,
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

L = DEEPSEEK_OCR_V1
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
@given(st.lists(st.integers(min_value=5, max_value=300), min_size=10, max_size=90), budgets)
def test_monotone_over_time_with_floors_carried(tokens, budget):
    """As turns are added, no page ever gets sharper than it was in an earlier plan."""
    planner = Planner(L)
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
            p = planner.plan(budget)
        except PolicyError:
            continue
        for page, tier in p.page_tiers:
            assert RANK[tier] >= best.get(page, 0), f"page {page} came back sharper"
            best[page] = RANK[tier]
        planner.set_floors(p.floors())


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
    p = plan(turns, pages, 1_000_000, L)
    tiers = [t for _, t in sorted(p.page_tiers)]
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
    by_tokens = plan(turns, pages, 100_000, L, Policy(schedule=Schedule("tokens", (500, 2000, 4000))))
    assert dict(by_tokens.page_tiers)[0] == "tiny"
    by_time = plan(turns, pages, 100_000, L, Policy(schedule=Schedule("seconds", (600, 1800, 3600, 7200))), now=1000 + 60 * 59)
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
