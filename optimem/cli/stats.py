"""`optimem stats [--store URL] [--session S] [--json]`: what a store holds.

Read-only: a store that does not exist (a typo in the URL, or nothing stored yet) and a session the store
does not hold are errors, never created."""

from __future__ import annotations

import argparse
import json
import sys

from optimem.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="store URL (default: the SQLite file in ~/.local/share/optimem)")
    p.add_argument("--session", default=None, help="one session (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    store = common.open_existing_store(args.store)
    if args.session:
        common.check_session_exists(store, args.session)
    sessions = [args.session] if args.session else store.list_sessions()
    rows = [store.stats(s) for s in sessions]
    if args.json:
        json.dump({"store": store.url, "sessions": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    if not rows:
        print(f"store {store.url} holds no session yet")
        return 0
    table = Table(title=f"optimem store {store.url}")
    for col in ("session", "turns", "pages", "page text tokens", "pages by floor", "cache entries", "cache MB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["session"], str(r["turns"]), str(r["pages"]), str(r["page_text_tokens"]),
                      ", ".join(f"{k}:{v}" for k, v in sorted(r["pages_by_floor"].items())),
                      str(r["cache_entries"]), f"{r['cache_bytes'] / 1e6:.2f}")
    Console().print(table)
    return 0
