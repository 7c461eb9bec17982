"""`optimem bench large`: one huge turn (a pasted log) through `add` + `context()`, then questions.

Each size runs in a fresh spawned process so that its peak resident memory (`ru_maxrss`) is its own:
the process warms up (fonts, tokenizer, a first page), builds the text, adds it as the newest turn,
calls `context()` (which seals every page of it in batches and plans), then asks questions, each with
its own `context()`. Reported per size: pages sealed, seconds of the first `context()`, peak memory
and its growth over the warmed-up process, and what the plan made of the huge turn (its tail as text,
its earlier pages at a tier) on every call; any `PolicyError` is counted, not raised.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import tempfile
import time
from pathlib import Path
from typing import Any

_WORDS = "error warning info debug request response timeout retry worker queue deploy latency".split()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mb", type=float, nargs="+", default=[20.0], help="size of the huge turn, in millions of characters")
    p.add_argument("--budget", type=int, default=4096, help="context budget of every call")
    p.add_argument("--questions", type=int, default=3, help="questions asked after the huge turn, each with a context()")
    p.add_argument("--store", default=None, help="store URL (default: a SQLite file in a temporary folder)")


def pasted_log(chars: int, seed: int = 3) -> str:
    """A log-like text of about `chars` characters (timestamped lines of words)."""
    rng = random.Random(seed)
    lines, n, i = [], 0, 0
    while n < chars:
        line = f"2026-11-30 12:{i // 3600 % 60:02d}:{i // 60 % 60:02d}.{i % 60:02d} " + " ".join(
            rng.choice(_WORDS) for _ in range(10))
        lines.append(line)
        n += len(line) + 1
        i += 1
    return "\n".join(lines)[:chars]


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def one_turn(url: str, chars: int, budget: int, questions: int) -> dict[str, Any]:
    """The scenario, in this process (call it in a fresh one to measure its peak memory)."""
    from optimem import OpticalMemory
    from optimem.policies import PolicyError

    warm = OpticalMemory("warm", url)  # fonts, tokenizer, a first page: loaded before measuring
    warm.add("user", "warm up " * 200)
    warm.context(budget)
    text = pasted_log(chars)
    base = _peak_mb()
    mem = OpticalMemory("large", url)
    mem.add("user", "hi, here is the log of last night's incident")
    big = mem.add("user", text)
    calls: list[dict[str, Any]] = []
    errors: list[str] = []
    first_s = None
    for q in range(questions + 1):
        if q:
            mem.add("user" if q % 2 else "assistant", f"question {q}: what happened around line {q * 1000}?")
        t = time.perf_counter()
        try:
            ctx = mem.context(budget)
        except PolicyError as exc:
            errors.append(str(exc))
            continue
        took = time.perf_counter() - t
        first_s = took if first_s is None else first_s
        loc = ctx.plan.where(big)
        tail = next((x for x in ctx.turns if x.id == big), None)
        calls.append({
            "call": q, "seconds": round(took, 3), "total_tokens": ctx.plan.total_tokens, "kind": loc.kind,
            "tail_chars": len(tail.content) if tail else 0, "tail_is_end_of_turn": bool(tail and text.endswith(tail.content)),
            "pages_of_turn_shown": sum(1 for p in ctx.pages if big in p.turns),
        })
    return {
        "chars": len(text), "budget": budget, "pages_sealed": mem.store.next_page("large"),
        "first_context_s": round(first_s, 1) if first_s is not None else None,
        "base_mb": round(base, 1), "peak_mb": round(_peak_mb(), 1), "grown_mb": round(_peak_mb() - base, 1),
        "policy_errors": len(errors), "errors": errors[:3], "calls": calls,
    }


def _child(url: str, chars: int, budget: int, questions: int, out) -> None:
    try:
        out.put(one_turn(url, chars, budget, questions))
    except BaseException as exc:  # the parent reports it; a child's traceback alone would be lost
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def in_fresh_process(url: str, chars: int, budget: int, questions: int, timeout: float = 3600) -> dict[str, Any]:
    """`one_turn` in a spawned process (its own peak memory); its result document."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_child, args=(url, chars, budget, questions, out))
    p.start()
    try:
        result = out.get(timeout=timeout)
    finally:
        p.join(60)
        if p.is_alive():
            p.kill()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from optimem.progress import track

    rows, details = [], []
    with tempfile.TemporaryDirectory(prefix="optimem-large-") as tmp:
        for i, mb in track(list(enumerate(args.mb)), total=len(args.mb), unit="sizes"):
            url = args.store or f"sqlite:///{Path(tmp) / f'large-{i}.db'}"
            r = in_fresh_process(url, int(mb * 1_000_000), args.budget, args.questions)
            details.append(r)
            if "error" in r:
                rows.append({"mb": mb, "error": r["error"]})
                continue
            rows.append({"mb": mb, "pages": r["pages_sealed"], "first_context_s": r["first_context_s"],
                         "peak_mb": r["peak_mb"], "grown_mb": r["grown_mb"], "policy_errors": r["policy_errors"],
                         "tail_chars": r["calls"][0]["tail_chars"] if r["calls"] else 0})
    return {"budget": args.budget, "questions": args.questions, "table": rows, "runs": details,
            "note": "peak_mb is the whole process (Python, fonts, tokenizer, the text itself); grown_mb is over "
                    "the warmed-up process holding the text. Timings on a shared machine are noisy."}
