"""`optimem stats --store URL [--session S] [--json]`: what a store holds."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="store URL (default: the SQLite file in ~/.local/share/optimem)")
    p.add_argument("--session", default=None, help="one session (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from optimem.store import open_store

    store = open_store(args.store)
    sessions = [args.session] if args.session else store.list_sessions()
    rows = []
    for s in sessions:
        st = store.stats(s)
        rows.append(st)
    if args.json:
        json.dump({"store": store.url, "sessions": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"optimem store {store.url}")
    for col in ("session", "turns", "pages", "page text tokens", "pages by floor", "cache entries", "cache MB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["session"], str(r["turns"]), str(r["pages"]), str(r["page_text_tokens"]),
                      ", ".join(f"{k}:{v}" for k, v in sorted(r["pages_by_floor"].items())),
                      str(r["cache_entries"]), f"{r['cache_bytes'] / 1e6:.2f}")
    Console().print(table)
    return 0
