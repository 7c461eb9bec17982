"""Provider image-token formulas, the LangChain history on real stores, and the compressor."""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from optimem.errors import ConfigError
from optimem.langchain import OpticalChatMessageHistory, OpticalCompressor
from optimem.providers import anthropic_image_tokens, gemini_image_tokens, get_provider, openai_image_tokens


def test_provider_formulas_match_documented_examples():
    assert openai_image_tokens(1024, 1024, "high") == 765
    assert openai_image_tokens(2048, 4096, "high") == 1105
    assert openai_image_tokens(4096, 4096, "low") == 85
    assert anthropic_image_tokens(1092, 1092) == 1590
    assert anthropic_image_tokens(200, 200) == 54
    assert gemini_image_tokens(384, 384) == 258 and gemini_image_tokens(1024, 1024) == 1032
    assert [t.tokens for t in get_provider("deepseek-ocr").ladder().tiers] == [421, 273, 111, 73]
    with pytest.raises(ConfigError, match="known: openai, anthropic, gemini, deepseek-ocr"):
        get_provider("mystery")


def test_history_round_trip(store_url):
    h = OpticalChatMessageHistory("lc-session", store_url)
    msgs = [SystemMessage("be brief"), HumanMessage("hi"), AIMessage("hello", additional_kwargs={"x": 1}),
            ToolMessage("42", tool_call_id="call-1")]
    h.add_messages(msgs)
    back = h.messages
    assert [type(m) for m in back] == [type(m) for m in msgs]
    assert back[2].additional_kwargs == {"x": 1} and back[3].tool_call_id == "call-1"
    asyncio.run(h.aadd_messages([HumanMessage("again")]))
    assert asyncio.run(h.aget_messages())[-1].content == "again"
    h.clear()
    assert h.messages == []


def _conversation(n: int = 120):
    path = resources.files("optimem").joinpath("data/example_chat.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[1 : n + 1]]
    cls = {"user": HumanMessage, "assistant": AIMessage, "tool": HumanMessage}
    return [SystemMessage("You are helpful.")] + [cls[r["role"]](r["content"]) for r in rows]


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_compressor_sends_aged_turns_as_images_within_budget(provider):
    msgs = _conversation()
    comp = OpticalCompressor(provider=provider, budget=6000)
    out = comp.invoke(msgs)
    assert isinstance(out[0], SystemMessage)
    images = [m for m in out if isinstance(m.content, list) and any(b.get("type") == "image" for b in m.content)]
    assert images, "aged turns should arrive as page images"
    assert out[-1] is msgs[-1]  # the newest turn as text, unchanged
    report = out[0].additional_kwargs["optimem"]
    assert report["total_tokens"] <= 6000 and report["provider"] == provider
    # what a model receives: the fake model records its input
    model = GenericFakeChatModel(messages=iter([AIMessage("ok")]))
    assert (comp | model).invoke(msgs).content == "ok"


def test_non_text_messages_pass_through_and_are_kept():
    msgs = _conversation(60)
    tool_msg = AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "c1"}])
    msgs.insert(5, tool_msg)
    out = OpticalCompressor(provider="anthropic", budget=4000).invoke(msgs)
    assert tool_msg in out


class RecordingFakeModel(GenericFakeChatModel):
    """A fake chat model that keeps what it was sent."""

    received: list = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.received.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def _images(msgs):
    return [m for m in msgs if isinstance(m.content, list) and any(b.get("type") == "image" for b in m.content)]


def test_lcel_history_example_sends_old_turns_as_images(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("lcel_history", Path(__file__).parents[1] / "examples" / "lcel_history.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = RecordingFakeModel(messages=iter([AIMessage("QX7-4431Z")]), received=[])
    chain, history = mod.build(model, store=f"sqlite:///{tmp_path / 'h.db'}")
    history("s").add_messages(_conversation(120)[1:])
    out = chain.invoke({"question": "What was my booking reference?"}, config={"configurable": {"session_id": "s"}})
    assert out.content == "QX7-4431Z"
    sent = model.received[-1]
    assert isinstance(sent[0], SystemMessage) and _images(sent)
    assert sent[-1].content == "What was my booking reference?"  # the new question arrives as text, last
    order = [i for i, m in enumerate(sent) if m in _images(sent)]
    assert order == sorted(order) and max(order) < len(sent) - 1
    assert len(history("s").messages) == 122  # the chain recorded the question and the answer
    assert mod.main()  # the script itself runs


def test_chat_deepseek_ocr_native_model(tmp_path):
    from optimem.backends import DeepseekOCRBackend
    from optimem.langchain import ChatDeepSeekOCR
    from optimem.memory import OpticalMemory
    from optimem.model import DeepseekOCR, tiny_config

    mem = OpticalMemory("native-lc", f"sqlite:///{tmp_path / 'n.db'}", backend=DeepseekOCRBackend(DeepseekOCR.random(tiny_config())))
    chat = ChatDeepSeekOCR(memory=mem, budget=3000, max_new_tokens=3)
    msgs = _conversation(30)[1:] + [HumanMessage("What was the booking reference?")]
    reply = chat.invoke(msgs)
    assert isinstance(reply, AIMessage)
    turns = mem.turns()
    assert len(turns) == 32 and turns[-2].content == "What was the booking reference?" and turns[-1].content == reply.content
    assert list(chat.stream([HumanMessage("again")]))  # stream works (one chunk)
    assert asyncio.run(chat.ainvoke([HumanMessage("and async")])).type == "ai"


def test_agent_middleware_compresses_each_model_call():
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent

    from optimem.langchain import optical_memory_middleware

    model = RecordingFakeModel(messages=iter([AIMessage("done")]), received=[])
    agent = create_agent(model, tools=[], middleware=[optical_memory_middleware(OpticalCompressor(provider="gemini", budget=5000))])
    msgs = _conversation(120)[1:]
    result = agent.invoke({"messages": msgs})
    assert result["messages"][-1].content == "done"
    assert _images(model.received[-1]) and len(result["messages"]) == len(msgs) + 1  # state keeps full text
