"""What several subcommands share: argument types, output folders, read-only stores, ratios.

Not a subcommand (it is not listed in `SUBCOMMANDS`). Errors raised here are `ConfigError` /
`InputError` / `StoreError` / `SessionError`, which `optimem.cli.main` prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path

from optimem.errors import ConfigError, SessionError, StoreError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default in `--help` unless the help text already states it or the
    default says nothing (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and "default" not in text.lower() and "%(default)" not in text
                and default not in (None, False, argparse.SUPPRESS) and default != []):
            text += " (default: %(default)s)"
        return text


def int_at_least(minimum: int, what: str = "a number"):
    """An argparse type: an integer >= minimum; argparse prefixes the message with the option's name."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    parse.__name__ = "integer"
    return parse


def output_dir(path: str | Path, owned: Iterable[str], *, flag: str = "--out") -> tuple[Path, list[Path]]:
    """Make sure `path` is a folder this run can fill: created when missing; refused (one line) when it is
    a file; files an earlier run of this command wrote there (names matching one of the `owned`
    regular expressions) are removed, so no stale page sits next to the new ones. Other files are left
    alone. Returns the folder and the files removed."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {path} is an existing file, not a folder: give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{flag} {path}: a parent of it is a file, not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc})") from None
    patterns = [re.compile(p) for p in owned]
    removed = []
    for child in sorted(out.iterdir()):
        if child.is_file() and any(p.fullmatch(child.name) for p in patterns):
            child.unlink()
            removed.append(child)
    return out, removed


def default_store_path() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "optimem" / "optimem.db"


def open_existing_store(url: str | None):
    """A store for a read-only command: never created. A SQLite file that does not exist (a typo, or
    nothing stored yet) is an error instead of a new empty database."""
    from optimem.store import open_store

    if url is None and not default_store_path().exists():
        raise StoreError(f"no store yet: the default store {default_store_path()} does not exist "
                         "(nothing was stored there); pass --store URL to read another one")
    return open_store(url, create=False)


def check_session_exists(store, session: str) -> None:
    """SessionError naming the sessions the store does hold when `session` is not one of them."""
    from optimem.store import check_session

    check_session(session)
    sessions = store.list_sessions()
    if session not in sessions:
        known = ", ".join(sessions[:10]) + (f", ... ({len(sessions)} in all)" if len(sessions) > 10 else "")
        raise SessionError(f"session {session!r} does not exist in {store.url}"
                           + (f"; sessions there: {known}" if sessions else "; the store holds no session"))


def ratio(numerator: float, denominator: float) -> str:
    """A compression ratio printed honestly: "12.3x", "0.42x" when the images cost more than the text
    (never "0.0x"), "n/a" when there is nothing to divide by."""
    if not denominator:
        return "n/a"
    r = numerator / denominator
    return f"{r:.1f}x" if r >= 1 else f"{r:.2g}x"


def check_model_path(model: str, flag: str = "--model") -> None:
    """A --model that names a local path must exist and be a folder. Hub ids ("org/name") pass through to
    the loader, which says whether the hub can be reached."""
    from optimem.errors import CheckpointError

    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{flag} {model} is a file; pass the checkpoint folder (config.json, "
                                  "model.safetensors or its shards)")
        return
    looks_like_path = (model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1
                       or model.endswith("/") or path.suffix in (".safetensors", ".bin", ".json"))
    if looks_like_path:
        raise CheckpointError(f"{flag} {model}: the path does not exist; pass a DeepSeek-OCR checkpoint folder "
                              "(config.json, model.safetensors or its shards)")


def load_backend(model: str, console, **kwargs):
    """The model backend for --model, with a spinner while it loads (torch + weights take seconds)."""
    import time

    from optimem.backends import DeepseekOCRBackend

    check_model_path(model)
    t0 = time.perf_counter()
    with console.status(f"loading {model} ..."):
        backend = DeepseekOCRBackend.from_pretrained(model, **kwargs)
    console.print(f"loaded {model} in {time.perf_counter() - t0:.1f} s", highlight=False)
    return backend


def with_model_progress(console, backend, call):
    """Run `call()` (an ask or chat step) with progress on stderr: pages encoded (count, pages/s), then
    answer tokens generated (count, tokens/s). The backend offers no progress hooks, so its `encode` and
    its model's `generate` are wrapped on the instance for the duration of the call and restored after.
    Each task starts its clock when its work starts, so the rates are the work's own."""
    from optimem.progress import progress_bar

    model = getattr(backend, "model", None)
    tasks: dict[str, int] = {}
    with progress_bar(console=console) as bar:
        encode = backend.encode

        def counted_encode(images, *a, **kw):
            if "encode" not in tasks:
                tasks["encode"] = bar.add_task("encode pages", total=None, unit="pages")
            out = encode(images, *a, **kw)
            bar.advance(tasks["encode"], len(images))
            return out

        backend.encode = counted_encode
        generate = getattr(model, "generate", None)
        if generate is not None:
            def counted_generate(*a, **kw):
                if "encode" in tasks:
                    bar.update(tasks["encode"], total=bar.tasks[tasks["encode"]].completed)
                task = tasks["generate"] = bar.add_task("generate answer", total=None, unit="tokens")
                ids = generate(*a, **kw)
                bar.update(task, completed=len(ids), total=len(ids))
                return ids

            model.generate = counted_generate
        try:
            return call()
        finally:
            del backend.encode
            if generate is not None:
                del model.generate
