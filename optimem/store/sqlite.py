"""SQLite store: the embedded default. One file (or memory), WAL, safe across threads and processes.

Each thread gets its own connection; appends run in `BEGIN IMMEDIATE` transactions so concurrent
writers (threads or processes) serialise on the write lock and ids stay dense and unique.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from typing import Any

from optimem.errors import ConfigError, StoreError
from optimem.store.base import StoredPage, StoredTurn, check_session

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, meta TEXT NOT NULL DEFAULT '{}', created REAL);
CREATE TABLE IF NOT EXISTS turns (
    session TEXT NOT NULL, id INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    metadata TEXT NOT NULL, created REAL NOT NULL, pinned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pages (
    session TEXT NOT NULL, idx INTEGER NOT NULL, spans TEXT NOT NULL, text TEXT NOT NULL,
    text_tokens INTEGER NOT NULL, hash TEXT NOT NULL, png BLOB NOT NULL, floor TEXT, meta TEXT NOT NULL,
    PRIMARY KEY (session, idx));
CREATE TABLE IF NOT EXISTS cache (session TEXT NOT NULL, key TEXT NOT NULL, blob BLOB NOT NULL,
    PRIMARY KEY (session, key));
"""


class SQLiteStore:
    def __init__(self, url: str = "sqlite://") -> None:
        self.url = url
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db, sqlite:// = memory
        if url in ("sqlite://", "sqlite:", "sqlite:///:memory:", "sqlite://:memory:"):
            path = ""
        elif url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :].split("?", 1)[0]
        else:
            raise ConfigError(f"bad SQLite URL {url!r}: use sqlite:///relative.db, sqlite:////abs/path.db or sqlite://")
        if not path or path == ":memory:":
            # a named shared-cache memory database: every thread's connection sees the same data
            self._target = f"file:optimem-{uuid.uuid4().hex}?mode=memory&cache=shared"
            self._uri = True
        else:
            self._target = path
            self._uri = False
        self._local = threading.local()
        self._keepalive = self._conn()  # holds an in-memory database open
        try:
            self._keepalive.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {url}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self._target, uri=self._uri, timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA busy_timeout = 30000")
                if not self._uri:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite store {self.url}: {exc}") from exc
            self._local.conn = conn
        return conn

    def _write(self, fn):
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite write failed ({self.url}): {exc}") from exc

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed ({self.url}): {exc}") from exc

    @staticmethod
    def _ensure_session(conn: sqlite3.Connection, session: str) -> None:
        conn.execute("INSERT OR IGNORE INTO sessions (id, meta, created) VALUES (?, '{}', ?)", (session, time.time()))

    # -- turns ------------------------------------------------------------------------------------
    def append_turns(self, session: str, turns: list[dict[str, Any]]) -> list[int]:
        check_session(session)
        rows = [
            (t["role"], t["content"], json.dumps(t.get("metadata") or {}, ensure_ascii=False),
             float(t.get("created") or time.time()), int(bool(t.get("pinned"))))
            for t in turns
        ]

        def op(conn: sqlite3.Connection) -> list[int]:
            self._ensure_session(conn, session)
            (n,) = conn.execute("SELECT COUNT(*) FROM turns WHERE session = ?", (session,)).fetchone()
            conn.executemany(
                "INSERT INTO turns (session, id, role, content, metadata, created, pinned) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(session, n + i, *row) for i, row in enumerate(rows)],
            )
            return list(range(n, n + len(rows)))

        return self._write(op)

    def get_turns(self, session: str, start: int = 0, stop: int | None = None) -> list[StoredTurn]:
        check_session(session)
        stop = (1 << 62) if stop is None else stop
        rows = self._read(
            "SELECT id, role, content, metadata, created, pinned FROM turns WHERE session = ? AND id >= ? AND id < ? ORDER BY id",
            (session, start, stop),
        )
        return [StoredTurn(r[0], r[1], r[2], json.loads(r[3]), r[4], bool(r[5])) for r in rows]

    def count_turns(self, session: str) -> int:
        check_session(session)
        return self._read("SELECT COUNT(*) FROM turns WHERE session = ?", (session,))[0][0]

    def set_pinned(self, session: str, turn_id: int, pinned: bool) -> None:
        check_session(session)

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE turns SET pinned = ? WHERE session = ? AND id = ?", (int(pinned), session, turn_id))
            if cur.rowcount != 1:
                raise StoreError(f"session {session!r} has no turn {turn_id}")

        self._write(op)

    # -- pages ------------------------------------------------------------------------------------
    def put_pages(self, session: str, pages: list[StoredPage], meta: dict[str, Any] | None = None) -> None:
        check_session(session)

        def op(conn: sqlite3.Connection) -> None:
            self._ensure_session(conn, session)
            conn.executemany(
                "INSERT OR REPLACE INTO pages (session, idx, spans, text, text_tokens, hash, png, floor, meta) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(session, p.index, json.dumps(p.spans), p.text, p.text_tokens, p.content_hash, p.png or b"", p.floor,
                  json.dumps(p.meta)) for p in pages],
            )
            if meta is not None:
                conn.execute("UPDATE sessions SET meta = ? WHERE id = ?", (json.dumps(meta), session))

        self._write(op)

    def get_pages(self, session: str, start: int = 0, stop: int | None = None, *, with_png: bool = True) -> list[StoredPage]:
        check_session(session)
        stop = (1 << 62) if stop is None else stop
        cols = "idx, spans, text, text_tokens, hash, floor, meta" + (", png" if with_png else "")
        rows = self._read(
            f"SELECT {cols} FROM pages WHERE session = ? AND idx >= ? AND idx < ? ORDER BY idx", (session, start, stop)
        )
        return [
            StoredPage(r[0], json.loads(r[1]), r[2], r[3], r[4], bytes(r[7]) if with_png else None, r[5], json.loads(r[6]))
            for r in rows
        ]

    def count_pages(self, session: str) -> int:
        check_session(session)
        return self._read("SELECT COUNT(*) FROM pages WHERE session = ?", (session,))[0][0]

    def set_floors(self, session: str, floors: dict[int, str | None]) -> None:
        check_session(session)
        self._write(lambda conn: conn.executemany(
            "UPDATE pages SET floor = ? WHERE session = ? AND idx = ?", [(t, session, i) for i, t in floors.items()]))

    # -- metadata -----------------------------------------------------------------------------------
    def get_meta(self, session: str) -> dict[str, Any]:
        check_session(session)
        rows = self._read("SELECT meta FROM sessions WHERE id = ?", (session,))
        return json.loads(rows[0][0]) if rows else {}

    def set_meta(self, session: str, meta: dict[str, Any]) -> None:
        check_session(session)

        def op(conn: sqlite3.Connection) -> None:
            self._ensure_session(conn, session)
            conn.execute("UPDATE sessions SET meta = ? WHERE id = ?", (json.dumps(meta), session))

        self._write(op)

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
        check_session(session)

        def op(conn: sqlite3.Connection) -> None:
            for table, col in (("turns", "session"), ("pages", "session"), ("cache", "session"), ("sessions", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {col} = ?", (session,))

        self._write(op)

    def stats(self, session: str) -> dict[str, Any]:
        check_session(session)
        turns = self.count_turns(session)
        pages = self._read("SELECT COUNT(*), COALESCE(SUM(text_tokens), 0), COALESCE(SUM(LENGTH(png)), 0) FROM pages WHERE session = ?", (session,))[0]
        floors = dict(self._read("SELECT COALESCE(floor, 'none'), COUNT(*) FROM pages WHERE session = ? GROUP BY floor", (session,)))
        cache = self._read("SELECT COUNT(*), COALESCE(SUM(LENGTH(blob)), 0) FROM cache WHERE session = ?", (session,))[0]
        return {"session": session, "turns": turns, "pages": pages[0], "page_text_tokens": pages[1],
                "png_bytes": pages[2], "pages_by_floor": floors, "cache_entries": cache[0], "cache_bytes": cache[1]}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
