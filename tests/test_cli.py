"""The `optimem` command as a user runs it: one-line errors (no tracebacks), output folders, progress on
stderr only, read-only commands that never create a store, `ask` output, `--version`, `--help`.

Most tests call `optimem.cli.main` in-process (fast); a few run the real console script through
`python -m optimem` to see exactly what a user sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from optimem.cli import main

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "optimem" / "data" / "example_chat.jsonl"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `optimem ARGV` in-process; (exit status, stdout, stderr). argparse exits via SystemExit."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def run(*argv: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """The console script in a fresh process, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "optimem", *argv], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def one_line_error(err: str, *must: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for m in must:
        assert m in lines[0], (m, lines[0])
    return lines[0]


@pytest.fixture
def chat(tmp_path) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(t) for t in [
        {"role": "user", "content": "My booking reference is QX7-4431Z."},
        {"role": "assistant", "content": "Noted: QX7-4431Z."},
    ]) + "\n")
    return path


# -- --version, --help -------------------------------------------------------------------------------
def test_version(capsys):
    from optimem import __version__

    rc, out, _ = cli(capsys, "--version")
    assert rc == 0 and out.strip() == f"optimem {__version__}"


def test_help_shows_defaults_and_every_argument_has_help(capsys):
    rc, out, _ = cli(capsys, "render", "--help")
    assert rc == 0 and "(default: large)" in out
    rc, out, _ = cli(capsys, "ask", "--help")
    assert "(default: 4096)" in out and "(default: 8)" in out
    rc, out, _ = cli(capsys, "plan", "--help")
    assert "(default: 6)" in out
    rc, out, _ = cli(capsys, "ingest", "--help")
    assert ".pdf" in out.split("positional arguments:")[1].split("options:")[0]  # FILE has help
    # every option and positional of every subcommand says what it is
    from optimem.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subs.choices.items():
        if name == "bench":
            continue  # benchmark options belong to each benchmark module
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"optimem {name}: {action.dest} has no help"


# -- render ------------------------------------------------------------------------------------------
def test_render_out_that_is_a_file_is_a_one_line_error(chat, tmp_path):
    target = tmp_path / "pages.png"
    target.write_bytes(b"not a folder")
    res = run("render", str(chat), "--out", str(target))
    assert res.returncode == 2
    one_line_error(res.stderr, "--out", "is an existing file")
    assert target.read_bytes() == b"not a folder"


def test_render_replaces_pages_of_an_earlier_run_and_keeps_other_files(capsys, chat, tmp_path):
    out = tmp_path / "pages"
    out.mkdir()
    (out / "page-0007-large.png").write_bytes(b"stale")  # an earlier, longer render
    (out / "notes.txt").write_text("mine")
    rc, stdout, err = cli(capsys, "render", str(chat), "--out", str(out), "--tier", "small", "--json")
    assert rc == 0
    pages = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "page-0000-small.png"]
    assert [Path(p["path"]).name for p in pages] == ["page-0000-small.png"]
    assert "removed 1 page" in err


def test_render_ratio_is_honest_when_images_cost_more(capsys, chat, tmp_path):
    rc, out, _ = cli(capsys, "render", str(chat), "--out", str(tmp_path / "p"))
    assert rc == 0
    ratio = out.split("(")[-1].split(")")[0]
    assert ratio.endswith("x") and 0 < float(ratio[:-1]) < 1, out  # e.g. "0.05x", never "0.0x"


def test_render_progress_goes_to_stderr_and_json_stays_clean(tmp_path):
    part = tmp_path / "part.jsonl"
    part.write_text("\n".join(BUNDLED.read_text().splitlines()[:50]) + "\n")
    res = run("render", str(part), "--out", str(tmp_path / "p"), "--tier", "tiny", "--json",
              env={"TTY_COMPATIBLE": "1", "COLUMNS": "160"})
    assert res.returncode == 0, res.stderr
    pages = json.loads(res.stdout)  # stdout is exactly one JSON document
    assert len(pages) > 5
    assert "pages/s" in res.stderr and f"{len(pages)} pages" in res.stderr  # count and rate
    assert "Traceback" not in res.stderr


