"""Question a long document held as compressed pages.

    python examples/document_qa.py report.pdf "What is the warranty period?" [--model /models/DeepSeek-OCR]

Without a model it prints the pages (and tiers) that would be sent under the budget.
"""

from __future__ import annotations

import argparse

from optimem.docqa import DocumentMemory


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("question")
    ap.add_argument("--store", default="sqlite:///documents.db")
    ap.add_argument("--budget", type=int, default=4096)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    backend = None
    if args.model:
        from optimem import DeepseekOCRBackend

        backend = DeepseekOCRBackend.from_pretrained(args.model)
    docs = DocumentMemory("docs", args.store, backend=backend)
    report = docs.ingest(args.file)
    print(f"{report.pages} pages ({report.new_pages} new)")
    ans = docs.ask(args.question, budget=args.budget)
    for page, tier, score in ans.pages:
        print(f"  page {page} at {tier} (bm25 {score:.2f})")
    print(ans.answer or f"({ans.note})")
    return ans.to_json()


if __name__ == "__main__":
    main()
