"""`optimem ingest FILE --session S [--store URL] [--json]`: store a document (.txt, .md, .pdf) as pages.
Re-running skips the pages already stored. Progress (pages, pages/s) goes to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the document: .pdf (its pages and text layer), .txt or .md (rendered into pages)")
    p.add_argument("--session", required=True, help="session to store the pages in (created if new)")
    p.add_argument("--store", default=None, help="store URL (default: SQLite file in ~/.local/share/optimem)")
    p.add_argument("--json", action="store_true", help="print the ingest report as one JSON document")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from optimem.docqa import DocumentMemory
    from optimem.errors import InputError

    path = Path(args.file)
    if not path.is_file():  # before a store is opened (and so created) for nothing
        raise InputError(f"{args.file}: " + ("is a folder, not a document" if path.is_dir() else "no such file"))
    report = DocumentMemory(args.session, args.store).ingest(path, progress=True)
    if args.json:
        json.dump(dataclasses.asdict(report), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"{report.source}: {report.pages} pages ({report.new_pages} new, {report.pages_without_text} without a "
              f"text layer) in {report.seconds} s -> session {args.session}, document {report.doc_id}"
              + (f" (replaced {report.replaced_pages} pages of its previous version)" if report.replaced_pages else ""))
    return 0
