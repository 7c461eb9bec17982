"""`optimem ask QUESTION --session S [--model DIR] [--budget N] [--store URL] [--json]`: answer a question
over an ingested document, citing pages. Without --model it shows the pages and tiers it would send."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("question")
    p.add_argument("--session", required=True)
    p.add_argument("--store", default=None)
    p.add_argument("--model", default=None, help="DeepSeek-OCR checkpoint directory")
    p.add_argument("--budget", type=int, default=4096)
    p.add_argument("-k", type=int, default=8, help="pages retrieved before the budget decides (default 8)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from optimem.docqa import DocumentMemory

    backend = None
    if args.model:
        from optimem.backends import DeepseekOCRBackend

        backend = DeepseekOCRBackend.from_pretrained(args.model)
    ans = DocumentMemory(args.session, args.store, backend=backend).ask(args.question, budget=args.budget, k=args.k)
    if args.json:
        json.dump(ans.to_json(), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    for page, tier, score in ans.pages:
        print(f"page {page}: {tier} (bm25 {score:.3f})")
    print(ans.answer if ans.answer is not None else f"({ans.note}; {ans.tokens} tokens planned)")
    return 0
