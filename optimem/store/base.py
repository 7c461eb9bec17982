"""The store protocol: what a memory keeps per session, behind SQLite or Redis.

Per session a store holds turns (dense ids 0, 1, 2, ... in append order), sealed pages (master PNG,
spans, text, token count, content hash, floor tier), vision-token cache entries (codec bytes keyed by
page hash, model and tier) and a JSON metadata dict. Every write is atomic: a turn, a batch of pages
with its metadata update, a cache entry is written whole or not at all. Session ids are validated so
they cannot reach another session's keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from optimem.errors import ConfigError, SessionError

SESSION_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def check_session(session: str) -> str:
    if not isinstance(session, str) or not SESSION_RE.fullmatch(session):
        raise SessionError(
            f"invalid session id {session!r}: use 1-128 characters from A-Z a-z 0-9 . _ -"
        )
    return session


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


def cache_key(content_hash: str, model: str, tier: str) -> str:
    for part, name in ((content_hash, "content hash"), (model, "model id"), (tier, "tier")):
        if not part or "\n" in part or "|" in part:
            raise ConfigError(f"invalid {name} for a cache key: {part!r}")
    return f"{content_hash}|{model}|{tier}"


@runtime_checkable
class Store(Protocol):
    url: str

    def append_turns(self, session: str, turns: list[dict[str, Any]]) -> list[int]: ...
    def get_turns(self, session: str, start: int = 0, stop: int | None = None) -> list[StoredTurn]: ...
    def count_turns(self, session: str) -> int: ...
    def set_pinned(self, session: str, turn_id: int, pinned: bool) -> None: ...
    def put_pages(self, session: str, pages: list[StoredPage], meta: dict[str, Any] | None = None) -> None: ...
    def get_pages(self, session: str, start: int = 0, stop: int | None = None, *, with_png: bool = True) -> list[StoredPage]: ...
    def count_pages(self, session: str) -> int: ...
    def set_floors(self, session: str, floors: dict[int, str | None]) -> None: ...
    def get_meta(self, session: str) -> dict[str, Any]: ...
    def set_meta(self, session: str, meta: dict[str, Any]) -> None: ...
    def put_cache(self, session: str, key: str, blob: bytes) -> None: ...
    def get_cache_blob(self, session: str, key: str) -> bytes | None: ...
    def delete_cache(self, session: str, key: str) -> None: ...
    def list_sessions(self) -> list[str]: ...
    def delete_session(self, session: str) -> None: ...
    def stats(self, session: str) -> dict[str, Any]: ...
    def close(self) -> None: ...

