"""`optimem plan INPUT --budget N [--recent K] [--json]`: the decay plan for a transcript."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="transcript (.jsonl or .json)")
    p.add_argument("--budget", type=int, required=True, help="context budget in tokens")
    p.add_argument("--recent", type=int, default=6, help="most recent turns kept as text (default 6)")
    p.add_argument("--reserve", type=int, default=0, help="tokens reserved for the reply and system prompt")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON document")


def run(args: argparse.Namespace) -> int:
    from optimem.errors import InputError
    from optimem.planning import page_records, turn_records
    from policies import DEEPSEEK_OCR_V1, Policy, plan
    from renderers import load_input, normalize_text, paginate

    turns = load_input(args.input)
    if isinstance(turns, str):
        raise InputError(f"{args.input} is a document; `optimem plan` takes a transcript (.jsonl or .json)")
    layouts = paginate(turns)
    sealed = [p for p in layouts if p.full]  # the last, unfilled page is still open: its turns stay text
    records = turn_records([normalize_text(t.content) for t in turns])
    result = plan(records, page_records(sealed), args.budget, DEEPSEEK_OCR_V1,
                  Policy(recent_turns=args.recent, reserve_tokens=args.reserve))
    if args.json:
        json.dump(result.to_json(), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(result.explain())
    return 0
