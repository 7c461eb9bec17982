import importlib.util
from pathlib import Path


def test_chat_memory_example_runs(capsys):
    spec = importlib.util.spec_from_file_location("chat_memory", Path(__file__).parents[1] / "examples" / "chat_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--budget", "3000", "--turns", "100"])
    assert out["total_tokens"] <= 3000 and out["pages"] and out["text_turns"][-1] == 99
    assert "raw text" in capsys.readouterr().out
