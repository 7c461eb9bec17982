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
    "forget": ("optimem.cli.forget", "delete a document, or a whole session, from a store"),
    "bench": ("optimem.cli.bench", "run a benchmark (render, legibility, plan, encode, memory, e2e, ...)"),
}


def build_parser() -> argparse.ArgumentParser:
    from optimem import __version__
    from optimem.cli.common import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="optimem",
        description="Long memory for chat agents through optical context compression.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"optimem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    before = set(logging.getLogger().handlers)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # The level goes on our handler too: some libraries set their own logger to DEBUG (bm25s does, on
    # import), and a record passes its own logger's level, not the root's, on its way to the handler.
    for handler in set(logging.getLogger().handlers) - before:
        handler.setLevel(level)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    from optimem.errors import OptimemError

    try:
        return int(args._run(args) or 0)
    except (OptimemError, ValueError) as exc:
        # User errors: one clear line, no traceback. `renderers` and `policies` raise ValueError
        # subclasses because they may not import optimem.
        print(f"optimem {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `optimem ... | head`: the reader left; nothing to report
        return 141
    except OSError as exc:  # a path that cannot be read or written: say which and why, in one line
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"optimem {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
