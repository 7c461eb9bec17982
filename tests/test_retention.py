"""What a session keeps over time: budget squeezes leave no trace, a chat loop keeps what planning
once keeps, the budget is spent, and the native prompt (template included) never exceeds it."""

from __future__ import annotations

import itertools
from importlib import resources

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimem.backends import NoModelBackend
from optimem.memory import OpticalMemory
from optimem.policies import Policy, PolicyError
from optimem.renderers import RenderSettings, load_transcript

SMALL = RenderSettings(page_px=320, font_px=14, margin_px=8)
_session = itertools.count()
_checked: list[int] = []


@pytest.fixture(scope="module")
def example():
    return load_transcript(str(resources.files("optimem").joinpath("data/example_chat.jsonl")))


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('retention') / 'm.db'}"


def _memory(url, turns, **kw) -> OpticalMemory:
    mem = OpticalMemory(f"s{next(_session)}", url, **kw)
    mem.add_many(turns)
    return mem


@pytest.fixture(scope="module")
def bundled(url, example):
    """The bundled conversation, pages sealed once at the default density (the slow part)."""
    mem = _memory(url, example)
    mem.sync()
    return mem.session


def test_a_wide_context_after_a_squeezed_one_equals_a_fresh_wide_one(bundled, url):
    OpticalMemory(bundled, url).restore(0)  # no floors: as if fresh
    fresh = OpticalMemory(bundled, url).context(8192)
    OpticalMemory(bundled, url).restore(0)
    mem = OpticalMemory(bundled, url)
    tight = mem.context(2048)
    assert tight.plan.dropped and tight.plan.total_tokens <= 2048
    wide = mem.context(8192)
    assert wide.plan.to_json() == fresh.plan.to_json()
    assert [(p.index, p.tier) for p in wide.pages] == [(p.index, p.tier) for p in fresh.pages]
    # and another process reading the same session agrees
    again = OpticalMemory(bundled, url).context(8192)
    assert again.plan.to_json() == fresh.plan.to_json()
    # the squeeze persisted age floors only
    stored = {p.index: p.floor for p in mem.store.get_pages(bundled, with_png=False) if p.floor}
    assert stored == fresh.plan.floors() and "dropped" not in stored.values()


def test_the_budget_is_spent_when_the_history_is_longer(bundled, url):
    p = OpticalMemory(bundled, url).plan(8192)
    assert p.text_tokens_represented > 8192
    assert p.total_tokens >= 0.9 * 8192
    strict = OpticalMemory(bundled, url, policy=Policy(fill_budget=False)).plan(8192)
    assert p.total_tokens >= strict.total_tokens
    assert p.text_tokens_represented >= strict.text_tokens_represented


def test_where_each_turn_is(bundled, url):
    ctx = OpticalMemory(bundled, url).context(4096)
    p = ctx.plan
    shown = {pg.index: pg for pg in ctx.pages}
    n = len(OpticalMemory(bundled, url).turns())
    for t in range(n):
        loc = p.where(t)
        if loc.kind == "page":
            assert any(q in shown and shown[q].tier == tier for q, tier in loc.pages)
            assert any(t in shown[q].turns for q, _ in loc.pages if q in shown)
        elif loc.kind == "text":
            assert t in {x.id for x in ctx.turns}
        else:
            assert all(tier == "dropped" for _, tier in loc.pages)


def test_a_chat_loop_keeps_what_planning_the_final_history_once_keeps(example, url):
    turns = example[:120]
    loop = OpticalMemory(f"s{next(_session)}", url, render=SMALL)
    planned = 0
    for t in turns:
        loop.add(t.role, t.content)
        try:
            last = loop.plan(2048)
            planned += 1
        except PolicyError:  # the open page's turns alone outgrow 2k at times: that call is refused
            continue
    assert planned > 80
    once = _memory(url, turns, render=SMALL).plan(2048)
    assert last.text_tokens_represented >= once.text_tokens_represented
    # no earlier call left a trace: the same session's pages planned afresh give the loop's last plan
    # (pages sealed during the loop may break where one render of the whole history would not)
    OpticalMemory(loop.session, url, render=SMALL).restore(0)
    assert OpticalMemory(loop.session, url, render=SMALL).plan(2048).to_json() == last.to_json()


