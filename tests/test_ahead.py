"""Plans kept between calls (KV reuse), the background worker, and work done ahead of need."""

from __future__ import annotations

import threading
import time

import pytest

from optimem.ahead import AheadWorker
from optimem.ladders import DEEPSEEK_OCR_V1
from optimem.policies import PageInfo, Planner, Policy, Schedule, TurnInfo
from optimem.policies.stable import extend, slack_tokens


# -- policies.stable -------------------------------------------------------------------------------
def _planner(n_turns: int, policy: Policy | None = None, tokens: int = 300) -> Planner:
    p = Planner(DEEPSEEK_OCR_V1.costs, policy or Policy())
    p.extend([TurnInfo(i, tokens) for i in range(n_turns)])
    n_pages = (n_turns - 4) // 3
    p.extend(pages=[PageInfo(k, 3 * k, 3 * k + 2, 3 * tokens) for k in range(n_pages)])
    return p


def _fresh(planner: Planner, budget: int, reserve: int):
    import dataclasses

    planner.policy = dataclasses.replace(planner.policy, reserve_tokens=reserve)
    return planner.plan(budget)


def test_extend_keeps_every_segment_and_appends_the_new_turns_as_text():
    planner = _planner(90)
    budget = 8192
    prev = _fresh(planner, budget, 2048)  # planned with slack
    planner.extend([TurnInfo(90, 300), TurnInfo(91, 120)])
    fresh = _fresh(planner, budget, 2048)
    got = extend(prev, planner, budget, 0, fresh)
    assert got is not None
    assert got.segments[:-1] == prev.segments[:-1]  # every leading segment unchanged
    last = got.segments[-1]
    assert last.kind == "text" and last.turns.start == prev.segments[-1].turns.start and last.turns.stop == 92
    assert got.total_tokens == prev.total_tokens + 420 + 2 * planner.overhead.per_turn <= budget
    assert got.tier_runs == prev.tier_runs
    # every turn is held exactly once; the new ones as text
    held = sorted(t for s in got.segments for t in s.turns)
    assert held == list(range(92))
    assert got.where(91).kind == "text" and got.where(90).kind == "text"
    assert got.text_tokens_represented == prev.text_tokens_represented + 420


def test_extend_refuses_what_no_longer_fits_or_age_forbids():
    planner = _planner(90)
    prev = _fresh(planner, 8192, 2048)
    room = 8192 - prev.total_tokens
    planner.extend([TurnInfo(90, room + 1)])
    assert extend(prev, planner, 8192, 0, _fresh(planner, 8192, 0)) is None  # over the budget
    # a different budget, or a reserve that leaves no room, never extends
    assert extend(prev, planner, 4096, 0, _fresh(planner, 8192, 0)) is None

    strict = Policy(fill_budget=False, schedule=Schedule(limits=(2, 6, 12)))
    planner = _planner(60, strict)
    prev = _fresh(planner, 20000, 0)
    assert any(t not in ("dropped", "tiny") for _, _, t in prev.tier_runs)
    planner.extend([TurnInfo(60 + i, 10) for i in range(40)])  # pages age past their tiers
    fresh = _fresh(planner, 20000, 0)
    assert extend(prev, planner, 20000, 0, fresh) is None  # strict decay: never sharper than the floor


def test_extend_refuses_a_page_turn_that_became_pinned():
    import dataclasses

    planner = _planner(60)
    prev = _fresh(planner, 8192, 2048)
    on_page = next(t for s in prev.segments if s.kind == "page" for t in s.turns)
    planner.turns[on_page] = dataclasses.replace(planner.turns[on_page], pinned=True)
    planner.extend([TurnInfo(60, 10)])
    assert extend(prev, planner, 8192, 0, _fresh(planner, 8192, 0)) is None


def test_slack_tokens():
    assert slack_tokens(8192, 192, 0.25) == 2000
    assert slack_tokens(8192, 0, 0.0) == 0
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            slack_tokens(8192, 0, bad)


# -- the worker --------------------------------------------------------------------------------------
def test_worker_coalesces_bounds_and_survives_failures(caplog):
    w = AheadWorker(max_pending=2)
    gate = threading.Event()
    ran: list[str] = []
    w.submit("block", lambda: (gate.wait(5), ran.append("block")))
    time.sleep(0.05)
    w.submit("a", lambda: ran.append("a1"))
    w.submit("a", lambda: ran.append("a2"))  # replaces a1, still waiting
    w.submit("b", lambda: ran.append("b"))
    w.submit("c", lambda: ran.append("c"))  # the queue holds 2: the oldest waiting (a2) is dropped
    w.submit("d", lambda: 1 / 0)  # drops b
    assert not w.wait(timeout=0.05)  # the blocked job holds it
    assert w.busy("block") and w.busy()
    gate.set()
    assert w.wait(timeout=5)
    assert ran == ["block", "c"]
    assert w.stats["replaced"] == 1 and w.stats["dropped"] == 2 and w.stats["failed"] == 1
    assert "failed" in caplog.text and "ZeroDivisionError" in caplog.text
    assert not w.cancel("c")
    w.close()
    w.submit("e", lambda: ran.append("e"))  # closed: ignored
    assert w.wait(timeout=1) and ran == ["block", "c"]
    with pytest.raises(ValueError):
        AheadWorker(max_pending=0)


