"""The store protocol: what a memory keeps per session, behind SQLite or Redis.

Per session a store holds turns (dense ids 0, 1, 2, ... in append order), sealed pages (master PNG,
spans, text, token count, content hash) with a floor tier each, vision-token cache entries (codec
bytes keyed by page hash, model and tier), document records and a JSON metadata dict.

What every store guarantees (the tests in tests/test_store.py and tests/test_reliability*.py hold
both backends to it):
- Every write is atomic: a batch of turns, a batch of pages with its metadata update, a cache entry,
  a document record with the pages it replaces, is applied whole or not at all.
- Appends are idempotent when a turn carries a `key`: a second append with a key the session already
  holds returns the first id and stores nothing, so a retry after an ambiguous failure (a timeout
  after the request was sent, an error that says "may have been applied") is safe.
- Writers cannot go backwards: `seal_pages` writes only if the page counter still equals what the
  caller read (compare-and-set), `set_floors(..., ladder=...)` only ever coarsens a floor (the rank
  comparison happens inside the store's transaction or script), metadata updates merge top-level
  keys instead of writing back an old snapshot.
- `snapshot()` reads turns, pages, floors, pins and metadata as of one instant.
Stores know nothing of models: a floor order is the ladder the caller passes in.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from optimem.errors import ConfigError, InputError, SessionError, StoreError

SESSION_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
DOC_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_KEY_CHARS = 256
MAX_JSON_DEPTH = 64
DROPPED = "dropped"


class DocConflictError(StoreError):
    """A conditional document write found another writer's record: nothing was written."""


def check_session(session: str) -> str:
    if not isinstance(session, str) or not SESSION_RE.fullmatch(session):
        raise SessionError(
            f"invalid session id {session!r}: use 1-128 characters from A-Z a-z 0-9 . _ -"
        )
    return session


def check_doc_id(doc_id: str) -> str:
    if not isinstance(doc_id, str) or not DOC_RE.fullmatch(doc_id):
        raise InputError(f"invalid document id {doc_id!r}: use 1-128 characters from A-Z a-z 0-9 . _ -")
    return doc_id


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()  # `put_doc(if_record=ANY)`: write whatever record is there


def check_doc_unchanged(doc_id: str, current: Any, expected: Any) -> None:
    """The compare of `put_doc(if_record=...)`: the stored record (None: none) must equal `expected`."""
    if expected is not ANY and current != expected:
        raise DocConflictError(f"document {doc_id!r} changed while this writer held it (another ingest of the same "
                               "document?); nothing was written: run it again once the other one finished")


@dataclass(frozen=True)
class StoredTurn:
    id: int
    role: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    pinned: bool = False


@dataclass(frozen=True)
class StoredPage:
    index: int
    spans: list[dict[str, Any]]  # [{"turn", "start", "end", "continued", "continues"}]
    text: str
    text_tokens: int
    content_hash: str
    png: bytes | None = None  # None when read with with_png=False
    floor: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """One session as of one instant (a read transaction or one script).

    `turns` and `pages` start at the `turns_from` / `pages_from` the caller asked for; `floors` and
    `pinned` cover the whole session, so a reader sees floors and pins other writers set on pages and
    turns it had already read."""

    meta: dict[str, Any]
    turn_count: int
    next_page: int
    turns: list[StoredTurn]
    pages: list[StoredPage]
    floors: dict[int, str]
    pinned: frozenset[int]


@dataclass(frozen=True)
class TurnRow:
    """A turn checked and serialised for a store: what both backends write."""

    role: str
    content: str
    metadata_json: str
    created: float
    pinned: bool
    key: str | None


def cache_key(content_hash: str, model: str, tier: str) -> str:
    for part, name in ((content_hash, "content hash"), (model, "model id"), (tier, "tier")):
        if not part or "\n" in part or "|" in part:
            raise ConfigError(f"invalid {name} for a cache key: {part!r}")
    return f"{content_hash}|{model}|{tier}"


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests no deeper than `limit` containers (iterative: no RecursionError)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, Mapping):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in v)
    return True


def dump_json(value: Any, what: str) -> str:
    """JSON text that is valid UTF-8 and not nested absurdly deep, or an InputError naming `what`."""
    if not json_depth_ok(value):
        raise InputError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels; flatten it")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not JSON-serialisable: {exc}") from None
    return _check_text(text, what)


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} holds a lone surrogate {value[exc.start]!r} at character {exc.start}, which is "
                         "not valid Unicode text; decode the source with errors='replace' first") from None
    return value


