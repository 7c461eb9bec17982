"""`optimem bench pipeline`: the page pipeline as every consumer meets it, on this CPU, no model.

- chat memory: the bundled conversation added turn by turn to an `OpticalMemory` on a SQLite file;
  after each turn `context(budget)` plus the tier image of every page it shows (what a native or
  LangChain consumer needs before it can call a model). p50 / p95 / max per turn, and the cold
  `context()` of the whole session from a fresh memory object (pages already sealed in the store,
  nothing cached in the process), as a new worker process meets it;
- document QA: `DocumentMemory.ask` on the bundled manual without a model (retrieval + plan + the
  tier images of the chosen pages), cold (first question of a fresh object) and warm.

- the LangChain compressor: `OpticalCompressor.invoke` on a growing message list (the bundled
  conversation cycled to `--messages`), called after every new message as an agent loop calls it;
  warm per-invoke time around message 150 and at the end (the cost should be flat in the length).

Agent-level figures (tools, providers, budgets) are `optimem bench agent`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path
from optimem.progress import track


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=int, default=8192, help="context budget in tokens (default: 8192)")
    p.add_argument("--turns", type=int, default=0, help="turns of the bundled conversation to use (default: all)")
    p.add_argument("--questions", type=int, default=20, help="document-QA questions timed warm (default: 20)")
    p.add_argument("--messages", type=int, default=800,
                   help="messages for the LangChain compressor run, 0 to skip (default: 800)")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(1000 * xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 2)


def _summary(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": _pct(xs, 0.5), "p95_ms": _pct(xs, 0.95), "max_ms": round(1000 * max(xs), 2),
            "mean_ms": round(1000 * statistics.fmean(xs), 2)}


def _bundled_chat() -> list[dict]:
    text = resources.files("optimem.data").joinpath("example_chat.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _context_with_images(mem, budget: int):
    ctx = mem.context(budget)
    images = ctx.images()
    return ctx, images


def bench_chat(db: Path, budget: int, turns: int) -> dict:
    from optimem.memory import OpticalMemory

    chat = _bundled_chat()
    if turns:
        chat = chat[:turns]
    url = f"sqlite:///{db}"
    mem = OpticalMemory("bench-pipeline", url)
    per_turn = []
    shown = 0
    for t in track(chat, total=len(chat), unit="turns", description="memory turn by turn"):
        mem.add(t["role"], t["content"])
        start = time.perf_counter()
        ctx, images = _context_with_images(mem, budget)
        per_turn.append(time.perf_counter() - start)
        shown = len(images)
    fresh = OpticalMemory("bench-pipeline", url)
    start = time.perf_counter()
    _context_with_images(fresh, budget)
    cold = time.perf_counter() - start
    return {"turns": len(chat), "budget": budget, "pages_sealed": fresh.stats().get("pages"),
            "pages_shown_last": shown, "per_turn": _summary(per_turn),
            "per_turn_after_50": _summary(per_turn[50:]) if len(per_turn) > 60 else None,
            "cold_context_ms": round(1000 * cold, 1)}


def bench_docqa(db: Path, questions: int) -> dict:
    from optimem.docqa import DocumentMemory

    manual = resources.files("optimem.data").joinpath("manual.md")
    qs = json.loads(resources.files("optimem.data").joinpath("manual_questions.json").read_text(encoding="utf-8"))
    qs = [q["question"] if isinstance(q, dict) else q for q in (qs["questions"] if isinstance(qs, dict) else qs)]
    url = f"sqlite:///{db}"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "manual.md"
        path.write_bytes(manual.read_bytes())
        start = time.perf_counter()
        report = DocumentMemory("bench-manual", url).ingest(path)
        ingest = time.perf_counter() - start
    docs = DocumentMemory("bench-manual", url)

    def ask(q: str) -> float:
        start = time.perf_counter()
        docs.ask(q, budget=4096)
        return time.perf_counter() - start

    cold = ask(qs[0])
    warm = [ask(q) for q in (qs * ((questions // max(len(qs), 1)) + 1))[:questions]]
    return {"pages": report.pages, "ingest_s": round(ingest, 2), "ask_cold_ms": round(1000 * cold, 1),
            "ask_warm": _summary(warm)}


def bench_compressor(messages: int, budget: int) -> dict:
    try:
        from langchain_core.messages import AIMessage, HumanMessage

        from optimem.langchain import OpticalCompressor
    except ImportError:
        return {"skipped": "langchain-core is not installed (pip install 'optimem[langchain]')"}
    chat = _bundled_chat()
    msgs = []
    for i in range(messages):
        t = chat[i % len(chat)]
        msgs.append((HumanMessage if t["role"] == "user" else AIMessage)(t["content"]))
    comp = OpticalCompressor(provider="anthropic", budget=budget, thread_id="bench")
    times = []
    for n in track(range(1, messages + 1), total=messages, unit="invokes", description="compressor"):
        start = time.perf_counter()
        comp.invoke(msgs[:n])
        times.append(time.perf_counter() - start)
    around = lambda k: _summary(times[max(0, k - 25):k + 25])  # noqa: E731
    return {"messages": messages, "budget": budget, "provider": "anthropic",
            "at_150": around(150) if messages >= 175 else None,
            "at_end": _summary(times[-50:]), "first_ms": round(1000 * times[0], 1)}


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as d:
        chat = bench_chat(Path(d) / "chat.db", args.budget, args.turns)
        docqa = bench_docqa(Path(d) / "docs.db", args.questions)
    compressor = bench_compressor(args.messages, args.budget) if args.messages else {"skipped": "--messages 0"}
    table = [
        {"measure": "context() + tier images per turn, p50 ms", "value": chat["per_turn"]["p50_ms"], "target": "<= 30"},
        {"measure": "context() + tier images per turn, p95 ms", "value": chat["per_turn"]["p95_ms"], "target": "<= 80"},
        {"measure": "cold context() of the whole session, ms", "value": chat["cold_context_ms"], "target": "<= 1000"},
        {"measure": "DocumentMemory.ask warm p50 ms", "value": docqa["ask_warm"]["p50_ms"], "target": "<= 30"},
    ]
    if compressor.get("at_150"):
        table.append({"measure": "OpticalCompressor.invoke warm p50 ms, message 150", "value": compressor["at_150"]["p50_ms"],
                      "target": "<= 50"})
    if compressor.get("at_end"):
        table.append({"measure": f"OpticalCompressor.invoke warm p50 ms, message {compressor['messages']}",
                      "value": compressor["at_end"]["p50_ms"], "target": "<= 100"})
    return {"chat": chat, "docqa": docqa, "compressor": compressor, "table": table}
