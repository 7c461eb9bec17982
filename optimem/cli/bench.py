"""`optimem bench NAME`: benchmarks live in `optimem.bench.<name>` modules.

Each benchmark module exposes `add_arguments(parser)` and `run(args) -> dict` (the result document).
This command prints a human summary, or with `--json` the result document alone, and with
`--save` also writes it under `benchmarks/results/` (machine, versions and date are added by
`optimem.bench.common.envelope`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BENCHMARKS: dict[str, str] = {
    "render": "pages per second: freetype-py glyph cache vs Pillow ImageDraw",
    "legibility": "character accuracy per tier and text density, read back by an independent OCR",
    "plan": "planning time for 10,000 pages; incremental vs full",
    "retention": "facts still readable at a conversation's end per budget: optimem vs strict decay vs truncation",
    "encode": "DeepEncoder pages/s and TFLOP/s per mode and batch (GPU), vs the reference path",
    "ocr2": "DeepSeek-OCR-2 encoder pages/s and TFLOP/s per tier and batch (GPU)",
    "memory": "add-turn latency (SQLite, Redis), context() time, page pipeline throughput",
    "tokens": "tokens per model call: optimem vs full text vs trim_messages, per provider",
    "agent": "create_agent with tools for 150 turns: optimem middleware vs trim_messages and SummarizationMiddleware",
    "docqa": "document ingest speed and retrieval recall@k",
    "pipeline": "the page pipeline per turn: context() + tier images, cold session, document QA ask",
    "e2e": "whole-conversation GPU cost: full text, prefix cache, truncation, optimem",
    "large": "one huge turn (a pasted log) through add + context(): peak memory, time, no PolicyError",
    "store": "Redis store load (one node vs a 3-master cluster), failover and resharding on Redis Cluster",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from optimem.cli.common import HelpFormatter

    sub = parser.add_subparsers(dest="bench", metavar="NAME")
    for name, help_text in BENCHMARKS.items():
        module = importlib.import_module(f"optimem.bench.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        p.add_argument("--json", action="store_true", help="print the result as one JSON document")
        p.add_argument("--save", metavar="PATH", help="also write the result JSON to PATH")
        module.add_arguments(p)
        p.set_defaults(_bench=module)


def run(args: argparse.Namespace) -> int:
    module = getattr(args, "_bench", None)
    if module is None:
        print("optimem bench: name a benchmark; `optimem bench --help` lists them", file=sys.stderr)
        return 2
    from optimem.bench.common import envelope, print_summary
    from optimem.progress import activity

    # a bar on stderr while it runs: elapsed time, and counts and rates where the benchmark reports its
    # units of work through optimem.progress.track
    with activity(f"bench {args.bench}"):
        raw = module.run(args)
    result = envelope(args.bench, raw)
    if args.save:
        from pathlib import Path

        path = Path(args.save)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if args.json:
        json.dump(result, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print_summary(result)
    return 0
