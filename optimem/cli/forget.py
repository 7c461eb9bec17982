"""`optimem forget --session S [--doc ID] [--store URL] [--json]`: delete a document, or a whole session.

A document (`--doc`): its record, its pages and their cached vision tokens. A session: every turn, page,
floor, document, cache entry and the metadata. Nothing is created: an unknown store, session or
document is an error."""

from __future__ import annotations

import argparse
import json
import sys

from optimem.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="store URL (default: the SQLite file in ~/.local/share/optimem)")
    p.add_argument("--session", required=True, help="the session to delete, or to delete a document from")
    p.add_argument("--doc", default=None, help="delete only this document (its id: `optimem ingest` prints it)")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from optimem.docqa import DocumentMemory
    from optimem.errors import InputError

    store = common.open_existing_store(args.store)
    common.check_session_exists(store, args.session)
    dm = DocumentMemory(args.session, store)
    if args.doc is not None:
        docs = dm.documents()
        if args.doc not in docs:
            known = ", ".join(sorted(docs)[:10]) or "none"
            raise InputError(f"session {args.session!r} has no document {args.doc!r}; its documents: {known}")
    before = store.stats(args.session)
    dm.forget(args.doc)
    doc = {"store": store.url, "session": args.session, "document": args.doc,
           "deleted": "document" if args.doc is not None else "session",
           "session_before": {k: before[k] for k in ("turns", "pages", "cache_entries")}}
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        what = f"document {args.doc!r} of session {args.session!r}" if args.doc else f"session {args.session!r}"
        print(f"deleted {what} from {store.url}")
    return 0
