"""SQLite store: the embedded default. One file (or memory), WAL, safe across threads and processes.

Each thread gets its own connection to a file; every write runs in a `BEGIN IMMEDIATE` transaction,
so concurrent writers (threads or processes) serialise on the write lock, ids stay dense and unique,
and the conditional writes (idempotency keys, `seal_pages`' page-counter check, coarsen-only floors)
read and write under that one lock. An in-memory store (`sqlite://`) is one connection behind a
lock: SQLite's shared-cache mode locks tables without honouring the busy timeout ("database table is
locked"), so memory databases serialise in Python instead.

Appends cost the same at any session length: the next id is `MAX(id) + 1` on the primary key (an
index seek), not a `COUNT(*)` over the session.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from optimem.errors import ConfigError, InputError, StoreError
from optimem.store.base import (
    ANY,
    DROPPED,
    Snapshot,
    StoredPage,
    StoredTurn,
    check_doc_id,
    check_doc_unchanged,
    check_ladder,
    check_session,
    doc_pages,
    dump_json,
    prepare_turns,
    tier_rank,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, meta TEXT NOT NULL DEFAULT '{}', created REAL);
CREATE TABLE IF NOT EXISTS turns (
    session TEXT NOT NULL, id INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    metadata TEXT NOT NULL, created REAL NOT NULL, pinned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS turn_keys (session TEXT NOT NULL, key TEXT NOT NULL, id INTEGER NOT NULL,
    PRIMARY KEY (session, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pages (
    session TEXT NOT NULL, idx INTEGER NOT NULL, spans TEXT NOT NULL, text TEXT NOT NULL,
    text_tokens INTEGER NOT NULL, hash TEXT NOT NULL, png BLOB NOT NULL, floor TEXT, meta TEXT NOT NULL,
    PRIMARY KEY (session, idx));
CREATE TABLE IF NOT EXISTS page_counter (session TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS docs (session TEXT NOT NULL, id TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (session, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache (session TEXT NOT NULL, key TEXT NOT NULL, blob BLOB NOT NULL,
    PRIMARY KEY (session, key));
-- PNG masters apart from the page records: a column stored after a large blob costs a walk through
-- the blob's overflow pages, so records read without PNGs (every plan) stay small. Pages written
-- before this table existed keep their PNG in pages.png, read as a fallback.
CREATE TABLE IF NOT EXISTS page_png (session TEXT NOT NULL, idx INTEGER NOT NULL, png BLOB NOT NULL,
    PRIMARY KEY (session, idx));
-- a snapshot reads every pin and floor of a session: partial (covering) indexes keep that independent
-- of its length
CREATE INDEX IF NOT EXISTS turns_pinned ON turns (session, id) WHERE pinned = 1;
DROP INDEX IF EXISTS pages_floored;
CREATE INDEX IF NOT EXISTS pages_floors ON pages (session, idx, floor) WHERE floor IS NOT NULL;
"""
_TABLES = (("turns", "session"), ("turn_keys", "session"), ("pages", "session"), ("page_png", "session"),
           ("page_counter", "session"),
           ("docs", "session"), ("cache", "session"), ("sessions", "id"))
_PAGE_UPSERT = (
    "INSERT INTO pages (session, idx, spans, text, text_tokens, hash, png, floor, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (session, idx) DO UPDATE SET spans = excluded.spans, text = excluded.text, "
    "text_tokens = excluded.text_tokens, hash = excluded.hash, png = excluded.png, meta = excluded.meta, "
    "floor = COALESCE(excluded.floor, pages.floor)"  # rewriting a page never sharpens its floor
)
_PNG_UPSERT = "INSERT OR REPLACE INTO page_png (session, idx, png) VALUES (?, ?, ?)"
_FLOORS_SQL = "SELECT idx, floor FROM pages INDEXED BY pages_floors WHERE session = ? AND floor IS NOT NULL"


