"""Requests as the providers' own LangChain packages build them (offline: payloads only, no calls).
Needs the optional `providers` extra (langchain-openai, langchain-anthropic, quicktok-v1); skipped
without it. langchain-openai's token counter runs offline once `optimem.bench.tiktoken_offline` has
put tiktoken's o200k_base where tiktoken looks (rebuilt from quicktok-v1's vocabulary, checked
against tiktoken's pinned SHA-256); langchain-anthropic's counter calls the API, so it is not used."""

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


def test_tiktoken_encodings_rebuilt_offline_match_the_pinned_hash(tmp_path, monkeypatch):
    pytest.importorskip("quicktok")
    tiktoken = pytest.importorskip("tiktoken")
    from optimem.bench import tiktoken_offline as tko

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert tko.ensure() == {"o200k_base": "written", "cl100k_base": "written"}
    assert tko.ensure() == {"o200k_base": "cached", "cl100k_base": "cached"}
    tko.cache_path("cl100k_base").write_bytes(b"corrupted")  # a bad cache file is replaced, never used
    assert tko.ensure(("cl100k_base",)) == {"cl100k_base": "written"}
    import tiktoken.registry

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # load from this cache, not a loaded one
    assert tiktoken.get_encoding("o200k_base").encode("hello world") == [24912, 2375]


def test_budget_holds_by_langchain_openais_own_count():
    lco = pytest.importorskip("langchain_openai")
    pytest.importorskip("quicktok")
    from optimem.bench.agent import openai_count
    from optimem.bench.tiktoken_offline import ensure

    assert ensure(("o200k_base",))["o200k_base"] in ("cached", "written")
    counter = lco.ChatOpenAI(model="gpt-4o", api_key="sk-test")
    for budget in (3000, 6000):
        out = OpticalCompressor(provider="openai", model="gpt-4o", budget=budget, token_counter=counter).invoke(_messages())
        rep = out[0].response_metadata["optimem"]
        assert rep["images"] > 0 and not rep["degraded"]
        # the whole request (page images by detail and size, labels, framing) by langchain-openai
        assert openai_count(counter, out, []) == rep["tokens"] <= budget


def test_gemini3_request_sets_media_resolution_per_page():
    lcg = pytest.importorskip("langchain_google_genai")
    out = OpticalCompressor(provider="gemini", model="gemini-3-pro-preview", budget=6000).invoke(_messages())
    rep = out[0].response_metadata["optimem"]
    req = lcg.ChatGoogleGenerativeAI(model="gemini-3-pro-preview", google_api_key="x")._prepare_request(out)
    images = [p for c in req["contents"] for p in c.parts if p.inline_data is not None]
    levels = [p.media_resolution.level.value for p in images]
    assert images and set(levels) <= {"MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM"}
    # priced as sent: 280 a low page, 560 a medium one (Gemini 3's fixed counts)
    assert rep["image_tokens"] == sum(280 if lv.endswith("LOW") else 560 for lv in levels)
    # Gemini 2.x takes no per-part resolution: none is sent
    out2 = OpticalCompressor(provider="gemini", model="gemini-2.5-flash", budget=6000).invoke(_messages())
    assert not any("media_resolution" in b for m in out2 if isinstance(m.content, list) for b in m.content
                   if isinstance(b, dict))
