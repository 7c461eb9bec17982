"""`optimem ingest FILE --session S [--store URL] [--json]`: store a document (.txt, .md, .pdf) as pages.
Re-running skips the pages already stored."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--session", required=True)
    p.add_argument("--store", default=None, help="store URL (default: SQLite file in ~/.local/share/optimem)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from optimem.docqa import DocumentMemory

    report = DocumentMemory(args.session, args.store).ingest(args.file, progress=not args.json)
    if args.json:
        json.dump(dataclasses.asdict(report), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"{report.source}: {report.pages} pages ({report.new_pages} new, {report.pages_without_text} without a "
              f"text layer) in {report.seconds} s -> session {args.session}")
    return 0