def _retry_busy(fn, timeout: float):
    """Run `fn`, retrying "database is locked" until `timeout` seconds passed. Changing the journal
    mode and creating the schema can fail with SQLITE_BUSY without the busy handler being consulted
    (several processes opening a new file at once)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class SQLiteStore:
    def __init__(self, url: str = "sqlite://", *, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = float(timeout)
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db, sqlite:// = memory
        if url in ("sqlite://", "sqlite:", "sqlite:///:memory:", "sqlite://:memory:"):
            path = ""
        elif url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :].split("?", 1)[0]
        else:
            raise ConfigError(f"bad SQLite URL {url!r}: use sqlite:///relative.db, sqlite:////abs/path.db or sqlite://")
        self.memory = not path or path == ":memory:"
        self._target = ":memory:" if self.memory else path
        self._local = threading.local()
        self._lock: threading.RLock | None = threading.RLock() if self.memory else None
        self._shared: sqlite3.Connection | None = None
        conn = self._conn()
        try:
            _retry_busy(lambda: conn.executescript(_SCHEMA), self.timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {url}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self.memory:
            if self._shared is None:
                self._shared = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self._target, timeout=self.timeout, isolation_level=None,
                                       check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                mode = _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone(), self.timeout)
                if mode and str(mode[0]).lower() != "wal":
                    raise StoreError(f"SQLite store {self.url} cannot use write-ahead logging (journal_mode={mode[0]}); "
                                     "put it on a local filesystem")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite store {self.url}: {exc}") from exc
            self._local.conn = conn
        return conn

    def _guard(self):
        return self._lock if self._lock is not None else contextlib.nullcontext()

    def _write(self, fn):
        with self._guard():
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite write failed ({self.url}): {exc}; nothing was written") from exc
            try:
                out = fn(conn)
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite write failed ({self.url}): {exc}; nothing was written") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise StoreError(f"SQLite commit failed ({self.url}): {exc}; the write may have been applied, "
                                 "read back (or retry with the same turn keys) before writing again") from exc
            return out

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._guard():
            try:
                return self._conn().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed ({self.url}): {exc}") from exc

    def _read_tx(self, fn):
        """Several reads as of one instant (a deferred read transaction: WAL keeps its snapshot)."""
        with self._guard():
            conn = self._conn()
            try:
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed ({self.url}): {exc}") from exc

    @staticmethod
    def _ensure_session(conn: sqlite3.Connection, session: str) -> None:
        conn.execute("INSERT OR IGNORE INTO sessions (id, meta, created) VALUES (?, '{}', ?)", (session, time.time()))

    # -- turns ------------------------------------------------------------------------------------
    def append_turns(self, session: str, turns: list[dict[str, Any]]) -> list[int]:
        check_session(session)
        rows = prepare_turns(turns)

        def op(conn: sqlite3.Connection) -> list[int]:
            self._ensure_session(conn, session)
            (n,) = conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM turns WHERE session = ?", (session,)).fetchone()
            ids = []
            for r in rows:
                if r.key is not None:
                    hit = conn.execute("SELECT id FROM turn_keys WHERE session = ? AND key = ?", (session, r.key)).fetchone()
                    if hit is not None:  # a retry of an append that was applied: a no-op
                        ids.append(hit[0])
                        continue
                    conn.execute("INSERT INTO turn_keys (session, key, id) VALUES (?, ?, ?)", (session, r.key, n))
                conn.execute(
                    "INSERT INTO turns (session, id, role, content, metadata, created, pinned) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (session, n, r.role, r.content, r.metadata_json, r.created, int(r.pinned)))
                ids.append(n)
                n += 1
            return ids

        return self._write(op)

    @staticmethod
    def _turns(conn, session: str, start: int, stop: int | None) -> list[StoredTurn]:
        stop = (1 << 62) if stop is None else stop
        rows = conn.execute(
            "SELECT id, role, content, metadata, created, pinned FROM turns WHERE session = ? AND id >= ? AND id < ? ORDER BY id",
            (session, start, stop)).fetchall()
        return [StoredTurn(r[0], r[1], r[2], json.loads(r[3]), r[4], bool(r[5])) for r in rows]

    def get_turns(self, session: str, start: int = 0, stop: int | None = None) -> list[StoredTurn]:
        check_session(session)
        return self._read_tx(lambda conn: self._turns(conn, session, start, stop))

    def count_turns(self, session: str) -> int:
        check_session(session)
        return self._read("SELECT COALESCE(MAX(id) + 1, 0) FROM turns WHERE session = ?", (session,))[0][0]

    def set_pinned(self, session: str, turn_id: int, pinned: bool) -> None:
        check_session(session)

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE turns SET pinned = ? WHERE session = ? AND id = ?", (int(pinned), session, int(turn_id)))
            if cur.rowcount != 1:
                raise StoreError(f"session {session!r} has no turn {turn_id}")

        self._write(op)

    # -- pages ------------------------------------------------------------------------------------
    @staticmethod
    def _page_rows(session: str, pages: list[StoredPage]) -> list[tuple]:
        return [(session, int(p.index), dump_json(p.spans, f"page {p.index} spans"), p.text, int(p.text_tokens),
                 p.content_hash, p, p.floor, dump_json(p.meta, f"page {p.index} meta")) for p in pages]

    @staticmethod
    def _write_pages(conn: sqlite3.Connection, rows: list[tuple]) -> None:
        """Page records (an empty pages.png) and their PNGs in page_png; `rows` from `_page_rows`."""
        conn.executemany(_PAGE_UPSERT, [(*r[:6], b"", *r[7:]) for r in rows])
        conn.executemany(_PNG_UPSERT, [(r[0], r[1], r[6].png or b"") for r in rows])

    @staticmethod
    def _merge_meta(conn: sqlite3.Connection, session: str, patch: dict[str, Any]) -> dict[str, Any]:
        (raw,) = conn.execute("SELECT meta FROM sessions WHERE id = ?", (session,)).fetchone()
        meta = json.loads(raw)
        for k, v in patch.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        conn.execute("UPDATE sessions SET meta = ? WHERE id = ?", (dump_json(meta, "session metadata"), session))
        return meta

    @staticmethod
    def _next_page(conn: sqlite3.Connection, session: str) -> int:
        row = conn.execute("SELECT next FROM page_counter WHERE session = ?", (session,)).fetchone()
        if row is not None:
            return row[0]
        # a session written before the counter existed: its pages were dense from 0
        (n,) = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM pages WHERE session = ?", (session,)).fetchone()
        return n

    @staticmethod
    def _set_next_page(conn: sqlite3.Connection, session: str, n: int) -> None:
        conn.execute("INSERT INTO page_counter (session, next) VALUES (?, ?) ON CONFLICT (session) DO UPDATE SET "
                     "next = MAX(next, excluded.next)", (session, n))

    def put_pages(self, session: str, pages: list[StoredPage], meta: dict[str, Any] | None = None) -> None:
        """Write pages at their indices (a page already there is replaced, its floor kept) and merge
        `meta`'s top-level keys into the session metadata, in one transaction."""
        check_session(session)
        rows = self._page_rows(session, pages)

        def op(conn: sqlite3.Connection) -> None:
            self._ensure_session(conn, session)
            self._write_pages(conn, rows)
            if rows:
                self._set_next_page(conn, session, max(self._next_page(conn, session), max(r[1] for r in rows) + 1))
            if meta is not None:
                self._merge_meta(conn, session, meta)

        self._write(op)

    def seal_pages(self, session: str, pages: list[StoredPage], *, expect: int,
                   meta: dict[str, Any] | None = None) -> bool:
        """Append pages `expect, expect+1, ...` only if the session's page counter is still `expect`
        (what the caller read before rendering), merging `meta` in the same transaction. False (and
        nothing written) when another writer sealed first: re-read and try again."""
        check_session(session)
        if [p.index for p in pages] != list(range(expect, expect + len(pages))):
            raise InputError(f"seal_pages: page indices must run {expect}, {expect + 1}, ...")
        rows = self._page_rows(session, pages)

        def op(conn: sqlite3.Connection) -> bool:
            self._ensure_session(conn, session)
            if self._next_page(conn, session) != expect:
                return False
            self._write_pages(conn, rows)
            self._set_next_page(conn, session, expect + len(rows))
            if meta is not None:
                self._merge_meta(conn, session, meta)
            return True

        return self._write(op)

    def allocate_pages(self, session: str, n: int) -> int:
        """Reserve `n` page indices for one writer (a document's range); returns the first."""
        check_session(session)
        if not isinstance(n, int) or n < 0:
            raise InputError(f"allocate_pages needs a count >= 0, not {n!r}")

        def op(conn: sqlite3.Connection) -> int:
            self._ensure_session(conn, session)
            first = self._next_page(conn, session)
            self._set_next_page(conn, session, first + n)
            return first

        return self._write(op)

    def next_page(self, session: str) -> int:
        check_session(session)
        return self._read_tx(lambda conn: self._next_page(conn, session))

    @staticmethod
    def _pages(conn, session: str, start: int, stop: int | None, with_png: bool) -> list[StoredPage]:
        stop = (1 << 62) if stop is None else stop
        if with_png:
            rows = conn.execute(
                "SELECT p.idx, p.spans, p.text, p.text_tokens, p.hash, p.floor, p.meta, COALESCE(q.png, p.png) "
                "FROM pages p LEFT JOIN page_png q ON q.session = p.session AND q.idx = p.idx "
                "WHERE p.session = ? AND p.idx >= ? AND p.idx < ? ORDER BY p.idx", (session, start, stop)).fetchall()
        else:
            rows = conn.execute("SELECT idx, spans, text, text_tokens, hash, floor, meta FROM pages "
                                "WHERE session = ? AND idx >= ? AND idx < ? ORDER BY idx", (session, start, stop)).fetchall()
        return [StoredPage(r[0], json.loads(r[1]), r[2], r[3], r[4], bytes(r[7]) if with_png else None, r[5],
                           json.loads(r[6])) for r in rows]

    def get_pages(self, session: str, start: int = 0, stop: int | None = None, *, with_png: bool = True) -> list[StoredPage]:
        check_session(session)
        return self._read_tx(lambda conn: self._pages(conn, session, start, stop, with_png))

    def count_pages(self, session: str) -> int:
        check_session(session)
        return self._read("SELECT COUNT(*) FROM pages WHERE session = ?", (session,))[0][0]

    @staticmethod
    def _drop_pages(conn: sqlite3.Connection, session: str, indices: Sequence[int]) -> int:
        """Delete pages and the cache entries of their page hashes that no remaining page uses."""
        gone = 0
        for i in indices:
            row = conn.execute("SELECT hash FROM pages WHERE session = ? AND idx = ?", (session, int(i))).fetchone()
            if row is None:
                continue
            conn.execute("DELETE FROM pages WHERE session = ? AND idx = ?", (session, int(i)))
            conn.execute("DELETE FROM page_png WHERE session = ? AND idx = ?", (session, int(i)))
            gone += 1
            if conn.execute("SELECT 1 FROM pages WHERE session = ? AND hash = ? LIMIT 1", (session, row[0])).fetchone() is None:
                conn.execute("DELETE FROM cache WHERE session = ? AND key >= ? AND key < ?", (session, row[0] + "|", row[0] + "}"))
        return gone

    def delete_pages(self, session: str, indices: Sequence[int]) -> int:
        check_session(session)
        return self._write(lambda conn: self._drop_pages(conn, session, list(indices)))

    def set_floors(self, session: str, floors: dict[int, str | None], *,
                   ladder: Sequence[str] | None = None) -> dict[int, str | None]:
        """Set page floors. With `ladder` (sharpest tier first) a floor only ever coarsens: the rank
        comparison is a SQL `CASE` inside the write transaction, so a writer holding an older plan
        cannot sharpen a page another writer already let fade. Without it (an explicit restore) the
        floors are set as given. Returns the floors now stored for those pages (absent pages left out)."""
        check_session(session)
        if not floors:
            return {}
        names = check_ladder(ladder) if ladder is not None else None

        # the stored floor's rank, by the ladder passed in (stores know no model): none -1, ladder
        # order, an unknown tier as the coarsest, dropped last
        current = ("(CASE WHEN floor IS NULL THEN -1 WHEN floor = ? THEN ? ELSE (CASE floor "
                   + " ".join("WHEN ? THEN ?" for _ in names or ()) + " ELSE ? END) END)")
        current_args: list[Any] = [DROPPED, len(names or ())]
        for i, n in enumerate(names or ()):
            current_args += [n, i]
        current_args.append(len(names or ()) - 1)

        def op(conn: sqlite3.Connection) -> dict[int, str | None]:
            if names is None:
                conn.executemany("UPDATE pages SET floor = ? WHERE session = ? AND idx = ?",
                                 [(t, session, int(i)) for i, t in floors.items()])
            else:
                assert names is not None
                sql = f"UPDATE pages SET floor = ? WHERE session = ? AND idx = ? AND {current} < ?"
                for i, t in floors.items():
                    conn.execute(sql, [t, session, int(i), *current_args, tier_rank(t, names)])
            out: dict[int, str | None] = {}
            for i in floors:
                row = conn.execute("SELECT floor FROM pages WHERE session = ? AND idx = ?", (session, int(i))).fetchone()
                if row is not None:
                    out[int(i)] = row[0]
            return out

        return self._write(op)

    def get_floors(self, session: str) -> dict[int, str]:
        check_session(session)
        return dict(self._read(_FLOORS_SQL, (session,)))

    # -- metadata -----------------------------------------------------------------------------------
    def get_meta(self, session: str) -> dict[str, Any]:
        check_session(session)
        rows = self._read("SELECT meta FROM sessions WHERE id = ?", (session,))
        return json.loads(rows[0][0]) if rows else {}

    def set_meta(self, session: str, meta: dict[str, Any]) -> None:
        """Replace the whole metadata dict (`update_meta` merges, and is what concurrent writers want)."""
        check_session(session)
        text = dump_json(meta, "session metadata")

        def op(conn: sqlite3.Connection) -> None:
            self._ensure_session(conn, session)
            conn.execute("UPDATE sessions SET meta = ? WHERE id = ?", (text, session))

        self._write(op)

    def update_meta(self, session: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge top-level keys into the metadata (a None value removes the key); returns the result."""
        check_session(session)
        dump_json(patch, "session metadata")

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            self._ensure_session(conn, session)
            return self._merge_meta(conn, session, patch)

        return self._write(op)

    def snapshot(self, session: str, *, turns_from: int = 0, pages_from: int = 0) -> Snapshot:
        check_session(session)

        def op(conn: sqlite3.Connection) -> Snapshot:
            row = conn.execute("SELECT meta FROM sessions WHERE id = ?", (session,)).fetchone()
            (n_turns,) = conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM turns WHERE session = ?", (session,)).fetchone()
            pinned = frozenset(r[0] for r in conn.execute(  # the partial index: SQLite would scan the session
                "SELECT id FROM turns INDEXED BY turns_pinned WHERE session = ? AND pinned = 1", (session,)))
            floors = dict(conn.execute(_FLOORS_SQL, (session,)))
            return Snapshot(json.loads(row[0]) if row else {}, n_turns, self._next_page(conn, session),
                            self._turns(conn, session, turns_from, None), self._pages(conn, session, pages_from, None, False),
                            floors, pinned)

        return self._read_tx(op)

    # -- documents ----------------------------------------------------------------------------------
    def put_doc(self, session: str, doc_id: str, record: dict[str, Any], *, drop_pages: Sequence[int] = (),
                pages: Sequence[StoredPage] = (), if_record: Any = ANY) -> None:
        """Write a document record and, in the same transaction, its new `pages` (at their indices,
        from `allocate_pages`) and the deletion of the pages it replaces (`drop_pages`). With
        `if_record` (a record, or None for none) only if the stored record still equals it, else
        `DocConflictError` and nothing is written."""
        check_session(session)
        check_doc_id(doc_id)
        doc_pages(record)
        text = dump_json(record, f"document {doc_id} record")
        rows = self._page_rows(session, list(pages))

        def op(conn: sqlite3.Connection) -> None:
            if if_record is not ANY:
                row = conn.execute("SELECT record FROM docs WHERE session = ? AND id = ?", (session, doc_id)).fetchone()
                check_doc_unchanged(doc_id, json.loads(row[0]) if row else None, if_record)
            self._ensure_session(conn, session)
            self._drop_pages(conn, session, list(drop_pages))
            self._write_pages(conn, rows)
            if rows:
                self._set_next_page(conn, session, max(self._next_page(conn, session), max(r[1] for r in rows) + 1))
            conn.execute("INSERT OR REPLACE INTO docs (session, id, record) VALUES (?, ?, ?)", (session, doc_id, text))

        self._write(op)

    def get_docs(self, session: str) -> dict[str, dict[str, Any]]:
        check_session(session)
        return {r[0]: json.loads(r[1]) for r in self._read("SELECT id, record FROM docs WHERE session = ? ORDER BY id", (session,))}

    def delete_doc(self, session: str, doc_id: str) -> bool:
        """Delete a document: its record, its pages and their cache entries. False if there was none."""
        check_session(session)
        check_doc_id(doc_id)

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT record FROM docs WHERE session = ? AND id = ?", (session, doc_id)).fetchone()
            if row is None:
                return False
            self._drop_pages(conn, session, list(doc_pages(json.loads(row[0]))))
            conn.execute("DELETE FROM docs WHERE session = ? AND id = ?", (session, doc_id))
            return True

        return self._write(op)

    # -- cache --------------------------------------------------------------------------------------
    def put_cache(self, session: str, key: str, blob: bytes) -> None:
        check_session(session)
        self._write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO cache (session, key, blob) VALUES (?, ?, ?)", (session, key, blob)))

    def get_cache_blob(self, session: str, key: str) -> bytes | None:
        check_session(session)
        rows = self._read("SELECT blob FROM cache WHERE session = ? AND key = ?", (session, key))
        return bytes(rows[0][0]) if rows else None

    def delete_cache(self, session: str, key: str) -> None:
        check_session(session)
        self._write(lambda conn: conn.execute("DELETE FROM cache WHERE session = ? AND key = ?", (session, key)))

    # -- sessions ---------------------------------------------------------------------------------------
    def list_sessions(self) -> list[str]:
        return [r[0] for r in self._read("SELECT id FROM sessions ORDER BY id")]

    def delete_session(self, session: str) -> None:
        """Delete everything of a session: turns, keys, pages, floors, documents, cache, metadata."""
        check_session(session)

        def op(conn: sqlite3.Connection) -> None:
            for table, col in _TABLES:
                conn.execute(f"DELETE FROM {table} WHERE {col} = ?", (session,))

        self._write(op)

    def stats(self, session: str) -> dict[str, Any]:
        check_session(session)

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            (turns,) = conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM turns WHERE session = ?", (session,)).fetchone()
            (png_bytes,) = conn.execute("SELECT COALESCE(SUM(LENGTH(png)), 0) FROM page_png WHERE session = ?",
                                        (session,)).fetchone()
            pages = conn.execute("SELECT COUNT(*), COALESCE(SUM(text_tokens), 0), COALESCE(SUM(LENGTH(png)), 0) "
                                 "FROM pages WHERE session = ?", (session,)).fetchone()
            floors = dict(conn.execute("SELECT COALESCE(floor, 'none'), COUNT(*) FROM pages WHERE session = ? GROUP BY floor",
                                       (session,)))
            cache = conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(blob)), 0) FROM cache WHERE session = ?",
                                 (session,)).fetchone()
            (docs,) = conn.execute("SELECT COUNT(*) FROM docs WHERE session = ?", (session,)).fetchone()
            return {"session": session, "turns": turns, "pages": pages[0], "page_text_tokens": pages[1],
                    "png_bytes": pages[2] + png_bytes, "pages_by_floor": floors, "cache_entries": cache[0], "cache_bytes": cache[1],
                    "documents": docs}

        return self._read_tx(op)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

