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
