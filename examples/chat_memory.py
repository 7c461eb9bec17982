"""A chat agent's memory in a few lines: feed turns, ask for the context of the next model call.

    python examples/chat_memory.py [--budget 4096] [--store sqlite:///chat.db]

Without a model this shows what the next call would receive (pages at their tiers, raw-text turns);
pass --model /path/to/DeepSeek-OCR to answer through DeepSeek-OCR's native path.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources

from optimem import OpticalMemory


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=4096)
    ap.add_argument("--store", default="sqlite://")
    ap.add_argument("--turns", type=int, default=120)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)

    backend = None
    if args.model:
        from optimem import DeepseekOCRBackend

        backend = DeepseekOCRBackend.from_pretrained(args.model)
    mem = OpticalMemory("example", args.store, backend=backend)
    path = resources.files("optimem").joinpath("data/example_chat.jsonl")
    turns = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    mem.add_many(turns[: args.turns])

    ctx = mem.context(args.budget, new_message="What was my flight booking reference?")
    print(ctx.plan.explain())
    if args.model:
        print(mem.chat("What was my flight booking reference?", budget=args.budget))
    return {"pages": [(p.index, p.tier) for p in ctx.pages], "text_turns": [t.id for t in ctx.turns],
            "total_tokens": ctx.plan.total_tokens}


if __name__ == "__main__":
    main()
