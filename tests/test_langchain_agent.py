"""A real LangChain 1.x agent (`create_agent`, a checkpointer, a tool, a scripted tool-calling model)
with `OpticalMemoryMiddleware`: many turns, async, two threads, streaming. Every request the model
receives is checked: tool calls and their results together, nothing sent twice, within budget."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402

from optimem.bench.agent import (_wire, check_request, leading_share, make_tool, pages_change, pages_kept,  # noqa: E402
                                 scripted_model, user_turn)
from optimem.langchain import OpticalCompressor, OpticalMemoryMiddleware  # noqa: E402


def _agent(provider: str, budget: int, seen: list, **kw):
    comp = OpticalCompressor(provider=provider, budget=budget, **kw)
    model = scripted_model(lambda msgs, kw: seen.append(msgs))
    return comp, create_agent(model, tools=[make_tool()], system_prompt="You are a careful research assistant.",
                              middleware=[OpticalMemoryMiddleware(comp)], checkpointer=InMemorySaver())


def _report(msgs: list) -> dict:
    return next(m.response_metadata["optimem"] for m in msgs if "optimem" in m.response_metadata)


def _check(seen: list, budget: int) -> None:
    for msgs in seen:
        assert check_request(msgs) == {"split": 0, "duplicated": 0}
        rep = _report(msgs)
        assert rep["tokens"] <= budget, rep
        # no unit both on a page and as text: page labels end before the text part
        pages = [b["text"] for m in msgs if isinstance(m.content, list) for b in m.content
                 if isinstance(b, dict) and b.get("type") == "text" and b["text"].startswith("[page ")]
        first_text = rep["units"] - rep["text_units"]
        last_turns = [int(p.split("turns ")[1].split(",")[0].split("-")[1]) for p in pages]
        if "cut_unit" in rep:  # a long unit: its earlier part on pages before its cut, its tail as text
            unit, page = rep["cut_unit"]
            assert first_text == unit and all(int(p[len("[page "):].split(":")[0]) < page for p in pages)
            assert all(t <= unit for t in last_turns)
        else:
            assert all(t < first_text for t in last_turns)


@pytest.mark.parametrize("provider,budget", [("anthropic", 4000), ("openai", 8000)])
def test_agent_with_tools_for_60_turns(provider, budget):
    seen: list = []
    comp, agent = _agent(provider, budget, seen)
    cfg = {"configurable": {"thread_id": "t1"}, "recursion_limit": 50}
    for i in range(60):
        result = agent.invoke({"messages": [{"role": "user", "content": user_turn(i)}]}, cfg)
    assert len(seen) > 120
    _check(seen, budget)
    assert any(m for m in seen[-1] if isinstance(m.content, list))  # old units reach the model as pages
    assert len(result["messages"]) > 200  # the agent's state keeps the full text
    reports = [_report(m) for m in seen]
    # the plan always fits with pages (leaving out the oldest when the asking message's tool loop is
    # more text than planned): no call falls back to text only
    assert not any(r["degraded"] for r in reports)
    # provider prefix caches: between consecutive calls whose pages did not change tier (nor leave),
    # the previous request's bytes start the next one (the boundary page is a function of the page)
    shares = [leading_share(_wire(None, a), _wire(None, b)) for a, b in zip(seen, seen[1:])
              if pages_change(a, b) == "unchanged"]
    assert len(shares) > len(seen) // 3 and min(shares) >= 0.9, sorted(shares)[:5]
    # and when units move from text onto pages, every page sent before is sent again unchanged, in
    # front: a unit continuing past the page the text part starts on is cut there (its tail is text)
    # instead of the page being drawn without it
    kept = [pages_kept(_wire(None, a), _wire(None, b), a) for a, b in zip(seen, seen[1:])
            if pages_change(a, b) == "added"]
    kept = [k for k in kept if k is not None]
    assert len(kept) > 10 and min(kept) == 1.0, sorted(kept)[:5]
    assert any("cut_unit" in r for r in reports)


def test_agent_async_and_two_threads():
    seen: list = []
    comp, agent = _agent("gemini", 5000, seen)

    async def run():
        for i in range(12):  # both threads at once
            await asyncio.gather(*(agent.ainvoke({"messages": [{"role": "user", "content": f"{t}: " + user_turn(i)}]},
                                                 {"configurable": {"thread_id": t}, "recursion_limit": 50})
                                   for t in ("alice", "bob")))

    asyncio.run(run())
    _check(seen, 5000)
    threads = {k.split(":", 1)[1] for k in comp._threads}
    assert threads == {"alice", "bob"}
    for msgs in seen:  # a thread's request never holds the other thread's turns
        texts = " ".join(str(m.content) for m in msgs if not isinstance(m.content, list))
        assert not ("alice:" in texts and "bob:" in texts)


def test_work_ahead_changes_no_request():
    """The background work between calls (storing the newest unit, sealing, drawing the next images)
    only moves work earlier: the requests are byte for byte those made without it, and a call that
    finds the worker busy on its thread waits for it or takes over."""
    sent = {}
    for ahead in (True, False):
        seen: list = []
        comp, agent = _agent("anthropic", 4000, seen, ahead=ahead)
        cfg = {"configurable": {"thread_id": "w"}, "recursion_limit": 50}
        for i in range(30):
            agent.invoke({"messages": [{"role": "user", "content": user_turn(i)}]}, cfg)
        assert comp.wait_ahead(timeout=60)
        sent[ahead] = [_wire(None, m) for m in seen]
        assert (comp.ahead_stats.get("done", 0) > 0) is ahead and not comp.ahead_stats.get("failed")
    assert len(sent[True]) > 60 and any(b"base64" in w for w in sent[True])
    assert sent[True] == sent[False]


def test_agent_streams_with_the_middleware():
    seen: list = []
    _, agent = _agent("openai", 6000, seen)
    cfg = {"configurable": {"thread_id": "s"}, "recursion_limit": 50}
    for i in range(8):
        chunks = list(agent.stream({"messages": [{"role": "user", "content": user_turn(i)}]}, cfg, stream_mode="updates"))
        assert chunks
    _check(seen, 6000)


def test_chat_agent_example_builds_a_persistent_agent(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("chat_agent", Path(__file__).parents[1] / "examples" / "chat_agent.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seen: list = []
    agent = mod.build_agent(scripted_model(lambda msgs, kw: seen.append(msgs)), provider="openai", budget=6000,
                            store=f"sqlite:///{tmp_path / 'a.db'}", tools=[make_tool()])
    lines = iter([user_turn(i) for i in range(6)] + [""])
    out: list = []
    assert mod.agent_loop(agent, "example", read=lambda _: next(lines), write=out.append) == 6
    assert len(out) == 6 and all("Here is what I found" in o for o in out)
    _check(seen, 6000)
