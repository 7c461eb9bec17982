"""Long messages through the LangChain compressor: a pasted log (40-50k characters) and a huge tool
result are remembered as pages like any old unit; while such a message is the newest (or still in
the current agent turn) its earlier part is shown as pages and only its tail as text. Every request
stays within budget, with pages, and never falls back to text only."""

from __future__ import annotations

import random

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from optimem.bench.agent import check_request, tool_rounds_since_user
from optimem.langchain import OpticalCompressor

RANK = {"large": 0, "base": 1, "small": 2, "tiny": 3}  # sharpest first


def _log(lines: int = 700, seed: int = 1) -> str:
    rnd = random.Random(seed)
    return "\n".join(f"2026-11-30T12:{i // 60:02d}:{i % 60:02d} worker-{rnd.randint(1, 9)} INFO request "
                     f"id={rnd.getrandbits(48):x} took {rnd.randint(1, 900)} ms" for i in range(lines))


def _report(msgs: list) -> dict:
    return next(m.response_metadata["optimem"] for m in msgs if "optimem" in m.response_metadata)


def _pages(msgs: list) -> list[tuple[int, int, int, str]]:
    """(page, first turn, last turn, tier) from the page labels, in request order."""
    out = []
    for m in msgs:
        if isinstance(m.content, list):
            for b in m.content:
                if isinstance(b, dict) and b.get("type") == "text" and b["text"].startswith("[page "):
                    head, tier = b["text"][1:-1].rsplit(", ", 1)
                    page, turns = head[len("page "):].split(": turns ")
                    t0, t1 = turns.split("-")
                    out.append((int(page), int(t0), int(t1), tier))
    return out


def _images(msgs: list) -> int:
    return sum(1 for m in msgs if isinstance(m.content, list) for b in m.content
               if isinstance(b, dict) and b.get("type") in ("image", "image_url"))


def _check_pages(msgs: list) -> list[tuple[int, int, int, str]]:
    pages = _pages(msgs)
    assert pages and _images(msgs) == len(pages)
    idx = [p for p, *_ in pages]
    assert idx == list(range(idx[0], idx[0] + len(idx)))  # the oldest leave first: a run up to the newest
    ranks = [RANK[t] for *_, t in pages]
    assert ranks == sorted(ranks, reverse=True)  # newer pages never coarser than older ones
    return pages


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini-3-pro-preview"])
def test_pasted_log_then_questions_is_remembered_on_pages(provider):
    log = _log()
    assert 40_000 < len(log) < 50_000
    comp = OpticalCompressor(provider=provider, budget=4000)
    msgs = [HumanMessage("hi, I will paste a log"), AIMessage("sure"), HumanMessage("here is the log:\n" + log)]
    cfg = {"configurable": {"thread_id": "log"}}
    for q in range(6):
        out = comp.invoke(msgs, cfg)
        rep = _report(out)
        assert rep["tokens"] <= 4000 and not rep["degraded"] and rep["cut_messages"] == 0, rep
        pages = _check_pages(out)
        assert any(t0 <= 2 <= t1 for _, t0, t1, _ in pages)  # the log's pages are shown on every call
        if q == 0:
            # the log is the asking message: its earlier part on pages, its tail (its real end) as text
            assert rep["cut_unit"][0] == 2 and pages[-1][2] == 2
            tail = out[-1]
            assert isinstance(tail, HumanMessage) and len(tail.content) < len(log) // 4
            body = tail.content.split("\n", 1)[1]
            assert tail.content.startswith("[the earlier part") and log.endswith(body) and len(body) > 500
        else:
            assert out[-1].content == msgs[-1].content  # the newest question, as written
            texts = [m.content for m in out if isinstance(m.content, str)]
            assert sum(t.endswith(log[-200:]) for t in texts) <= 1  # the log's end at most once as text
        assert comp.wait_ahead(timeout=60)
        msgs += [AIMessage(f"answer {q}"), HumanMessage(f"question {q}: which request took longest?")]


def test_huge_log_inside_a_tool_loop_keeps_the_pair_and_the_budget():
    """The pasted log is the asking message and the agent's tool loop follows it: the log is cut
    (pages, then its tail as text), the tool call and its result stay together after it."""
    log = _log(600, seed=2)
    comp = OpticalCompressor(provider="anthropic", budget=4000)
    msgs = [HumanMessage("Here is a log, find the slow requests:\n" + log),
            AIMessage("", tool_calls=[{"name": "grep", "args": {"q": "took 9"}, "id": "g1"}]),
            ToolMessage("12 lines match", tool_call_id="g1")]
    out = comp.invoke(msgs, {"configurable": {"thread_id": "loop"}})
    rep = _report(out)
    assert rep["tokens"] <= 4000 and not rep["degraded"], rep
    assert check_request(out) == {"split": 0, "duplicated": 0}
    _check_pages(out)
    assert rep["cut_unit"][0] == 0
    assert [type(m) for m in out[-3:]] == [HumanMessage, AIMessage, ToolMessage]
    assert out[-3].content.startswith("[the earlier part") and log.endswith(out[-3].content.split("\n", 1)[1])


BIG = 40_000


