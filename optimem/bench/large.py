"""`optimem bench large`: one huge turn (a pasted log) through `add` + `context()`, then questions.

Each size runs in a fresh spawned process so that its peak resident memory (`ru_maxrss`) is its own:
the process warms up (fonts, tokenizer, a first page), builds the text, adds it as the newest turn,
calls `context()` (which seals every page of it in batches and plans), then asks questions, each with
its own `context()`. Reported per size: pages sealed, seconds of the first `context()`, peak memory
and its growth over the warmed-up process, and what the plan made of the huge turn (its tail as text,
its earlier pages at a tier) on every call; any `PolicyError` is counted, not raised.

With `--plan-mb` and `--render-mb` it also runs the CLI on files of that size: `optimem plan` of a
transcript ending in a huge turn, and `optimem render` of a one-line Markdown file, each in its own
process, with that process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
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
    p.add_argument("--plan-mb", type=float, default=0.0,
                   help="also time `optimem plan` of a transcript ending in a turn this large (0: skip)")
    p.add_argument("--render-mb", type=float, default=0.0,
                   help="also time `optimem render` of a one-line Markdown file this large (0: skip)")


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
    """This process's resident high-water mark (VmHWM), MB."""
    import resource

    status = _status_kb()
    if "VmHWM" in status:
        return status["VmHWM"] / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def _status_kb() -> dict[str, int]:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, _, v in (ln.partition(":") for ln in lines) if v.strip().endswith("kB")}


