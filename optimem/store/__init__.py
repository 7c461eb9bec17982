"""Stores: where a memory keeps turns, pages, vision-token cache entries and session metadata.

`open_store(url)` picks one: `sqlite:///path.db` (the embedded default), `sqlite://` (in memory),
`redis://host:port/db?prefix=optimem&ttl=SECONDS` (shared). Both implement `Store`.
"""

from optimem.store.base import StoredPage, StoredTurn, Store, cache_key, check_session
from optimem.store.urls import open_store

__all__ = ["Store", "StoredPage", "StoredTurn", "cache_key", "check_session", "open_store"]