def _agent(budget: int, seen: list):
    from langchain.agents import create_agent
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver

    from optimem.langchain import OpticalMemoryMiddleware

    @tool
    def read_file(path: str) -> str:
        """Read a file and return its contents."""
        return _log(BIG // 69 + 1, seed=3)[:BIG]

    @tool
    def count(word: str) -> str:
        """Count a word in the last file read."""
        return f"{word}: 17"

    class Script(BaseChatModel):
        n: int = 0

        @property
        def _llm_type(self) -> str:
            return "script"

        def bind_tools(self, tools, **kwargs):
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(list(messages))
            self.n += 1
            last = messages[-1]
            done = tool_rounds_since_user(messages)
            if isinstance(last, (HumanMessage, ToolMessage)) and done < 2:
                name, args = ("read_file", {"path": "app.log"}) if done == 0 else ("count", {"word": "worker-3"})
                msg = AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"c{self.n}", "type": "tool_call"}])
            else:
                msg = AIMessage(f"The log has {self.n} interesting lines.")
            return ChatResult(generations=[ChatGeneration(message=msg)])

    comp = OpticalCompressor(provider="anthropic", budget=budget)
    agent = create_agent(Script(), tools=[read_file, count], system_prompt="You read logs.",
                         middleware=[OpticalMemoryMiddleware(comp)], checkpointer=InMemorySaver())
    return comp, agent


def test_huge_tool_output_in_an_agent_loop():
    seen: list = []
    comp, agent = _agent(4000, seen)
    cfg = {"configurable": {"thread_id": "tools"}, "recursion_limit": 30}
    for i in range(4):
        agent.invoke({"messages": [{"role": "user", "content": f"Turn {i}: read app.log and count worker-3."}]}, cfg)
    assert len(seen) == 12  # per turn: ask -> read_file -> count -> answer
    full = _log(BIG // 69 + 1, seed=3)[:BIG]
    for k, msgs in enumerate(seen):
        rep = _report(msgs)
        assert rep["tokens"] <= 4000 and not rep["degraded"], (k, rep)
        assert check_request(msgs) == {"split": 0, "duplicated": 0}, k
        results = [m for m in msgs if isinstance(m, ToolMessage)]
        assert all(len(m.content) < BIG // 4 for m in results)  # never the whole output as text
        if k >= 1:
            _check_pages(msgs)  # the output's earlier part (and, later, older turns) on pages
        if k % 3 == 1:  # the model reads the result it just asked for: its call, then the output's tail
            assert isinstance(msgs[-2], AIMessage) and msgs[-2].tool_calls[0]["name"] == "read_file"
            assert msgs[-1].content.startswith("[the earlier part")
            assert full.endswith(msgs[-1].content.split("\n", 1)[1])
            assert _pages(msgs)[-1][2] == rep["cut_unit"][0] == rep["units"] - 1


def test_text_suffix_policy_makes_a_cut_turn_the_oldest_text():
    """The compressor's policy (`text_suffix`): after a cut turn no older turn is text, so the request's
    text part is one suffix of the conversation (the chat memory keeps older short turns as text)."""
    from optimem.ladders import DEEPSEEK_OCR_V1
    from optimem.policies import PageInfo, Policy, TailInfo, TurnInfo, plan

    turns = [TurnInfo(i, 40) for i in range(3)] + [TurnInfo(3, 20_000), TurnInfo(4, 30), TurnInfo(5, 30)]
    pages = [PageInfo(0, 0, 3, 1000, partial_last=True)] + [PageInfo(i, 3, 3, 1000, partial_last=i < 19)
                                                             for i in range(1, 20)]
    pages.append(PageInfo(20, 3, 5, 100))
    tails = [TailInfo(3, p, 1000 * (20 - p)) for p in (17, 18, 19)]
    chat = plan(turns, pages, 4096, DEEPSEEK_OCR_V1.costs, tails=tails)
    suffix = plan(turns, pages, 4096, DEEPSEEK_OCR_V1.costs, tails=tails, policy=Policy(text_suffix=True))
    for p in (chat, suffix):
        assert p.tails and p.tails[0][0] == 3 and p.total_tokens <= 4096
    text = lambda p: sorted(t for s in p.segments if s.kind == "text" for t in s.turns)  # noqa: E731
    assert text(chat)[0] < 3  # the chat memory: short turns before the log stay text
    assert text(suffix) == [3, 4, 5]


@pytest.mark.parametrize("sizes", [(BIG, 200), (BIG, BIG)])
def test_parallel_tool_results_cut_inside_one_unit(sizes):
    """Two calls at once, one or both results huge: the cut falls inside the unit's results. The AI
    message stays whole, a result wholly before the cut says where it is, the one the cut falls in
    keeps its rest, a later one is as written."""
    outs = [_log(size // 69 + 1, seed=s)[:size] for s, size in zip((5, 6), sizes)]
    msgs = [HumanMessage("compare the two logs"),
            AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": p}, "id": p} for p in ("a", "b")]),
            ToolMessage(outs[0], tool_call_id="a"), ToolMessage(outs[1], tool_call_id="b")]
    out = OpticalCompressor(provider="openai", budget=4000).invoke(msgs, {"configurable": {"thread_id": "par"}})
    rep = _report(out)
    assert rep["tokens"] <= 4000 and not rep["degraded"] and rep["cut_unit"][0] == 1, rep
    assert check_request(out) == {"split": 0, "duplicated": 0}
    _check_pages(out)
    ai, ta, tb = out[-3:]
    assert isinstance(ai, AIMessage) and len(ai.tool_calls) == 2
    if sizes[1] == BIG:  # the cut is in the second result: the first is on the pages
        assert ta.content.startswith("[on the pages above") and len(ta.content) < 100
        assert tb.content.startswith("[the earlier part") and outs[1].endswith(tb.content.split("\n", 1)[1])
    else:
        assert ta.content.startswith("[the earlier part") and outs[0].endswith(ta.content.split("\n", 1)[1])
        assert tb.content == outs[1]
