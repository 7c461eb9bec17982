"""Redis store: shared, for production. Plain Redis commands (no modules), redis-py idioms.

Keys: `{prefix}:{<session>}:<kind>` where the braces are a cluster hash tag, so every key of a
session lives in one slot and multi-key scripts and transactions work on Redis Cluster. The prefix
is 1-64 characters from A-Z a-z 0-9 . _ - (no glob or tag characters), so a listing of one
prefix's sessions can never match another's. Kinds:
`turns` (list of JSON turns, as written, never rewritten; the list index is the turn id), `tkeys`
(hash idempotency key -> turn id), `pins` (hash turn id -> "1"/"0", overriding the turn's own
`pinned`), `pages` (hash idx -> JSON page record), `png` (hash idx -> PNG bytes), `floors` (hash idx
-> tier name, "" for none), `npages` (the next page index), `docs` (hash document id -> JSON record),
`cache` (hash key -> codec bytes), `meta` (JSON string).

Atomicity: appends, pins and floors run in Lua scripts that never re-encode JSON (cjson would turn
`1234567890123456789` into `1.2345678901235e+18` and `[]` into `{}`); page sealing, metadata merges
and document writes are WATCH/MULTI transactions that check what they read (the page counter, the
metadata) and start over when another writer got there first. redis-py's own retries are off (it
would resend a command whose connection broke after sending it, storing an append twice): a write
that fails after it was sent raises `StoreError` saying it *may have been applied*; turns that carry
a `key` make the retry a no-op. `?ttl=SECONDS` puts a TTL on every key of a session, refreshed on
each write; `?timeout=SECONDS` sets the socket timeout (default 10).

Persistence: the store assumes Redis keeps what it acknowledged across a restart (AOF, ideally
`appendfsync everysec` or `always`; RDB snapshots alone lose the last minutes). Without it a restart
empties the session and hands already-acknowledged turn ids to new turns. The first call checks
`CONFIG GET` and logs a warning when AOF and RDB are both off.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

from optimem.errors import ConfigError, InputError, StoreError
from optimem.store.base import (
    ANY,
    SESSION_RE,
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
)

log = logging.getLogger(__name__)

_KINDS = ("turns", "tkeys", "pins", "pages", "png", "floors", "npages", "docs", "cache", "meta")
PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

# KEYS: turns, tkeys, pins, meta, then the rest of the session (for the TTL).
# ARGV[1] = ttl (0: none), then per turn: key ("" for none), pinned ("0"/"1"), JSON.
_APPEND = """
local n = redis.call('LLEN', KEYS[1])
local ids = {}
for i = 2, #ARGV, 3 do
  local k, pin, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local hit = false
  if k ~= '' then hit = redis.call('HGET', KEYS[2], k) end
  if hit then
    ids[#ids + 1] = tonumber(hit)
  else
    redis.call('RPUSH', KEYS[1], raw)
    if k ~= '' then redis.call('HSET', KEYS[2], k, n) end
    if pin == '1' then redis.call('HSET', KEYS[3], n, '1') end
    ids[#ids + 1] = n
    n = n + 1
  end
end
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], '{}') end
local ttl = tonumber(ARGV[1])
if ttl > 0 then for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end end
return ids
"""
# KEYS: turns, pins, then the rest (TTL). ARGV: turn id, "1"/"0", ttl. The turn's JSON is not touched.
_PIN = """
local id = tonumber(ARGV[1])
if id == nil or id < 0 or id >= redis.call('LLEN', KEYS[1]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end end
return 1
"""
# KEYS: floors, pages, then the rest (TTL). ARGV[1] = ttl, ARGV[2] = ladder length L (0: set as
# given), ARGV[3 .. 2+L] = the ladder (sharpest first), then pairs (page index, tier or "" for none).
# Returns pairs (index, floor now stored) for the pages that exist.
_FLOORS = """
local L = tonumber(ARGV[2])
local rank = {}
for i = 1, L do rank[ARGV[2 + i]] = i - 1 end
local function r(t)
  if not t or t == '' then return -1 end
  if t == 'dropped' then return L end
  local x = rank[t]
  if x == nil then return L - 1 end
  return x
end
local out = {}
for i = 3 + L, #ARGV, 2 do
  local idx, t = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', KEYS[2], idx)
  if raw then
    local cur = redis.call('HGET', KEYS[1], idx)
    if not cur then
      -- a page sealed before floors had their own hash keeps its floor in its record (read only)
      cur = ''
      local ok, rec = pcall(cjson.decode, raw)
      if ok and type(rec) == 'table' and type(rec['floor']) == 'string' then cur = rec['floor'] end
    end
    if L == 0 or r(t) > r(cur) then
      redis.call('HSET', KEYS[1], idx, t)
      cur = t
    end
    out[#out + 1] = idx
    out[#out + 1] = cur
  end
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end end
return out
"""
# KEYS: meta, npages, turns, pins, pages, floors. ARGV: turns_from, pages_from. One instant's view.
_SNAPSHOT = """
local meta = redis.call('GET', KEYS[1]) or ''
local np = redis.call('GET', KEYS[2])
if not np then np = redis.call('HLEN', KEYS[5]) end
np = tonumber(np)
local nt = redis.call('LLEN', KEYS[3])
local turns = redis.call('LRANGE', KEYS[3], ARGV[1], -1)
local pins = redis.call('HGETALL', KEYS[4])
local pages = {}
local first = tonumber(ARGV[2])
local i = first
while i < np do
  local fields = {}
  for j = i, math.min(i + 999, np - 1) do fields[#fields + 1] = j end
  local got = redis.call('HMGET', KEYS[5], unpack(fields))
  for j = 1, #fields do pages[#pages + 1] = got[j] end
  i = i + 1000
end
local floors = redis.call('HGETALL', KEYS[6])
return {meta, np, nt, turns, pins, pages, floors}
"""


class RedisStore:
    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, client: Any = None) -> None:
        import redis

        self._redis = redis
        parsed = urlparse(url)
        query = parse_qs(parsed.query, keep_blank_values=True)
        self.prefix = query.pop("prefix", ["optimem"])[0]
        if not PREFIX_RE.fullmatch(self.prefix):
            raise ConfigError(f"invalid Redis key prefix {self.prefix!r}: use 1-64 characters from A-Z a-z 0-9 . _ - "
                              "(glob and hash-tag characters would let one prefix list another's sessions)")
        try:
            self.ttl = int(query.pop("ttl", ["0"])[0])
            timeout = float(query.pop("timeout", ["10"])[0])
        except ValueError:
            raise ConfigError("Redis ttl must be an integer number of seconds and timeout a number") from None
        if self.ttl < 0 or not timeout > 0:
            raise ConfigError("Redis ttl must be >= 0 and timeout > 0")
        self.url = url
        self._tl_store = threading.local()
        self._persistence_checked = False
        if client is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            base = urlunparse(parsed._replace(query=""))
            # no retries inside redis-py: it resends a command whose connection broke after sending,
            # which stores an unkeyed append twice. Reads are retried here, writes never blindly.
            client = redis.Redis.from_url(base, socket_timeout=timeout, socket_connect_timeout=min(timeout, 5),
                                          health_check_interval=30, retry=Retry(NoBackoff(), 0))
        self.client = client
        self._append = self.client.register_script(_APPEND)
        self._pin = self.client.register_script(_PIN)
        self._floors = self.client.register_script(_FLOORS)
        self._snapshot = self.client.register_script(_SNAPSHOT)

    def _keys(self, session: str) -> dict[str, str]:
        check_session(session)
        return {k: f"{self.prefix}:{{{session}}}:{k}" for k in _KINDS}

    # -- errors -----------------------------------------------------------------------------------
    def _call(self, fn):
        """Run one store operation; a Redis failure becomes a `StoreError` that says honestly whether
        a write may have been applied."""
        if not self._persistence_checked:
            self._check_persistence()
        writing = getattr(self._tl_store, "writing", False)
        attempts = 1 if writing else 2  # a read is safe to repeat once on a fresh connection
        for attempt in range(attempts):
            try:
                return fn()
            except self._redis.exceptions.RedisError as exc:
                sent = isinstance(exc, (self._redis.exceptions.ConnectionError, self._redis.exceptions.TimeoutError)) \
                    and "connecting to" not in str(exc)
                if not writing:
                    if attempt + 1 < attempts and isinstance(exc, self._redis.exceptions.ConnectionError):
                        continue
                    raise StoreError(f"Redis read failed ({self.url}): {exc}") from exc
                if sent:
                    raise StoreError(
                        f"Redis write failed ({self.url}): {exc}; it may have been applied (the connection broke "
                        "or timed out after the request was sent). Retry with the same turn keys to make the "
                        "retry a no-op, or read the session back before writing again") from exc
                raise StoreError(f"Redis write failed ({self.url}): {exc}; nothing was written") from exc

    def _write(self, fn):
        self._tl_store.writing = True
        try:
            return self._call(fn)
        finally:
            self._tl_store.writing = False

    def persistence(self) -> dict[str, bool | None]:
        """Whether the server keeps an append-only file and RDB snapshots (None: cannot tell, e.g.
        CONFIG is disabled on a managed service)."""
        out: dict[str, bool | None] = {"aof": None, "rdb": None}
        try:
            aof = _config_value(self.client.config_get("appendonly"), "appendonly")
            save = _config_value(self.client.config_get("save"), "save")
        except Exception as exc:  # noqa: BLE001 - CONFIG renamed or refused: nothing to report
            log.debug("cannot read the Redis persistence settings of %s: %s", self.url, exc)
            return out
        out["aof"] = None if aof is None else aof.lower() == "yes"
        out["rdb"] = None if save is None else bool(save.strip())
        return out

    def _check_persistence(self) -> None:
        self._persistence_checked = True
        p = self.persistence()
        if p["aof"] is False and p["rdb"] is False:
            log.warning("Redis at %s keeps neither an append-only file nor RDB snapshots: a restart loses every "
                        "session and gives already-acknowledged turn ids to new turns. Set `appendonly yes` "
                        "(appendfsync everysec or always) for optimem's store", self.url)

    def _expire(self, pipe, keys: dict[str, str]) -> None:
        if self.ttl > 0:
            for k in keys.values():
                pipe.expire(k, self.ttl)

    def _transact(self, keys: dict[str, str], watch: Sequence[str], body):
        """WATCH `watch`, let `body(pipe)` read (immediate mode) and queue writes after `pipe.multi()`,
        EXEC; start over when a watched key changed. `body` returns what the call returns."""
        def op():
            with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(*watch)
                        out = body(pipe)
                        if not pipe.explicit_transaction:  # body decided to write nothing
                            pipe.reset()
                            return out
                        self._expire(pipe, keys)
                        pipe.execute()
                        return out
                    except self._redis.exceptions.WatchError:
                        continue

        return self._write(op)

    # -- turns ------------------------------------------------------------------------------------
    def append_turns(self, session: str, turns: list[dict[str, Any]]) -> list[int]:
        keys = self._keys(session)
        args: list[Any] = [self.ttl]
        for r in prepare_turns(turns):
            args += [r.key or "", "1" if r.pinned else "0",
                     '{"role": %s, "content": %s, "metadata": %s, "created": %s}' % (
                         json.dumps(r.role, ensure_ascii=False), json.dumps(r.content, ensure_ascii=False),
                         r.metadata_json, json.dumps(r.created))]
        if len(args) == 1:
            return []
        order = ["turns", "tkeys", "pins", "meta"]
        # the rest of the session's keys are only for the TTL refresh: without a TTL, four keys to encode and send
        all_keys = [keys[k] for k in order] + ([keys[k] for k in _KINDS if k not in order] if self.ttl > 0 else [])
        ids = self._write(lambda: self._append(keys=all_keys, args=args))
        return [int(i) for i in ids]

    @staticmethod
    def _decode_turns(start: int, raw: list[bytes], pins: dict[int, bool]) -> list[StoredTurn]:
        out = []
        for i, r in enumerate(raw):
            t = json.loads(r)
            tid = start + i
            out.append(StoredTurn(tid, t["role"], t["content"], t.get("metadata") or {}, t["created"],
                                  pins.get(tid, bool(t.get("pinned")))))
        return out

    @staticmethod
    def _decode_pins(raw: dict) -> dict[int, bool]:
        return {int(k): v in (b"1", "1") for k, v in raw.items()}

    def get_turns(self, session: str, start: int = 0, stop: int | None = None) -> list[StoredTurn]:
        keys = self._keys(session)
        if stop is not None and stop <= start:
            return []
        end = -1 if stop is None else stop - 1

        def op():
            pipe = self.client.pipeline(transaction=True)
            pipe.lrange(keys["turns"], start, end)
            pipe.hgetall(keys["pins"])
            return pipe.execute()

        raw, pins = self._call(op)
        return self._decode_turns(start, raw, self._decode_pins(pins))

    def count_turns(self, session: str) -> int:
        keys = self._keys(session)
        return int(self._call(lambda: self.client.llen(keys["turns"])))

    def set_pinned(self, session: str, turn_id: int, pinned: bool) -> None:
        keys = self._keys(session)
        rest = [keys[k] for k in _KINDS if k not in ("turns", "pins")]
        ok = self._write(lambda: self._pin(keys=[keys["turns"], keys["pins"], *rest],
                                           args=[int(turn_id), "1" if pinned else "0", self.ttl]))
        if not ok:
            raise StoreError(f"session {session!r} has no turn {turn_id}")

    # -- pages ------------------------------------------------------------------------------------
    @staticmethod
    def _page_record(p: StoredPage) -> str:
        return dump_json({"spans": p.spans, "text": p.text, "text_tokens": p.text_tokens, "hash": p.content_hash,
                          "meta": p.meta}, f"page {p.index}")

    @staticmethod
    def _next_page_in(pipe, keys: dict[str, str]) -> int:
        n = pipe.get(keys["npages"])
        return int(n) if n is not None else int(pipe.hlen(keys["pages"]))  # sessions from before the counter

    @staticmethod
    def _merged_meta(pipe, keys: dict[str, str], patch: dict[str, Any]) -> str:
        raw = pipe.get(keys["meta"])
        meta = json.loads(raw) if raw else {}
        for k, v in patch.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        return dump_json(meta, "session metadata")

    def _queue_pages(self, pipe, keys: dict[str, str], pages: list[tuple[StoredPage, str]]) -> None:
        for p, rec in pages:
            pipe.hset(keys["pages"], str(p.index), rec)
            pipe.hset(keys["png"], str(p.index), p.png or b"")
            if p.floor is not None:  # a rewritten page keeps its floor unless one is given
                pipe.hset(keys["floors"], str(p.index), p.floor)

    def put_pages(self, session: str, pages: list[StoredPage], meta: dict[str, Any] | None = None) -> None:
        """Write pages at their indices (a page already there is replaced, its floor kept) and merge
        `meta`'s top-level keys into the session metadata, in one transaction."""
        keys = self._keys(session)
        recs = [(p, self._page_record(p)) for p in pages]
        if meta is not None:
            dump_json(meta, "session metadata")

        def body(pipe) -> None:
            n = self._next_page_in(pipe, keys)
            merged = self._merged_meta(pipe, keys, meta) if meta is not None else None
            pipe.multi()
            self._queue_pages(pipe, keys, recs)
            if recs:
                pipe.set(keys["npages"], max(n, max(p.index for p, _ in recs) + 1))
            if merged is not None:
                pipe.set(keys["meta"], merged)
            else:
                pipe.set(keys["meta"], "{}", nx=True)

        self._transact(keys, [keys["npages"], keys["pages"], keys["meta"]], body)

    def seal_pages(self, session: str, pages: list[StoredPage], *, expect: int,
                   meta: dict[str, Any] | None = None) -> bool:
        """Append pages `expect, expect+1, ...` only if the session's page counter is still `expect`,
        merging `meta` in the same transaction. False (nothing written) when another writer sealed
        first: re-read and try again."""
        keys = self._keys(session)
        if [p.index for p in pages] != list(range(expect, expect + len(pages))):
            raise InputError(f"seal_pages: page indices must run {expect}, {expect + 1}, ...")
        recs = [(p, self._page_record(p)) for p in pages]
        if meta is not None:
            dump_json(meta, "session metadata")

        def body(pipe) -> bool:
            if self._next_page_in(pipe, keys) != expect:
                pipe.unwatch()
                return False
            merged = self._merged_meta(pipe, keys, meta or {})
            pipe.multi()
            self._queue_pages(pipe, keys, recs)
            pipe.set(keys["npages"], expect + len(recs))
            pipe.set(keys["meta"], merged)
            return True

        return self._transact(keys, [keys["npages"], keys["pages"], keys["meta"]], body)

    def allocate_pages(self, session: str, n: int) -> int:
        """Reserve `n` page indices for one writer (a document's range); returns the first."""
        keys = self._keys(session)
        if not isinstance(n, int) or n < 0:
            raise InputError(f"allocate_pages needs a count >= 0, not {n!r}")

        def body(pipe) -> int:
            first = self._next_page_in(pipe, keys)
            pipe.multi()
            pipe.set(keys["npages"], first + n)
            pipe.set(keys["meta"], "{}", nx=True)
            return first

        return self._transact(keys, [keys["npages"], keys["pages"]], body)

    def next_page(self, session: str) -> int:
        keys = self._keys(session)

        def op() -> int:
            pipe = self.client.pipeline(transaction=True)
            pipe.get(keys["npages"])
            pipe.hlen(keys["pages"])
            n, hlen = pipe.execute()
            return int(n) if n is not None else int(hlen)

        return self._call(op)

    @staticmethod
    def _decode_page(i: int, rec: bytes, png: bytes | None, floor: bytes | None) -> StoredPage:
        r = json.loads(rec)
        f = (floor.decode() or None) if floor is not None else r.get("floor")
        return StoredPage(i, r["spans"], r["text"], r["text_tokens"], r["hash"], png, f, r.get("meta") or {})

    def get_pages(self, session: str, start: int = 0, stop: int | None = None, *, with_png: bool = True) -> list[StoredPage]:
        keys = self._keys(session)
        if stop is None:
            stop = self.next_page(session)
        idx = [str(i) for i in range(start, stop)]
        if not idx:
            return []

        def op():
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(keys["pages"], idx)
            pipe.hmget(keys["floors"], idx)
            if with_png:
                pipe.hmget(keys["png"], idx)
            return pipe.execute()

        got = self._call(op)
        recs, floors = got[0], got[1]
        pngs = got[2] if with_png else [None] * len(idx)
        return [self._decode_page(i, rec, png, fl) for i, rec, png, fl in zip(range(start, stop), recs, pngs, floors)
                if rec is not None]

    def count_pages(self, session: str) -> int:
        keys = self._keys(session)
        return int(self._call(lambda: self.client.hlen(keys["pages"])))

    def _queue_drop(self, pipe, keys: dict[str, str], indices: Sequence[int]):
        """Read (immediate mode) which of `indices` exist and the cache fields of their page hashes;
        returns a callable that queues the deletes after `multi()`."""
        idx = [str(int(i)) for i in indices]
        if not idx:
            return lambda: 0
        recs = pipe.hmget(keys["pages"], idx)
        hashes = set()
        present = []
        for i, rec in zip(idx, recs):
            if rec is not None:
                present.append(i)
                try:
                    hashes.add(json.loads(rec)["hash"] + "|")
                except (ValueError, KeyError, TypeError):
                    pass
        fields = [f for f in pipe.hkeys(keys["cache"]) if (f.decode() if isinstance(f, bytes) else f).split("|", 1)[0] + "|" in hashes] if hashes else []

        def queue() -> int:
            if present:
                pipe.hdel(keys["pages"], *present)
                pipe.hdel(keys["png"], *present)
                pipe.hdel(keys["floors"], *present)
            if fields:
                pipe.hdel(keys["cache"], *fields)
            return len(present)

        return queue

    def delete_pages(self, session: str, indices: Sequence[int]) -> int:
        """Delete pages (record, PNG, floor) and the cache entries of their page hashes."""
        keys = self._keys(session)

        def body(pipe) -> int:
            queue = self._queue_drop(pipe, keys, list(indices))
            pipe.multi()
            return queue()

        return self._transact(keys, [keys["pages"], keys["cache"]], body)

    def set_floors(self, session: str, floors: dict[int, str | None], *,
                   ladder: Sequence[str] | None = None) -> dict[int, str | None]:
        """Set page floors. With `ladder` (sharpest tier first) a floor only ever coarsens: the rank
        comparison runs inside one Lua script, so a writer holding an older plan cannot sharpen a page
        another writer already let fade. Without it (an explicit restore) floors are set as given.
        Returns the floors now stored for those pages (pages that do not exist are left out)."""
        keys = self._keys(session)
        if not floors:
            return {}
        names = check_ladder(ladder) if ladder is not None else []
        args: list[Any] = [self.ttl, len(names), *names]
        for i, t in floors.items():
            if t is not None and (not isinstance(t, str) or not t):
                raise InputError(f"invalid floor {t!r} for page {i}")
            args += [int(i), t or ""]
        rest = [keys[k] for k in _KINDS if k not in ("floors", "pages")]
        out = self._write(lambda: self._floors(keys=[keys["floors"], keys["pages"], *rest], args=args))
        return {int(out[j]): (out[j + 1].decode() if isinstance(out[j + 1], bytes) else out[j + 1]) or None
                for j in range(0, len(out), 2)}

    def get_floors(self, session: str) -> dict[int, str]:
        return dict(self.snapshot(session, turns_from=1 << 62).floors)

    # -- metadata ---------------------------------------------------------------------------------
    def get_meta(self, session: str) -> dict[str, Any]:
        keys = self._keys(session)
        raw = self._call(lambda: self.client.get(keys["meta"]))
        return json.loads(raw) if raw else {}

    def set_meta(self, session: str, meta: dict[str, Any]) -> None:
        """Replace the whole metadata dict (`update_meta` merges, and is what concurrent writers want)."""
        keys = self._keys(session)
        text = dump_json(meta, "session metadata")

        def op() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(keys["meta"], text)
            self._expire(pipe, keys)
            pipe.execute()

        self._write(op)

    def update_meta(self, session: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge top-level keys into the metadata (a None value removes the key); returns the result."""
        keys = self._keys(session)
        dump_json(patch, "session metadata")

        def body(pipe) -> dict[str, Any]:
            merged = self._merged_meta(pipe, keys, patch)
            pipe.multi()
            pipe.set(keys["meta"], merged)
            return json.loads(merged)

        return self._transact(keys, [keys["meta"]], body)

    def snapshot(self, session: str, *, turns_from: int = 0, pages_from: int = 0) -> Snapshot:
        keys = self._keys(session)
        names = ["meta", "npages", "turns", "pins", "pages", "floors"]
        meta, np_, nt, turns, pins, pages, floors = self._call(
            lambda: self._snapshot(keys=[keys[k] for k in names], args=[max(0, int(turns_from)), max(0, int(pages_from))]))
        pinmap = self._decode_pins(dict(zip(pins[::2], pins[1::2])))
        floor_raw = {int(k): v.decode() if isinstance(v, bytes) else v for k, v in zip(floors[::2], floors[1::2])}
        start = max(0, int(turns_from))
        out_pages = []
        for i, rec in zip(range(max(0, int(pages_from)), int(np_)), pages):
            if rec is None:
                continue
            fl = floor_raw.get(i)
            out_pages.append(self._decode_page(i, rec, None, fl.encode() if fl is not None else None))
        out_floors = {i: f for i, f in floor_raw.items() if f}
        for p in out_pages:  # floors of pages sealed before floors had their own hash
            if p.floor and p.index not in floor_raw:
                out_floors[p.index] = p.floor
        turn_list = self._decode_turns(start, turns, pinmap) if start < int(nt) else []
        pinned = frozenset(i for i, v in pinmap.items() if v) | frozenset(t.id for t in turn_list if t.pinned)
        return Snapshot(json.loads(meta) if meta else {}, int(nt), int(np_), turn_list, out_pages, out_floors, pinned)

    # -- documents --------------------------------------------------------------------------------
    def put_doc(self, session: str, doc_id: str, record: dict[str, Any], *, drop_pages: Sequence[int] = (),
                pages: Sequence[StoredPage] = (), if_record: Any = ANY) -> None:
        """Write a document record and, in the same transaction, its new `pages` (at their indices,
        from `allocate_pages`) and the deletion of the pages it replaces (`drop_pages`). With
        `if_record` (a record, or None for none) only if the stored record still equals it, else
        `DocConflictError` and nothing is written."""
        keys = self._keys(session)
        check_doc_id(doc_id)
        doc_pages(record)
        text = dump_json(record, f"document {doc_id} record")
        recs = [(p, self._page_record(p)) for p in pages]

        def body(pipe) -> None:
            if if_record is not ANY:
                raw = pipe.hget(keys["docs"], doc_id)
                check_doc_unchanged(doc_id, json.loads(raw) if raw is not None else None, if_record)
            queue = self._queue_drop(pipe, keys, list(drop_pages))
            n = self._next_page_in(pipe, keys)
            pipe.multi()
            queue()
            self._queue_pages(pipe, keys, recs)
            if recs:
                pipe.set(keys["npages"], max(n, max(p.index for p, _ in recs) + 1))
            pipe.hset(keys["docs"], doc_id, text)
            pipe.set(keys["meta"], "{}", nx=True)

        self._transact(keys, [keys["docs"], keys["pages"], keys["cache"], keys["npages"]], body)

    def get_docs(self, session: str) -> dict[str, dict[str, Any]]:
        keys = self._keys(session)
        raw = self._call(lambda: self.client.hgetall(keys["docs"]))
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in sorted(raw.items())}

    def delete_doc(self, session: str, doc_id: str) -> bool:
        """Delete a document: its record, its pages and their cache entries. False if there was none."""
        keys = self._keys(session)
        check_doc_id(doc_id)

        def body(pipe) -> bool:
            raw = pipe.hget(keys["docs"], doc_id)
            if raw is None:
                pipe.unwatch()
                return False
            queue = self._queue_drop(pipe, keys, list(doc_pages(json.loads(raw))))
            pipe.multi()
            queue()
            pipe.hdel(keys["docs"], doc_id)
            return True

        return self._transact(keys, [keys["docs"], keys["pages"], keys["cache"]], body)

    # -- cache ------------------------------------------------------------------------------------
    def put_cache(self, session: str, key: str, blob: bytes) -> None:
        keys = self._keys(session)

        def op() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(keys["cache"], key, blob)
            self._expire(pipe, keys)
            pipe.execute()

        self._write(op)

    def get_cache_blob(self, session: str, key: str) -> bytes | None:
        keys = self._keys(session)
        return self._call(lambda: self.client.hget(keys["cache"], key))

    def delete_cache(self, session: str, key: str) -> None:
        keys = self._keys(session)
        self._write(lambda: self.client.hdel(keys["cache"], key))

    # -- sessions ---------------------------------------------------------------------------------
    def list_sessions(self) -> list[str]:
        # the prefix is checked to hold no glob characters, and every key found is matched against the
        # exact key shape, so the listing never reaches another prefix's sessions
        pattern = f"{self.prefix}:{{*}}:meta"
        shape = re.compile(re.escape(self.prefix) + r":\{(.+)\}:meta")
        keys = self._call(lambda: list(self.client.scan_iter(match=pattern, count=500)))
        out = set()
        for k in keys:
            m = shape.fullmatch(k.decode() if isinstance(k, bytes) else k)
            if m and SESSION_RE.fullmatch(m.group(1)):
                out.add(m.group(1))
        return sorted(out)

    def delete_session(self, session: str) -> None:
        """Delete everything of a session: turns, keys, pins, pages, floors, documents, cache, metadata."""
        keys = self._keys(session)
        self._write(lambda: self.client.delete(*keys.values()))

    def stats(self, session: str) -> dict[str, Any]:
        keys = self._keys(session)
        snap = self.snapshot(session, turns_from=1 << 62)
        floors: dict[str, int] = {}
        for p in snap.pages:
            floors[p.floor or "none"] = floors.get(p.floor or "none", 0) + 1

        def op():
            cache_fields = self.client.hkeys(keys["cache"])
            png_fields = self.client.hkeys(keys["png"])
            pipe = self.client.pipeline(transaction=False)
            for f in cache_fields:
                pipe.hstrlen(keys["cache"], f)
            for f in png_fields:
                pipe.hstrlen(keys["png"], f)
            sizes = pipe.execute() if cache_fields or png_fields else []
            return len(cache_fields), sum(sizes[: len(cache_fields)]), sum(sizes[len(cache_fields):]), \
                int(self.client.hlen(keys["docs"]))

        cache_n, cache_bytes, png_bytes, docs = self._call(op)
        return {"session": session, "turns": snap.turn_count, "pages": len(snap.pages),
                "page_text_tokens": sum(p.text_tokens for p in snap.pages), "png_bytes": png_bytes,
                "pages_by_floor": floors, "cache_entries": cache_n, "cache_bytes": cache_bytes, "documents": docs}

    def close(self) -> None:
        self.client.close()


def _config_value(reply: Any, name: str) -> str | None:
    """A CONFIG GET reply as one string (a standalone server answers a dict; a cluster client may
    answer one dict per node: any node without the setting counts)."""
    if isinstance(reply, dict):
        if name in reply:
            v = reply[name]
            return v.decode() if isinstance(v, bytes) else str(v)
        for v in reply.values():
            if isinstance(v, dict) and name in v:
                x = v[name]
                return x.decode() if isinstance(x, bytes) else str(x)
    return None
