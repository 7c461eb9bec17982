"""The `optimem` command line.

Each subcommand lives in its own module under `optimem.cli` and exposes `add_arguments(parser)` and
`run(args) -> int`. Modules import their heavy dependencies inside `run`, so building the parser
stays cheap and `optimem render` / `optimem plan` start in well under a second.

Conventions every subcommand follows: `--json` prints exactly one JSON document on stdout and
nothing else (logs and progress go to stderr); user errors exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). Order is the order `optimem --help` shows.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("optimem.cli.demo", "the main job on embedded defaults (SQLite, no GPU, no network)"),
    "render": ("optimem.cli.render", "render a transcript or document into page images"),
    "plan": ("optimem.cli.plan", "the decay plan for a transcript under a token budget"),
    "chat": ("optimem.cli.chat", "chat with a model, with optical memory"),
    "ingest": ("optimem.cli.ingest", "store a long document (text, Markdown, PDF) as pages"),
    "ask": ("optimem.cli.ask", "ask a question over an ingested document"),
    "stats": ("optimem.cli.stats", "what a store holds: sessions, turns, pages, tiers, cache"),
    "bench": ("optimem.cli.bench", "run a benchmark (render, legibility, plan, encode, memory, e2e, ...)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimem",
        description="Long memory for chat agents through optical context compression.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # subcommand not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    from optimem.errors import OptimemError

    try:
        return int(args._run(args) or 0)
    except (OptimemError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        # User errors: one clear line, no traceback. `renderers` and `policies` raise ValueError
        # subclasses because they may not import optimem.
        print(f"optimem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
