"""Requests as the providers' own LangChain packages build them (offline: payloads only, no calls).
Needs the optional `providers` extra (langchain-openai, langchain-anthropic); skipped without it.
Their token counters are not used: langchain-openai's downloads tiktoken encodings at run time and
langchain-anthropic's calls the API, neither of which works offline."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from optimem.langchain import OpticalCompressor


def _messages():
    from test_langchain import _conversation

    return _conversation(60) + [HumanMessage("look it up"),
                                AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "c1"}]),
                                ToolMessage("result text", tool_call_id="c1"), HumanMessage("thanks")]


def test_openai_payload_keeps_detail_on_every_page():
    lco = pytest.importorskip("langchain_openai")
    out = OpticalCompressor(provider="openai", budget=6000).invoke(_messages())
    payload = lco.ChatOpenAI(model="gpt-4o", api_key="sk-test")._get_request_payload(out)
    images = [c for m in payload["messages"] if isinstance(m.get("content"), list) for c in m["content"]
              if c.get("type") == "image_url"]
    assert images and all(c["image_url"]["detail"] in ("low", "high") for c in images)
    roles = [m["role"] for m in payload["messages"]]
    assert roles[-3:] == ["assistant", "tool", "user"]


def test_anthropic_payload_has_base64_images_and_whole_tool_pairs():
    lca = pytest.importorskip("langchain_anthropic")
    out = OpticalCompressor(provider="anthropic", budget=6000).invoke(_messages())
    payload = lca.ChatAnthropic(model="claude-sonnet-4-5", api_key="x")._get_request_payload(out)
    blocks = [c for m in payload["messages"] if isinstance(m.get("content"), list) for c in m["content"]]
    images = [c for c in blocks if c.get("type") == "image"]
    assert images and all(c["source"]["type"] == "base64" and c["source"]["media_type"] == "image/png" for c in images)
    assert sum(c.get("type") == "tool_use" for c in blocks) == sum(c.get("type") == "tool_result" for c in blocks) == 1
