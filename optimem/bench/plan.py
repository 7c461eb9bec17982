"""`optimem bench plan`: planning time for 10,000 pages (full) and after one new turn (incremental),
plus example plans for a 200-turn conversation (the bundled example when present)."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from optimem.progress import track


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pages", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--budget", type=int, default=32_000)


def _synthetic(n_pages: int, seed: int = 0):
    from optimem.policies import PageInfo, TurnInfo

    rng = random.Random(seed)
    turns, pages = [], []
    t = 0
    for i in range(n_pages):
        k = rng.randint(1, 4)  # turns per page
        for _ in range(k):
            turns.append(TurnInfo(t, rng.randint(20, 600)))
            t += 1
        first = t - k
        pages.append(PageInfo(i, first, t - 1, sum(x.tokens for x in turns[first:t])))
    for _ in range(3):  # turns on the open page
        turns.append(TurnInfo(t, rng.randint(20, 300)))
        t += 1
    return turns, pages


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def example_plans(budgets=(2000, 8000, 32000)) -> list[dict]:
    """Plans for the bundled 200-turn example under several budgets, with the DeepSeek-OCR prompt
    template counted, for the default policy (spare budget filled) and strict decay."""
    from importlib import resources

    from optimem.backends import NoModelBackend
    from optimem.records import page_infos, turn_infos
    from optimem.policies import Policy, plan
    from optimem.renderers import load_transcript, normalize_text, paginate

    backend = NoModelBackend()
    path = resources.files("optimem").joinpath("data/example_chat.jsonl")
    turns = load_transcript(str(path))[:200]
    layouts = [p for p in paginate(turns) if p.full]
    records = turn_infos([normalize_text(t.content) for t in turns])
    pages = page_infos(layouts)
    total_text = sum(r.tokens for r in records)
    rows = []
    for b in track(budgets, total=len(budgets), unit="budgets"):
        for policy in ("default", "strict"):
            p = plan(records, pages, b, backend.ladder.costs, Policy(fill_budget=policy == "default"),
                     overhead=backend.template_overhead)
            tiers: dict[str, int] = {}
            for _, t in p.page_tiers:
                tiers[t] = tiers.get(t, 0) + 1
            rows.append({
                "budget": b, "policy": policy, "turns": len(turns), "history_text_tokens": total_text,
                "tokens_used": p.total_tokens, "template_tokens": p.overhead_tokens,
                "text_tokens_represented": p.text_tokens_represented,
                "ratio_represented_per_token": round(p.text_tokens_represented / max(p.total_tokens, 1), 2),
                "page_compression": round(p.compression, 2), "pages_by_tier": tiers,
            })
    return rows


def run(args: argparse.Namespace) -> dict:
    from optimem.ladders import DEEPSEEK_OCR_V1
    from optimem.policies import Planner, TurnInfo

    turns, pages = _synthetic(args.pages)

    def full() -> None:
        planner = Planner(DEEPSEEK_OCR_V1.costs)
        planner.extend(turns, pages)
        planner.plan(args.budget)

    planner = Planner(DEEPSEEK_OCR_V1.costs)
    planner.extend(turns, pages)
    planner.set_floors(planner.plan(args.budget).floors())
    state = {"n": len(turns)}

    def incremental() -> None:
        planner.extend([TurnInfo(state["n"], 120)])
        state["n"] += 1
        planner.plan(args.budget)

    built = Planner(DEEPSEEK_OCR_V1.costs)
    built.extend(turns, pages)
    plan_ms = _median_ms(lambda: built.plan(args.budget), args.repeats)
    full_ms = _median_ms(full, args.repeats)
    inc_ms = _median_ms(incremental, args.repeats)
    result = {
        "table": [
            {"case": "plan (records already held)", "pages": args.pages, "turns": len(turns), "budget": args.budget,
             "median_ms": round(plan_ms, 3)},
            {"case": "full plan incl. ingesting records", "pages": args.pages, "turns": len(turns), "budget": args.budget, "median_ms": round(full_ms, 3)},
            {"case": "incremental (one new turn)", "pages": args.pages, "turns": state["n"], "budget": args.budget,
             "median_ms": round(inc_ms, 3)},
        ],
        "target_ms": 10,
    }
    try:
        result["example_200_turns"] = example_plans()
    except ValueError:  # renderers.RenderError: the bundled example is missing
        result["example_200_turns"] = "optimem/data/example_chat.jsonl not present"
    return result