words = st.sampled_from(["the", "Caroline", "said", "42", "QX7-4431Z", "über", "naïve", "日本語", "—", "x=1;",
                         "\t", "\n", "\n\n", "  ", "e\u0301", "https://a.io/x", "ok.", "```", "🙂", ":", "<b>"])
turn = st.tuples(st.sampled_from(["user", "assistant", "system", "tool"]),
                 st.lists(words, min_size=1, max_size=120).map(" ".join))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(turn, min_size=1, max_size=40), st.integers(min_value=300, max_value=6000), st.booleans())
def test_native_prompt_never_exceeds_the_budget(url, turns, budget, fill):
    mem = _memory(url, [{"role": r, "content": c} for r, c in turns], render=SMALL, policy=Policy(fill_budget=fill))
    try:
        ctx = mem.context(budget)
    except PolicyError:
        return
    _checked.append(len(ctx.items))
    for page in ctx.pages:  # stand-in vision tokens: the prompt's length is what is checked
        page.embeds = np.zeros((page.tokens, 1), dtype=np.float32)
    prompt = NoModelBackend().prompts().chat(ctx)
    assert len(prompt.input_ids) <= ctx.plan.total_tokens <= budget


def test_the_property_test_built_real_prompts():
    if not _checked:
        pytest.skip("runs after test_native_prompt_never_exceeds_the_budget, in the same session")
    assert len(_checked) >= 10 and max(_checked) > 5


def test_retention_bench_pieces():
    """The benchmark's parts that need no OCR: facts at known turns, the chat loop per strategy,
    truncation within the budget, and turn-text accuracy leaving headers out."""
    from optimem.backends import DEEPSEEK_TEMPLATE_OVERHEAD as OH
    from optimem.bench.retention import _norm, chat_loop, generated, truncation_kept, turn_text_accuracy
    from optimem.ladders import DEEPSEEK_OCR_V1
    from optimem.records import page_infos, turn_infos
    from optimem.renderers import paginate

    turns, facts = generated(3, 120)
    assert facts and len({k for _, k in facts}) == len(facts)
    assert all(k in turns[i]["content"] for i, k in facts)
    layouts = [p for p in paginate(turns) if p.full]
    records = turn_infos([t["content"] for t in turns])
    sealed_at = [layouts[k + 1].spans[0].turn + 1 if k + 1 < len(layouts) else 1 << 30 for k in range(len(layouts))]
    runs = {s: chat_loop(records, page_infos(layouts), sealed_at, 1500, s, DEEPSEEK_OCR_V1.costs, OH)
            for s in ("optimem", "optimem strict", "optimem before")}
    for res in runs.values():
        assert res["plan"] is not None and res["plan"].total_tokens <= 1500
    assert runs["optimem"]["plan"].text_tokens_represented >= runs["optimem before"]["plan"].text_tokens_represented
    tokens = [r.tokens for r in records]
    kept = truncation_kept(tokens, 1500, OH)
    assert kept and max(kept) == len(turns) - 1
    assert sum(tokens[i] + OH.per_turn for i in kept) + OH.fixed <= 1500
    page = "User:\nHello there.\nAssistant:\nFine, thanks."
    assert turn_text_accuracy(_norm("User: Hello there. Assistant: Fine, thanks."), page)[0] == 1.0
    assert turn_text_accuracy(_norm("TS — Hello there. BSSUSC AICS Fine, thanks."), page)[0] == 1.0
    assert turn_text_accuracy(_norm("User: Helo there. Assistant: Fine, thanks."), page)[0] < 1.0