def test_render_bad_inputs_are_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "render", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"))
    assert rc == 2 and one_line_error(err, "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "user", "content": "ok"}\n{nope\n')
    rc, _, err = cli(capsys, "render", str(bad), "--out", str(tmp_path / "o"))
    assert rc == 2 and one_line_error(err, "line 2")
    rc, _, err = cli(capsys, "render", str(bad), "--out", str(tmp_path / "o"), "--font-px", "0")
    assert rc == 2 and "--font-px: must be at least 4, got 0" in err and "Traceback" not in err


# -- demo --------------------------------------------------------------------------------------------
def test_demo_out_that_is_a_file_is_a_one_line_error(tmp_path):
    target = tmp_path / "demo-out"
    target.write_text("x")
    res = run("demo", "--out", str(target), "--limit", "2")
    assert res.returncode == 2
    one_line_error(res.stderr, "--out", "is an existing file")


def test_demo_reuses_its_folder(capsys, tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for _ in range(2):  # the second run replaces the first run's store and sheet
        rc, stdout, _ = cli(capsys, "demo", "--out", str(out), "--limit", "12", "--json")
        assert rc == 0
        doc = json.loads(stdout)
        assert doc["turns"] == 12
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("demo.db-")) == [
        "contact_sheet.png", "demo.db", "keep.txt"]


# -- stats: read-only ----------------------------------------------------------------------------------
def test_stats_never_creates_a_store(capsys, tmp_path, monkeypatch):
    typo = tmp_path / "typo.db"
    rc, _, err = cli(capsys, "stats", "--store", f"sqlite:///{typo}")
    assert rc == 2 and one_line_error(err, "does not exist") and not typo.exists()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    rc, _, err = cli(capsys, "stats")
    assert rc == 2 and one_line_error(err, "no store yet", "--store")
    assert not (tmp_path / "xdg").exists()


def test_stats_of_a_session_that_does_not_exist(capsys, tmp_path):
    from optimem.store import open_store

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = open_store(url)
    store.append_turns("alice", [{"role": "user", "content": "hi", "metadata": {}, "pinned": False, "created": 0.0}])
    store.close()
    rc, _, err = cli(capsys, "stats", "--store", url, "--session", "nosuch")
    assert rc == 2 and one_line_error(err, "'nosuch' does not exist", "alice")
    rc, out, _ = cli(capsys, "stats", "--store", url, "--session", "alice", "--json")
    assert rc == 0 and json.loads(out)["sessions"][0]["turns"] == 1


# -- roles: one normalisation for render, plan and OpticalMemory.add -----------------------------------
def test_langchain_roles_are_accepted_the_same_way_everywhere(capsys, tmp_path):
    from optimem.renderers import load_transcript

    path = tmp_path / "lc.jsonl"
    path.write_text('{"role": "human", "content": "My code is QX7."}\n{"role": "AI", "content": "Noted."}\n')
    assert [t.role for t in load_transcript(path)] == ["user", "assistant"]
    rc, out, _ = cli(capsys, "render", str(path), "--out", str(tmp_path / "p"), "--json")
    assert rc == 0 and json.loads(out)[0]["spans"][0]["turn"] == 0
    rc, out, _ = cli(capsys, "plan", str(path), "--budget", "2000", "--json")
    assert rc == 0 and json.loads(out)["segments"][-1]["turns"] == [0, 1]
    from optimem.errors import InputError
    from optimem.memory import OpticalMemory

    mem = OpticalMemory("lc", "sqlite://")
    mem.add("human", "My code is QX7.")
    mem.add("AI", "Noted.")
    assert [t.role for t in mem.turns()] == ["user", "assistant"]
    with pytest.raises(InputError, match="unknown role 'narrator'"):
        mem.add("narrator", "b")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "user", "content": "a"}\n{"role": "narrator", "content": "b"}\n')
    for cmd in (["render", str(bad), "--out", str(tmp_path / "q")], ["plan", str(bad), "--budget", "2000"]):
        rc, _, err = cli(capsys, *cmd)
        assert rc == 2 and one_line_error(err, "line 2", "unknown role 'narrator'", "human")