def _reset_peak() -> float:
    """Start the high-water mark again from what is resident now (writing 5 to clear_refs), so the
    peak counts the scenario, not building its input; returns the resident MB now (the base)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return _peak_mb()  # cannot reset: the base is the high-water mark so far (the growth is then low)
    return _status_kb().get("VmRSS", 0) / 1024


def one_turn(url: str, chars: int, budget: int, questions: int, run_id: str = "") -> dict[str, Any]:
    """The scenario, in this process (call it in a fresh one to measure its peak memory). Sessions
    are named with `run_id`, so runs against one store (`--store`) never share a session."""
    from optimem import OpticalMemory
    from optimem.policies import PolicyError

    warm = OpticalMemory(f"warm{run_id}", url)  # fonts, tokenizer, a first page: loaded before measuring
    warm.add("user", "warm up " * 200)
    warm.context(budget)
    text = pasted_log(chars)
    base = _reset_peak()  # building the text peaks at several times its size: not the scenario's
    session = f"large{run_id}"
    mem = OpticalMemory(session, url)
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
        "chars": len(text), "budget": budget, "pages_sealed": mem.store.next_page(session),
        "first_context_s": round(first_s, 1) if first_s is not None else None,
        "base_mb": round(base, 1), "peak_mb": round(_peak_mb(), 1), "grown_mb": round(_peak_mb() - base, 1),
        "policy_errors": len(errors), "errors": errors[:3], "calls": calls,
    }


def _child(url: str, chars: int, budget: int, questions: int, run_id: str, out) -> None:
    try:
        out.put(one_turn(url, chars, budget, questions, run_id))
    except BaseException as exc:  # the parent reports it; a child's traceback alone would be lost
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def in_fresh_process(url: str, chars: int, budget: int, questions: int, timeout: float = 3600,
                     run_id: str = "") -> dict[str, Any]:
    """`one_turn` in a spawned process (its own peak memory); its result document, or one with an
    `error` when the child died without a word (killed for memory, say) or ran past `timeout`."""
    import queue

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_child, args=(url, chars, budget, questions, run_id, out))
    p.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return out.get(timeout=1)
            except queue.Empty:
                if not p.is_alive():
                    try:  # it may have put its result just before exiting
                        return out.get(timeout=1)
                    except queue.Empty:
                        return {"error": f"the measuring process exited with code {p.exitcode} and no result"}
                if time.monotonic() > deadline:
                    return {"error": f"the measuring process ran past {timeout:.0f} s"}
    finally:
        p.join(60)
        if p.is_alive():
            p.kill()


_PEAK = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, r.returncode, "
         "round(time.perf_counter() - t, 1)); sys.stdout.write(r.stdout); sys.stderr.write(r.stderr[-2000:])")


def cli_peak(*args: str, timeout: float = 3600) -> tuple[int, int, float, str, str]:
    """Run `optimem ARGS` in its own process: (its peak MB, exit status, seconds, stdout, stderr tail)."""
    out = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "optimem", *args],
                         capture_output=True, text=True, timeout=timeout)
    head, _, stdout = out.stdout.partition("\n")
    peak, rc, secs = head.split()
    return int(peak), int(rc), float(secs), stdout, out.stderr


def one_line_markdown(chars: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    words = "alpha beta gamma delta **bold** `code` epsilon zeta eta theta".split()
    parts, n = [], 0
    while n < chars:
        w = rng.choice(words)
        parts.append(w)
        n += len(w) + 1
    return " ".join(parts)[:chars]


def cli_runs(tmp: Path, plan_mb: float, render_mb: float, budget: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if plan_mb:
        rows = [{"role": "user", "content": "hi, here is the log"}, {"role": "assistant", "content": "go ahead"},
                {"role": "user", "content": pasted_log(int(plan_mb * 1_000_000))}]
        path = tmp / "large.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        del rows
        peak, rc, secs, stdout, err = cli_peak("plan", str(path), "--budget", str(budget), "--json")
        plan = json.loads(stdout) if rc == 0 else {}
        out["plan"] = {"command": f"optimem plan large.jsonl --budget {budget} --json", "mb": plan_mb,
                       "peak_mb": peak, "seconds": secs, "exit": rc, "total_tokens": plan.get("total_tokens"),
                       "tails": plan.get("tails"), "error": err.strip().splitlines()[-1:] if rc else None}
    if render_mb:
        path = tmp / "line.md"
        path.write_text(one_line_markdown(int(render_mb * 1_000_000)))
        peak, rc, secs, stdout, err = cli_peak("render", str(path), "--tier", "tiny", "--out", str(tmp / "pages"),
                                               "--json")
        pages = json.loads(stdout) if rc == 0 else []
        out["render"] = {"command": "optimem render line.md --tier tiny --out pages --json", "mb": render_mb,
                         "peak_mb": peak, "seconds": secs, "exit": rc, "pages": len(pages),
                         "pngs_on_disk": len(list((tmp / "pages").glob("*.png"))) if rc == 0 else 0,
                         "error": err.strip().splitlines()[-1:] if rc else None}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from optimem.progress import track

    rows, details = [], []
    cli: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="optimem-large-") as tmp:
        cli = cli_runs(Path(tmp), args.plan_mb, args.render_mb, args.budget)
        for i, mb in track(list(enumerate(args.mb)), total=len(args.mb), unit="sizes"):
            url = args.store or f"sqlite:///{Path(tmp) / f'large-{i}.db'}"
            r = in_fresh_process(url, int(mb * 1_000_000), args.budget, args.questions,
                                 run_id=f"-{os.getpid()}-{i}")
            details.append(r)
            if "error" in r:
                rows.append({"mb": mb, "error": r["error"]})
                continue
            rows.append({"mb": mb, "pages": r["pages_sealed"], "first_context_s": r["first_context_s"],
                         "peak_mb": r["peak_mb"], "grown_mb": r["grown_mb"], "policy_errors": r["policy_errors"],
                         "tail_chars": r["calls"][0]["tail_chars"] if r["calls"] else 0})
    return {"budget": args.budget, "questions": args.questions, "table": rows, "runs": details, "cli": cli,
            "note": "peak_mb is the whole process (Python, fonts, tokenizer, the text itself); grown_mb is over "
                    "the warmed-up process holding the text. Timings on a shared machine are noisy."}
