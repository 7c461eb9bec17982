"""`open_store(url)`: a store from its URL.

It lives apart from `store.base` so that the backends import the protocol and the protocol imports
no backend (no import loop between base and sqlite/redis)."""

from __future__ import annotations

import os

from optimem.errors import ConfigError
from optimem.store.base import Store


def default_url() -> str:
    """The SQLite file `$XDG_DATA_HOME/optimem/optimem.db` (`~/.local/share/...` without it)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    path = os.path.join(base, "optimem", "optimem.db")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return f"sqlite:///{path}"


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """A store from its URL: `sqlite:///path.db`, `sqlite://` (in memory), `redis://host:port/db?prefix=..&ttl=..`,
    `redis+cluster://host:port,host:port/?prefix=..&durable=N` (Redis Cluster).

    Default (None): the SQLite file `~/.local/share/optimem/optimem.db`. With `create=False` (read-only
    callers such as `optimem stats`) a SQLite file that does not exist is a `StoreError` rather than a
    new empty database.
    """
    if url is None:
        url = default_url()
    if not isinstance(url, str):
        raise ConfigError(f"a store URL is a string, not {type(url).__name__}")
    if url.startswith("sqlite:"):
        from optimem.store.sqlite import SQLiteStore

        path = url[len("sqlite:///"):].split("?", 1)[0] if url.startswith("sqlite:///") else ""
        if not create and path not in ("", ":memory:") and not os.path.isfile(path):
            from optimem.errors import StoreError

            raise StoreError(f"no store at {url}: {os.path.abspath(path)} does not exist; check the path")

        return SQLiteStore(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from optimem.store.redis import RedisStore

        return RedisStore(url)
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from optimem.store.redis_cluster import RedisClusterStore

        return RedisClusterStore(url)
    raise ConfigError(f"unknown store URL {url!r}: use sqlite:///path.db, sqlite://, redis://host:port/db or "
                      "redis+cluster://host:port,host:port/")