# -- plan --------------------------------------------------------------------------------------------
def test_plan_explanation_lists_each_turn_once_and_prints_honest_ratios(capsys, chat):
    from optimem.policies import Ladder, PageInfo, Policy, TierCost, TurnInfo, plan

    rc, out, _ = cli(capsys, "plan", str(BUNDLED), "--budget", "8000", "--json")
    assert rc == 0
    seen: list[int] = [t for s in json.loads(out)["segments"] for t in s["turns"]]
    assert len(seen) == len(set(seen))  # no turn under two segments
    rc, out, _ = cli(capsys, "plan", str(BUNDLED), "--budget", "8000")
    listed = []
    for line in out.splitlines()[:-1]:
        head = line.split(":")[0].split(" (")[0]
        if head.startswith("turn"):
            a, _, b = head.split(" ")[1].partition("-")
            listed += range(int(a), int(b or a) + 1)
    assert len(listed) == len(set(listed)), out
    rc, out, _ = cli(capsys, "plan", str(chat), "--budget", "2000")
    assert "(no page shown)" in out and "0.0x" not in out
    ladder = Ladder((TierCost("large", 421, 0.99), TierCost("tiny", 73, 0.86)))
    p = plan([TurnInfo(i, 5) for i in range(10)], [PageInfo(0, 0, 7, 40)], 4000, ladder,
             Policy(fill_budget=False))  # the default would show these turns as text: the budget holds them
    assert "(0.095x, the images cost more than their text)" in p.explain()


# -- --model -----------------------------------------------------------------------------------------
def test_model_path_that_does_not_exist_is_named(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["chat", "--model", "./nomodel"], ["chat", "--model", str(tmp_path / "models" / "x")]):
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and one_line_error(err, argv[-1], "does not exist") and "hub" not in err
    (tmp_path / "weights.safetensors").write_bytes(b"")
    rc, _, err = cli(capsys, "chat", "--model", "weights.safetensors")
    assert rc == 2 and one_line_error(err, "is a file", "checkpoint folder")
    from optimem.errors import CheckpointError
    from optimem.model.runtime import checkpoint_dir

    with pytest.raises(CheckpointError, match="does not exist"):  # the library says the same, without the CLI
        checkpoint_dir("/models/DeepSeek-OCR-missing")


# -- ingest and ask ----------------------------------------------------------------------------------
def _labeled_pdf(path: Path) -> None:
    """Four pages whose printed labels are i, ii, 1, 2 (front matter in roman numerals)."""
    pikepdf = pytest.importorskip("pikepdf")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    plain = path.with_name("plain.pdf")
    lines = ["Preface: how to read this manual.", "Contents and safety notes.",
             "Pump P-100. The flange bolts need a torque of 45 Nm. The pump runs at 1450 rpm.",
             "Valve V-7 opens at 3 bar."]
    with PdfPages(plain) as pdf:
        for line in lines:
            fig = plt.figure(figsize=(8.5, 11))
            fig.text(0.1, 0.9, line, fontsize=12)
            pdf.savefig(fig)
            plt.close(fig)
    with pikepdf.open(plain) as pdf:
        pdf.Root.PageLabels = pikepdf.Dictionary(Nums=[0, pikepdf.Dictionary(S=pikepdf.Name.r), 2,
                                                       pikepdf.Dictionary(S=pikepdf.Name.D)])
        pdf.save(path)


@pytest.fixture
def ingested(tmp_path, capsys) -> str:
    pdf = tmp_path / "manual.pdf"
    _labeled_pdf(pdf)
    url = f"sqlite:///{tmp_path / 'docs.db'}"
    rc, out, _ = cli(capsys, "ingest", str(pdf), "--session", "manual", "--store", url, "--json")
    assert rc == 0 and json.loads(out)["pages"] == 4
    return url


