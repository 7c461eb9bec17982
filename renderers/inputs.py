"""Reading transcripts and documents from files, with errors that say where the problem is."""

from __future__ import annotations

import json
from pathlib import Path

from .records import RenderError, Turn

TRANSCRIPT_SUFFIXES = (".jsonl", ".json")
DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RenderError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise RenderError(f"input is a directory, not a file: {path}") from None
    except PermissionError:
        raise RenderError(f"input file is not readable (permission denied): {path}") from None
    except OSError as exc:
        raise RenderError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RenderError(f"{path} is not UTF-8 text (byte {exc.start}): convert it to UTF-8") from None


def load_transcript(path: str | Path) -> list[Turn]:
    """A `.jsonl` file (one {"role", "content"} object per line) or a `.json` list of the same."""
    path = Path(path)
    text = _read_text(path)
    turns: list[Turn] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RenderError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        if isinstance(data, dict) and isinstance(data.get("messages"), list):
            data = data["messages"]
        if not isinstance(data, list):
            raise RenderError(f"{path}: expected a JSON list of turns")
        return [Turn.coerce(obj, i) for i, obj in enumerate(data)]
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RenderError(f"{path}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        try:
            turns.append(Turn.coerce(obj, len(turns)))
        except RenderError as exc:
            raise RenderError(f"{path}: line {lineno}: {exc}") from None
    return turns


def load_input(path: str | Path) -> list[Turn] | str:
    """A transcript (list of turns) for .jsonl/.json, the document text for .txt/.md."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TRANSCRIPT_SUFFIXES:
        return load_transcript(path)
    if suffix in DOCUMENT_SUFFIXES:
        return _read_text(path)
    raise RenderError(
        f"unsupported input type '{suffix or path.name}': use a transcript "
        f"({', '.join(TRANSCRIPT_SUFFIXES)}) or a document ({', '.join(DOCUMENT_SUFFIXES)})"
    )