def prepare_turns(turns: Sequence[Mapping[str, Any]]) -> list[TurnRow]:
    """Check and serialise turns for an append; an InputError names the turn and the field."""
    rows = []
    now = time.time()
    for i, t in enumerate(turns):
        if not isinstance(t, Mapping):
            raise InputError(f"turn {i}: expected a mapping with role and content, not {type(t).__name__}")
        role = _check_text(t.get("role"), f"turn {i}: role")
        content = _check_text(t.get("content"), f"turn {i}: content")
        meta = t.get("metadata")
        meta = {} if meta is None else meta
        if not isinstance(meta, Mapping):
            raise InputError(f"turn {i}: metadata must be a mapping, not {type(meta).__name__}")
        created = t.get("created")
        try:
            created = float(created) if created is not None else now
        except (TypeError, ValueError):
            raise InputError(f"turn {i}: created must be a number of seconds, not {created!r}") from None
        if not math.isfinite(created):
            raise InputError(f"turn {i}: created must be finite, not {created!r}")
        key = t.get("key")
        if key is not None:
            _check_text(key, f"turn {i}: key")
            if not key or len(key) > MAX_KEY_CHARS:
                raise InputError(f"turn {i}: key must be 1-{MAX_KEY_CHARS} characters, not {len(key)}")
        rows.append(TurnRow(role, content, dump_json(dict(meta), f"turn {i}: metadata"), created,
                            bool(t.get("pinned")), key))
    return rows


def tier_rank(tier: str | None, ladder: Sequence[str]) -> int:
    """A floor's place in forgetting order: none < ladder[0] < ... < ladder[-1] < dropped. A tier not
    on this ladder counts as the coarsest tier it has, so forgetting stays monotone across models."""
    if tier is None:
        return -1
    if tier == DROPPED:
        return len(ladder)
    try:
        return list(ladder).index(tier)
    except ValueError:
        return len(ladder) - 1


def check_ladder(ladder: Sequence[str]) -> list[str]:
    names = list(ladder)
    if not names or len(set(names)) != len(names) or DROPPED in names:
        raise ConfigError(f"a floor ladder is a non-empty list of distinct tier names without {DROPPED!r}: {names!r}")
    for n in names:
        if not isinstance(n, str) or not n or "\n" in n:
            raise ConfigError(f"invalid tier name {n!r} in a floor ladder")
    return names


def doc_pages(record: Mapping[str, Any]) -> list[int]:
    """The page indices a document record owns: `ranges` ([[first, count], ...], a document written in
    several allocations, `pending` ranges of an unfinished re-ingest included) or `first_page` + `pages`."""
    spans: list[Any] = []
    if "ranges" in record or "pending" in record:
        spans += list(record.get("ranges") or [])
        pending = record.get("pending") or {}
        spans += list(pending.get("ranges") or []) if isinstance(pending, Mapping) else [None]
    else:
        spans.append([record.get("first_page"), record.get("pages", 0)])
    out: list[int] = []
    for r in spans:
        ok = isinstance(r, (list, tuple)) and len(r) == 2 and all(type(x) is int and x >= 0 for x in r)
        if not ok:
            raise InputError(f"a document record owns pages as ranges [first, count] of integers >= 0, not {r!r}")
        out.extend(range(r[0], r[0] + r[1]))
    return out


@runtime_checkable
class Store(Protocol):
    url: str

    # turns: each turn a mapping with role, content, optional metadata, created, pinned and key
    def append_turns(self, session: str, turns: list[dict[str, Any]]) -> list[int]: ...
    def get_turns(self, session: str, start: int = 0, stop: int | None = None) -> list[StoredTurn]: ...
    def count_turns(self, session: str) -> int: ...
    def set_pinned(self, session: str, turn_id: int, pinned: bool) -> None: ...
    # pages
    def put_pages(self, session: str, pages: list[StoredPage], meta: dict[str, Any] | None = None) -> None: ...
    def seal_pages(self, session: str, pages: list[StoredPage], *, expect: int,
                   meta: dict[str, Any] | None = None) -> bool: ...
    def allocate_pages(self, session: str, n: int) -> int: ...
    def next_page(self, session: str) -> int: ...
    def get_pages(self, session: str, start: int = 0, stop: int | None = None, *, with_png: bool = True) -> list[StoredPage]: ...
    def count_pages(self, session: str) -> int: ...
    def delete_pages(self, session: str, indices: Sequence[int]) -> int: ...
    def set_floors(self, session: str, floors: dict[int, str | None], *,
                   ladder: Sequence[str] | None = None) -> dict[int, str | None]: ...
    def get_floors(self, session: str) -> dict[int, str]: ...
    # metadata
    def get_meta(self, session: str) -> dict[str, Any]: ...
    def set_meta(self, session: str, meta: dict[str, Any]) -> None: ...
    def update_meta(self, session: str, patch: dict[str, Any]) -> dict[str, Any]: ...
    def snapshot(self, session: str, *, turns_from: int = 0, pages_from: int = 0) -> Snapshot: ...
    # documents
    def put_doc(self, session: str, doc_id: str, record: dict[str, Any], *,
                drop_pages: Sequence[int] = (), pages: Sequence[StoredPage] = (), if_record: Any = ANY) -> None: ...
    def get_docs(self, session: str) -> dict[str, dict[str, Any]]: ...
    def delete_doc(self, session: str, doc_id: str) -> bool: ...
    # cache
    def put_cache(self, session: str, key: str, blob: bytes) -> None: ...
    def get_cache_blob(self, session: str, key: str) -> bytes | None: ...
    def delete_cache(self, session: str, key: str) -> None: ...
    # sessions
    def list_sessions(self) -> list[str]: ...
    def delete_session(self, session: str) -> None: ...
    def stats(self, session: str) -> dict[str, Any]: ...
    def close(self) -> None: ...
