"""Provider pricing, the LangChain history on real stores, the compressor as a Runnable, and the
native chat model. Agent runs (create_agent with tools) are in test_langchain_agent.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from importlib import resources

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from optimem.errors import ConfigError, InputError, ModelError
from optimem.langchain import OpticalChatMessageHistory, OpticalCompressor
from optimem.providers import (
    anthropic_image_tokens,
    gemini_image_tokens,
    get_provider,
    openai_image_tokens,
    openai_patch_tokens,
    page_png,
)


def test_provider_formulas_match_documented_examples():
    assert openai_image_tokens(1024, 1024, "high") == 765
    assert openai_image_tokens(2048, 4096, "high") == 1105
    assert openai_image_tokens(4096, 4096, "low") == 85
    assert openai_image_tokens(1024, 1024, "high", base=70, tile=140) == 630  # gpt-5
    assert openai_patch_tokens(1024, 1024, 1.0) == 1024 and openai_patch_tokens(1800, 2400, 1.0) <= 1536
    assert anthropic_image_tokens(1092, 1092) == 39 * 39  # 28 px patches, kept as is
    assert anthropic_image_tokens(200, 200) == 8 * 8
    assert anthropic_image_tokens(4000, 4000) == anthropic_image_tokens(1072, 1072)  # scaled to ~1.15 MP
    assert gemini_image_tokens(384, 384) == 258 and gemini_image_tokens(1024, 1024) == 1032
    assert [t.tokens for t in get_provider("deepseek-ocr").ladder().tiers] == [421, 273, 111, 73]
    with pytest.raises(ConfigError, match="known: openai, anthropic, gemini, deepseek-ocr"):
        get_provider("mystery")


def test_pricing_per_model_family():
    assert get_provider("openai").family == "gpt-4o"
    assert get_provider("openai", "gpt-4o-mini").page_tokens("tiny") == 2833  # its own base price
    assert get_provider("gpt-5").page_tokens("large") == 70 + 140 * 4
    assert get_provider("anthropic", "claude-opus-4-7").page_tokens("large") > get_provider("anthropic").page_tokens("large")
    assert get_provider("gemini-3-pro-preview").family == "gemini-3"
    assert get_provider("openai").tier_detail("tiny") == "low" and get_provider("anthropic").tier_detail("tiny") is None


def test_pages_are_small_grey_pngs():
    from PIL import Image

    master = Image.new("L", (1280, 1280), 255)
    master.paste(0, (100, 100, 900, 140))
    png = page_png(master, "tiny")
    img = Image.open(io.BytesIO(png))
    assert img.size == (512, 512) and img.mode == "P" and len(png) < 4000
    assert page_png(master, "tiny") == png  # deterministic bytes: provider prompt caches can hit


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


def _images(msgs):
    return [m for m in msgs if isinstance(m.content, list)
            and any(isinstance(b, dict) and b.get("type") in ("image", "image_url") for b in m.content)]


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_compressor_sends_aged_turns_as_images_within_budget(provider):
    msgs = _conversation()
    comp = OpticalCompressor(provider=provider, budget=6000)
    out = comp.invoke(msgs)
    assert isinstance(out[0], SystemMessage)
    assert _images(out), "aged turns should arrive as page images"
    assert out[-1] is msgs[-1]  # the newest turn as text, unchanged
    report = out[0].response_metadata["optimem"]
    assert report["tokens"] <= 6000 and report["provider"] == provider and not report["degraded"]
    if provider == "openai":  # detail is sent explicitly, and priced as sent
        blocks = [b for m in _images(out) for b in m.content if b.get("type") == "image_url"]
        assert blocks and all(b["image_url"]["detail"] in ("low", "high") for b in blocks)
    model = GenericFakeChatModel(messages=iter([AIMessage("ok")]))
    assert (comp | model).invoke(msgs).content == "ok"


def test_second_call_costs_only_new_messages_and_sends_identical_pages():
    msgs = _conversation(100)
    comp = OpticalCompressor(provider="anthropic", budget=8000, thread_id="t")
    outs = [comp.invoke(msgs[:90])]
    st = next(iter(comp._threads.values()))
    stored = len(st.keys)
    outs += [comp.invoke(msgs[:n]) for n in (91, 92, 93, 94)]
    assert len(st.keys) == stored + 4  # one new unit appended per call, nothing re-added

    def same_prefix(a, b):
        n = 0
        for x, y in zip(_images(a)[0].content, _images(b)[0].content):
            if x != y:
                break
            n += 1
        return n

    # header and pages byte-identical between consecutive calls, except when old pages leave (in batches)
    prefixes = [same_prefix(a, b) for a, b in zip(outs, outs[1:])]
    assert sum(p >= 9 for p in prefixes) >= 2, prefixes


def test_compressor_accepts_what_trim_messages_accepts():
    comp = OpticalCompressor(provider="openai", budget=4000)
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), MessagesPlaceholder("history"), ("human", "{q}")])
    value = prompt.invoke({"history": [("human", "hi"), ("ai", "hello")], "q": "and now?"})
    out = comp.invoke(value)
    assert [m.type for m in out] == ["system", "human", "ai", "human"]
    assert [m.type for m in comp.invoke([("human", "hi"), {"role": "assistant", "content": "yo"}, "plain"])] == ["human", "ai", "human"]
    assert comp.invoke("just a string")[0].content == "just a string"
    with pytest.raises(InputError, match="no options"):
        comp.invoke(value, verbose=True)
    with pytest.raises(InputError):
        comp.invoke(42)
    with pytest.raises(Exception, match="extra"):
        OpticalCompressor(provider="openai", budgett=4000)
    with pytest.raises(ValueError, match="budget must be a positive"):
        OpticalCompressor(provider="openai", budget=0)
    with pytest.raises(ValueError, match="unknown provider"):
        OpticalCompressor(provider="mystery")


def test_compressor_is_traced_and_reports_through_callbacks():
    from langchain_core.callbacks import BaseCallbackHandler

    events = []

    class Handler(BaseCallbackHandler):
        def on_chain_start(self, serialized, inputs, **kw):
            events.append(("start", kw.get("name")))

        def on_custom_event(self, name, data, **kw):
            events.append((name, data["tokens"]))

    comp = OpticalCompressor(provider="gemini", budget=5000)
    comp.invoke(_conversation(80), config={"callbacks": [Handler()], "configurable": {"thread_id": "traced"}})
    assert ("start", "OpticalCompressor") in events
    assert any(e[0] == "optimem_compression" and e[1] <= 5000 for e in events)
    assert not hasattr(comp, "last_plan")

    async def stream_events():
        return [e async for e in comp.astream_events(_conversation(60), version="v2")]

    names = {e.get("name") for e in asyncio.run(stream_events())}
    assert "OpticalCompressor" in names and "optimem_compression" in names


def test_threads_are_kept_apart_and_history_edits_rebuild():
    comp = OpticalCompressor(provider="anthropic", budget=6000)
    a, b = _conversation(100), _conversation(60)[:1] + [HumanMessage(f"other {i}") for i in range(50)]
    comp.invoke(a, config={"configurable": {"thread_id": "a"}})
    comp.invoke(b, config={"configurable": {"thread_id": "b"}})
    assert comp.wait_ahead(timeout=60)
    keys = {k.split(":", 1)[1]: len(st.keys) for k, st in comp._threads.items()}
    assert keys == {"a": 100, "b": 50}  # every unit stored, the newest ahead of the next call
    # the same conversation again (its newest unit already stored ahead) is no history change
    again = comp.invoke(a, config={"configurable": {"thread_id": "a"}})
    assert again[0].response_metadata["optimem"]["reset"] is False and again[-1].content == a[-1].content
    # a history cut upstream (as a summariser does) rebuilds the thread instead of mixing histories
    out = comp.invoke(a[:1] + a[40:], config={"configurable": {"thread_id": "a"}})
    assert out[0].response_metadata["optimem"]["reset"] is True
    assert comp.wait_ahead(timeout=60)
    assert len(next(st for k, st in comp._threads.items() if k.endswith(":a")).keys) == 61


def test_tool_units_never_split_and_oversized_messages_are_cut_not_refused():
    msgs = [SystemMessage("sys")]
    for i in range(40):
        msgs.append(HumanMessage(f"question {i} " + "word " * 30))
        msgs.append(AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": str(i)}, "id": f"c{i}"}]))
        msgs.append(ToolMessage("result " * 200, tool_call_id=f"c{i}"))
        msgs.append(AIMessage([{"type": "reasoning", "reasoning": "hmm " * 50}, {"type": "text", "text": f"answer {i}"}]))
    msgs.append(HumanMessage("huge " * 20000))  # alone larger than the budget
    out = OpticalCompressor(provider="anthropic", budget=3000).invoke(msgs)
    rep = out[0].response_metadata["optimem"]
    # the huge message is cut like a long turn of the chat memory: its earlier pages, then its tail
    assert rep["tokens"] <= 3000 and not rep["degraded"] and rep["pages"] > 0 and rep["cut_unit"][0] == 120
    assert out[-1].content.startswith("[the earlier part") and out[-1].content.endswith("huge ")
    calls = {tc["id"] for m in out if isinstance(m, AIMessage) for tc in m.tool_calls}
    results = {m.tool_call_id for m in out if isinstance(m, ToolMessage)}
    assert calls == results
    # what cannot be cut or paged (a system prompt that leaves no room) still never fails: the newest
    # messages are cut to fit
    out = OpticalCompressor(provider="anthropic", budget=3000).invoke([SystemMessage("rule " * 2990), *msgs[1:]])
    rep = out[0].response_metadata["optimem"]
    assert rep["degraded"] and rep["cut_messages"] >= 1 and rep["pages"] == 0


def test_input_images_priced_by_real_size():
    from PIL import Image

    from optimem.langchain.compressor import image_tokens

    buf = io.BytesIO()
    Image.new("RGB", (1500, 300), "white").save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    oa = get_provider("openai")
    assert image_tokens({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}", "detail": "high"}}, oa) \
        == openai_image_tokens(1500, 300, "high")
    assert image_tokens({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}", "detail": "low"}}, oa) == 85
    assert image_tokens({"type": "image", "base64": data, "mime_type": "image/png"}, get_provider("anthropic")) \
        == anthropic_image_tokens(1500, 300)


def test_token_counter_hook_is_used():
    seen = []

    def counter(msgs):
        seen.append(len(msgs))
        return sum(len(str(m.content)) // 3 for m in msgs)

    out = OpticalCompressor(provider="openai", budget=5000, token_counter=counter).invoke(_conversation(60))
    assert seen and out[0].response_metadata["optimem"]["tokens"] <= 5000


def test_token_counter_is_asked_per_message_only_when_additive():
    """A counter that is a constant plus a count per message (chat models' counters) is asked once
    per distinct message and summed; any other counter is asked for the whole list every time. The
    request's count is the counter's count of the whole request either way."""
    import math

    calls = []

    def additive(msgs):
        calls.append(len(msgs))
        return 3 + sum(4 + len(str(m.content)) // 4 for m in msgs)

    def rounded_once(msgs):  # not additive: one rounding over the whole text
        return math.ceil(sum(len(str(m.content)) for m in msgs) / 7)

    for counter, additive_expected in ((additive, True), (rounded_once, False)):
        comp = OpticalCompressor(provider="openai", budget=5000, token_counter=counter, ahead=False)
        convo = _conversation(60)
        for n in (40, 50, 60):
            seen = len(calls)
            out = comp.invoke(convo[:n], {"configurable": {"thread_id": "c"}})
            asked = calls[seen:]
            rep = out[0].response_metadata["optimem"]
            text = [m.model_copy(update={"content": [b for b in m.content if b.get("type") == "text"]})
                    if isinstance(m.content, list) else m for m in out]
            assert rep["text_tokens"] == counter(text) and rep["tokens"] <= 5000
            if counter is additive and n > 40:  # asked about new messages only, one at a time
                assert asked and max(asked) <= 1 and len(asked) < 40, asked
        assert comp._additive is additive_expected


def test_caps_drop_oldest_pages_and_report():
    out = OpticalCompressor(provider="openai", budget=30000, max_images=3).invoke(_conversation(120))
    rep = out[0].response_metadata["optimem"]
    assert rep["images"] <= 3 and rep["capped_pages"] > 0


def test_lcel_history_example_sends_old_turns_as_images(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("lcel_history", Path(__file__).parents[1] / "examples" / "lcel_history.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    received = []

    class Recording(GenericFakeChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            received.append(list(messages))
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    model = Recording(messages=iter([AIMessage("QX7-4431Z")]))
    chain, history = mod.build(model, store=f"sqlite:///{tmp_path / 'h.db'}")
    history("s").add_messages(_conversation(120)[1:])
    out = chain.invoke({"question": "What was my booking reference?"}, config={"configurable": {"session_id": "s"}})
    assert out.content == "QX7-4431Z"
    sent = received[-1]
    assert isinstance(sent[0], SystemMessage) and _images(sent)
    assert sent[-1].content == "What was my booking reference?"
    assert len(history("s").messages) == 122
    assert mod.main()


def test_chat_deepseek_ocr_native_model_threads(tmp_path):
    pytest.importorskip("torch")
    from optimem.backends import DeepseekOCRBackend
    from optimem.langchain import ChatDeepSeekOCR
    from optimem.memory import OpticalMemory
    from optimem.model import DeepseekOCR, tiny_config

    mem = OpticalMemory("native-lc", f"sqlite:///{tmp_path / 'n.db'}", backend=DeepseekOCRBackend(DeepseekOCR.random(tiny_config())))
    chat = ChatDeepSeekOCR(memory=mem, budget=3000, max_new_tokens=3)
    msgs = _conversation(30)[1:] + [HumanMessage("What was the booking reference?")]
    reply = chat.invoke(msgs)
    assert isinstance(reply, AIMessage)
    assert len(mem.turns()) == 32 and mem.turns()[-1].content == reply.content
    # another thread's turns go to its own session, not the default one
    chat.invoke([HumanMessage("hello from b")], config={"configurable": {"thread_id": "thread-b"}})
    assert len(mem.turns()) == 32 and len(chat.memory_for("thread-b").turns()) == 2
    chunks = list(chat.stream([HumanMessage("again")], config={"configurable": {"thread_id": "thread-b"}}))
    assert chunks and chat.memory_for("thread-b").turns()[-1].content == "".join(c.content for c in chunks)
    assert asyncio.run(chat.ainvoke([HumanMessage("and async")])).type == "ai"
    with pytest.raises(ModelError, match="cannot call tools"):
        chat.bind_tools([])


def test_message_names_are_drawn_on_the_pages_and_kept_in_history(tmp_path):
    msgs = [(HumanMessage if i % 2 == 0 else AIMessage)(f"Turn {i}: " + "we spoke about the garden and the puppy. " * 12,
                                                         name=["Caroline", "Melanie"][i % 2]) for i in range(60)]
    comp = OpticalCompressor(provider="anthropic", budget=3000, thread_id="named")
    comp.invoke(msgs)
    st = next(iter(comp._threads.values()))
    assert [t.metadata.get("name") for t in st.mem.turns()][:2] == ["Caroline", "Melanie"]
    pages = st.mem.store.get_pages(st.mem.session, with_png=False)
    assert pages and "Caroline:" in pages[0].text and "Melanie:" in pages[0].text
    history = OpticalChatMessageHistory("h", f"sqlite:///{tmp_path / 'h.db'}")
    history.add_messages(msgs[:2])
    assert [m.name for m in history.messages] == ["Caroline", "Melanie"]