def test_ask_without_a_model_shows_the_printed_label_and_the_best_passage(capsys, ingested):
    rc, out, err = cli(capsys, "ask", "What torque do the flange bolts need?", "--session", "manual",
                       "--store", ingested, "-k", "2")
    assert rc == 0, err
    first = out.splitlines()[:2]
    assert first[0].startswith("manual.pdf p. 3 (printed \"1\"): large, bm25")  # 0-based index 2, printed "1"
    assert first[1].strip() == "The flange bolts need a torque of 45 Nm."
    assert "no answer generated" in out and "--model" in out
    assert "DEBUG" not in err and "bm25s" not in err  # no library debug line on the console
    rc, out, _ = cli(capsys, "ask", "flange bolts torque", "--session", "manual", "--store", ingested, "--json")
    top = json.loads(out)["pages"][0]
    assert (top["page_number"], top["label"], top["source"]) == (3, "1", "manual.pdf")
    assert "45 Nm" in top["snippet"]


def test_ask_bad_options_name_what_the_user_typed(capsys, ingested, tmp_path):
    rc, _, err = cli(capsys, "ask", "flange torque", "--session", "manual", "--store", ingested, "--budget", "50")
    line = one_line_error(err, "budget 50 is below the 256 tokens the answer reserves", "use at least")
    assert "-206" not in line
    rc, _, err = cli(capsys, "ask", "flange torque", "--session", "manual", "--store", ingested, "-k", "0")
    assert rc == 2 and "argument -k: must be at least 1, got 0" in err
    rc, _, err = cli(capsys, "ask", "flange", "--session", "nosuch", "--store", ingested)
    assert rc == 2 and one_line_error(err, "'nosuch' does not exist", "manual")
    typo = tmp_path / "typo.db"
    rc, _, err = cli(capsys, "ask", "flange", "--session", "manual", "--store", f"sqlite:///{typo}")
    assert rc == 2 and one_line_error(err, "does not exist") and not typo.exists()


def test_ingest_shows_a_page_count_and_rate_on_stderr_only(tmp_path):
    pdf = tmp_path / "manual.pdf"
    _labeled_pdf(pdf)
    res = run("ingest", str(pdf), "--session", "m", "--store", f"sqlite:///{tmp_path / 'd.db'}", "--json",
              env={"TTY_COMPATIBLE": "1", "COLUMNS": "160"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["new_pages"] == 4
    assert "4/4 pages" in res.stderr and "pages/s" in res.stderr
    res = run("ingest", str(tmp_path / "missing.pdf"), "--session", "m", "--store", f"sqlite:///{tmp_path / 'e.db'}")
    assert res.returncode == 2 and not (tmp_path / "e.db").exists()
    one_line_error(res.stderr, "no such file")


def test_ask_with_a_model_shows_encode_and_generate_progress(capsys, ingested, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from optimem.model import DeepseekOCR, tiny_config

    ckpt = tmp_path / "tiny"
    DeepseekOCR.random(tiny_config()).save_pretrained(ckpt)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stderr counts as a terminal: bars are drawn
    monkeypatch.setenv("COLUMNS", "160")
    rc, out, err = cli(capsys, "ask", "flange bolts torque", "--session", "manual", "--store", ingested,
                       "--model", str(ckpt), "-k", "2", "--max-new-tokens", "3")
    assert rc == 0, err
    assert "[p.1" in out and "\x1b" not in out  # the answer cites the printed label; no bar on stdout
    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err)
    assert "loading" in err and re.search(r"(\d+)/\1 pages", err) and "pages/s" in err
    assert "3/3 tokens" in err and "tokens/s" in err


# -- bench -------------------------------------------------------------------------------------------
def test_bench_shows_progress_on_stderr_and_json_on_stdout(tmp_path):
    res = run("bench", "plan", "--pages", "200", "--repeats", "1", "--json",
              env={"TTY_COMPATIBLE": "1", "COLUMNS": "160"}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["benchmark"] == "plan"
    assert "bench plan" in res.stderr and "Traceback" not in res.stderr


def test_track_counts_inside_an_activity_and_is_silent_outside(capsys, monkeypatch):
    from optimem.progress import activity, track

    assert list(track(range(3), total=3)) == [0, 1, 2]  # no bar, no output
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    with activity("work"):
        assert sum(track(range(5), total=5, unit="pages")) == 10
    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().err)
    assert "5/5 pages" in err and "pages/s" in err
