import importlib.util
from pathlib import Path


def test_chat_memory_example_runs(capsys):
    spec = importlib.util.spec_from_file_location("chat_memory", Path(__file__).parents[1] / "examples" / "chat_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--budget", "3000", "--turns", "100"])
    assert out["total_tokens"] <= 3000 and out["pages"] and out["text_turns"][-1] == 99
    assert "raw text" in capsys.readouterr().out


def _load(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_chat_agent_example_with_a_fake_model(tmp_path):
    import json
    from importlib import resources

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage

    from optimem.langchain import OpticalChatMessageHistory, OpticalCompressor

    mod = _load("chat_agent")
    received = []

    class Recording(GenericFakeChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kw):
            received.append(list(messages))
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kw)

    history = OpticalChatMessageHistory("agent", f"sqlite:///{tmp_path / 'a.db'}")
    rows = [json.loads(x) for x in resources.files("optimem").joinpath("data/example_chat.jsonl").read_text().splitlines()[1:101]]
    history.add_messages([HumanMessage(r["content"]) if r["role"] != "assistant" else AIMessage(r["content"]) for r in rows])
    inputs = iter(["What was my booking reference?", ""])
    out = []
    n = mod.chat_loop(Recording(messages=iter([AIMessage("QX7-4431Z")])), history,
                      OpticalCompressor(provider="openai", budget=4000), read=lambda _: next(inputs), write=out.append)
    assert n == 1 and out == ["assistant> QX7-4431Z"]
    sent = received[0]
    assert any(isinstance(m.content, list) for m in sent)  # aged turns as page images
    assert sent[-1].content == "What was my booking reference?"
    assert len(history.messages) == 102


def test_document_qa_example(tmp_path):
    mod = _load("document_qa")
    doc = tmp_path / "doc.md"
    doc.write_text("\n\n".join(f"# Part {i}\n\nWidget W-{i} weighs {i + 10} kg. " + "Filler text. " * 80 for i in range(20)))
    out = mod.main([str(doc), "How much does widget W-7 weigh?", "--store", f"sqlite:///{tmp_path / 'd.db'}"])
    assert out["pages"] and out["answer"] is None
