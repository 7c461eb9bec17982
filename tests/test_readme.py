"""Every code example in README.md runs as written.

- Each ```python block runs in a fresh interpreter, in a temporary folder, with a timeout. A block that
  needs something this machine may not have says so in a comment line, `# needs: model` (a checkpoint,
  a GPU or a hosted chat model); those are skipped with that reason.
- Each ```bash block whose first line starts with `optimem ` runs line by line through bash in the same
  kind of folder; a line that passes `--model` needs a checkpoint and is skipped.
- The examples name the files a user would have: `chat.jsonl` (a transcript), `report.pdf` and
  `report.md` (documents). The folder holds small ones of each, made here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's bin: `optimem` resolves as it does for a user
TIMEOUT = 120

_BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)


def blocks(lang: str) -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in _BLOCK.finditer(text) if m.group(1) == lang]


def needs(code: str) -> str | None:
    m = re.search(r"#\s*needs:\s*([^\n]+)", code)
    return m.group(1).strip() if m else None


def optimem_lines(code: str) -> list[str]:
    return [line for line in code.splitlines() if line.strip().startswith("optimem ")]


PYTHON = blocks("python")
BASH = [(line, code) for line, code in blocks("bash") if code.lstrip().startswith("optimem ")]


def _pdf(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for i, line in enumerate(["Pump P-100: the flange bolts need a torque of 45 Nm.",
                                  "Valve V-7 opens at 3 bar.", "Inspect the seals every 6 weeks."]):
            fig = plt.figure(figsize=(8.5, 11))
            fig.text(0.1, 0.9, line, fontsize=14)
            fig.text(0.5, 0.05, str(i + 1), fontsize=10)
            pdf.savefig(fig)
            plt.close(fig)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The files the README's examples name, made once."""
    folder = tmp_path_factory.mktemp("readme-inputs")
    bundled = (ROOT / "optimem" / "data" / "example_chat.jsonl").read_text().splitlines()
    (folder / "chat.jsonl").write_text("\n".join(bundled[:40]) + "\n")
    (folder / "report.md").write_text((ROOT / "optimem" / "data" / "manual.md").read_text()[:20000])
    _pdf(folder / "report.pdf")
    return folder


@pytest.fixture
def workdir(tmp_path, inputs) -> Path:
    for f in inputs.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def _env(workdir: Path) -> dict[str, str]:
    # the user's default store lives under XDG_DATA_HOME: keep it in the temporary folder
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "XDG_DATA_HOME": str(workdir / "xdg"), "PYTHONPATH": str(ROOT)}


def test_the_readme_has_examples_and_the_markers_are_used():
    assert len(PYTHON) >= 5 and len(BASH) >= 3
    for line, code in PYTHON + BASH:
        assert "needs:" not in code or needs(code), f"README.md line {line}: malformed `# needs:` marker"


@pytest.mark.parametrize("line,code", PYTHON, ids=[f"python-line-{n}" for n, _ in PYTHON])
def test_python_block_runs(line, code, workdir):
    reason = needs(code)
    if reason:
        pytest.skip(f"README.md line {line} needs {reason}")
    res = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=_env(workdir), capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert res.returncode == 0, f"README.md line {line}:\n{code}\n--- stderr ---\n{res.stderr[-3000:]}"


@pytest.mark.parametrize("line,code", BASH, ids=[f"bash-line-{n}" for n, _ in BASH])
def test_bash_block_runs(line, code, workdir):
    ran = 0
    for cmd in optimem_lines(code):
        if "--model" in cmd or needs(cmd):
            continue  # a checkpoint is needed
        res = subprocess.run(["bash", "-c", cmd], cwd=workdir, env=_env(workdir), capture_output=True, text=True,
                             timeout=TIMEOUT)
        assert res.returncode == 0, f"README.md line {line}: {cmd}\n--- stderr ---\n{res.stderr[-3000:]}"
        assert "Traceback" not in res.stderr
        if "--json" in cmd:
            json.loads(res.stdout)  # one JSON document, nothing else
        ran += 1
    if not ran:
        pytest.skip(f"README.md line {line}: every command needs a model")