# -- the memory with a tiny model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend():
    from optimem.backends import DeepseekOCRBackend
    from optimem.model import DeepseekOCR, tiny_config

    return DeepseekOCRBackend(DeepseekOCR.random(tiny_config(), seed=3))


def _turn(i: int) -> dict:
    return {"role": ["user", "assistant"][i % 2],
            "content": f"Turn {i}: " + " ".join(f"fact{(i * 13 + j) % 101}" for j in range(30 + i % 9))}


def _memory(tmp_path, backend, n=60, **kw):
    from optimem.memory import OpticalMemory
    from optimem.renderers import RenderSettings

    mem = OpticalMemory("ahead", f"sqlite:///{tmp_path / 'a.db'}", backend=backend,
                        render=RenderSettings(page_px=320, font_px=14, margin_px=8), **kw)
    mem.add_many([_turn(i) for i in range(n)])
    return mem


def test_chat_loop_keeps_its_plan_and_the_engine_reuses_the_prefix(tmp_path, backend):
    mem = _memory(tmp_path, backend)
    assert mem.prefix_slack == 0.25 and mem.ahead
    model = backend.model
    budget, reserve = 3000, 8
    kept = reused = 0
    prev_ids: list[int] = []
    for i in range(60, 72, 2):
        mem.add("user", _turn(i)["content"])
        ctx = mem.context(budget, reserve=reserve)
        st = mem.last_context_stats
        assert {"seal_ms", "plan_ms", "encode_wait_ms", "encode_ms", "pages_encoded", "context_ms"} <= set(st)
        assert ctx.plan.total_tokens <= budget - reserve
        prompt = backend.prompts().chat(ctx, session="ahead")
        if st["plan_kept"]:
            kept += 1
            # everything the last prompt held before its generation prompt is unchanged
            tail = len(backend.prompts().tokenizer.encode("<|Assistant|>:", add_special_tokens=False).ids)
            assert prompt.input_ids[: len(prev_ids) - tail] == prev_ids[:-tail]
        model.generate(**prompt.as_inputs(), max_new_tokens=2, eos_token_id=-1)
        if st["plan_kept"]:
            reused += 1
            assert model.last_generation.reused_tokens >= len(prev_ids) - 4
        prev_ids = list(prompt.input_ids)
        mem.add("assistant", _turn(i + 1)["content"])
        assert mem.wait_ahead(timeout=60)
    assert kept >= 3 and reused == kept


def test_background_worker_encodes_what_the_next_plan_shows(tmp_path, backend):
    mem = _memory(tmp_path, backend, n=50)
    mem.add("user", "hello")
    mem.context(2500, reserve=8)
    mem.add("assistant", "hi")  # schedules the worker: seal, then encode ahead
    assert mem.wait_ahead(timeout=60)
    targets = mem.ahead_targets(2500, 8)
    assert targets and all(mem.encoder.is_hot(p.content_hash, p.tier) for p in targets)
    # a re-plan now (a new budget) finds its pages encoded: nothing is encoded on the call's path
    mem.add("user", "again")
    before = mem.encoder.encoded
    ctx = mem.context(2500, reserve=8)
    assert mem.encoder.encoded - before == mem.last_context_stats["pages_encoded"]
    assert all(p.embeds is not None for p in ctx.pages)


def test_no_slack_plans_every_call_afresh(tmp_path, backend):
    mem = _memory(tmp_path, backend, n=40, prefix_slack=0.0, ahead=False)
    for i in range(40, 44):
        mem.add(["user", "assistant"][i % 2], _turn(i)["content"])
        mem.context(2500)
        assert mem.last_context_stats["plan_kept"] is False
    with pytest.raises(ValueError):
        _memory(tmp_path, backend, n=1, prefix_slack=1.5)


def test_grouped_prefill_matches_the_expert_loop(backend):
    model = backend.model
    ids = [0] + list(range(100, 400))
    model.configure_engine(grouped_prefill=False)
    loop = model.generate(ids, [], max_new_tokens=12, eos_token_id=-1, reuse=False)
    model.configure_engine(grouped_prefill=True)
    grouped = model.generate(ids, [], max_new_tokens=12, eos_token_id=-1, reuse=False)
    model.configure_engine()
    assert grouped == loop
