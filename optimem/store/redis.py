"""Redis store: shared, for production. Plain Redis commands (no modules), redis-py idioms.

Keys: `{prefix}:{<session>}:<kind>` where the braces are a cluster hash tag, so every key of a
session lives in one slot and multi-key scripts and transactions work on Redis Cluster. Kinds:
`turns` (list of JSON turns; the list index is the turn id), `pages` (hash idx -> JSON page record),
`png` (hash idx -> PNG bytes), `cache` (hash key -> codec bytes), `meta` (JSON string).

Atomicity: appends run in one Lua script (ids are the list length at append time, so concurrent
writers get unique, dense ids and nothing interleaves inside a batch); page batches and their
metadata update go through one MULTI/EXEC transaction. If Redis goes away mid-call, the call raises
`StoreError` and Redis applied either all of it or nothing. `?ttl=SECONDS` puts a TTL on every key of
a session, refreshed on each write.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

from optimem.errors import ConfigError, StoreError
from optimem.store.base import StoredPage, StoredTurn, check_session

_KINDS = ("turns", "pages", "png", "cache", "meta")

# KEYS: turns, and every key of the session (for the TTL). ARGV[1] = ttl (0: none), ARGV[2..] = turns.
_APPEND = """
local n = redis.call('LLEN', KEYS[1])
for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], '{}') end
local ttl = tonumber(ARGV[1])
if ttl > 0 then for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end end
return n
"""
# KEYS[1] turns; ARGV: id, pinned (0/1)
_PIN = """
local raw = redis.call('LINDEX', KEYS[1], ARGV[1])
if not raw then return 0 end
local t = cjson.decode(raw)
t['pinned'] = (ARGV[2] == '1')
redis.call('LSET', KEYS[1], ARGV[1], cjson.encode(t))
return 1
"""


class RedisStore:
    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, client: Any = None) -> None:
        import redis

        self._redis = redis
        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        self.prefix = query.pop("prefix", ["optimem"])[0]
        if not self.prefix or any(c in self.prefix for c in "{}:* \n"):
            raise ConfigError(f"invalid Redis key prefix {self.prefix!r}")
        try:
            self.ttl = int(query.pop("ttl", ["0"])[0])
        except ValueError:
            raise ConfigError("Redis ttl must be an integer number of seconds") from None
        self.url = url
        base = urlunparse(parsed._replace(query=""))
        self.client = client or redis.Redis.from_url(base, socket_timeout=10, socket_connect_timeout=5,
                                                     health_check_interval=30)
        self._append = self.client.register_script(_APPEND)
        self._pin = self.client.register_script(_PIN)

    def _keys(self, session: str) -> dict[str, str]:
        check_session(session)
        return {k: f"{self.prefix}:{{{session}}}:{k}" for k in _KINDS}

    def _call(self, fn):
        try:
            return fn()
        except self._redis.exceptions.RedisError as exc:
            raise StoreError(f"Redis call failed ({self.url}): {exc}; nothing was half-written") from exc

    def _expire(self, pipe, keys: dict[str, str]) -> None:
        if self.ttl > 0:
            for k in keys.values():
                pipe.expire(k, self.ttl)

    # -- turns ------------------------------------------------------------------------------------
    def append_turns(self, session: str, turns: list[dict[str, Any]]) -> list[int]:
        keys = self._keys(session)
        payload = [
            json.dumps({"role": t["role"], "content": t["content"], "metadata": t.get("metadata") or {},
                        "created": float(t.get("created") or time.time()), "pinned": bool(t.get("pinned"))},
                       ensure_ascii=False)
            for t in turns
        ]
        all_keys = [keys["turns"], keys["meta"]] + [keys[k] for k in ("pages", "png", "cache")]
        n = self._call(lambda: self._append(keys=all_keys, args=[self.ttl, *payload]))
        return list(range(int(n), int(n) + len(payload)))

    def get_turns(self, session: str, start: int = 0, stop: int | None = None) -> list[StoredTurn]:
        keys = self._keys(session)
        end = -1 if stop is None else stop - 1
        if stop is not None and stop <= start:
            return []
        raw = self._call(lambda: self.client.lrange(keys["turns"], start, end))
        out = []
        for i, r in enumerate(raw):
            t = json.loads(r)
            out.append(StoredTurn(start + i, t["role"], t["content"], t.get("metadata") or {}, t["created"], bool(t.get("pinned"))))
        return out

    def count_turns(self, session: str) -> int:
        keys = self._keys(session)
        return int(self._call(lambda: self.client.llen(keys["turns"])))

    def set_pinned(self, session: str, turn_id: int, pinned: bool) -> None:
        keys = self._keys(session)
        ok = self._call(lambda: self._pin(keys=[keys["turns"]], args=[int(turn_id), "1" if pinned else "0"]))
        if not ok:
            raise StoreError(f"session {session!r} has no turn {turn_id}")

    # -- pages ------------------------------------------------------------------------------------
    def put_pages(self, session: str, pages: list[StoredPage], meta: dict[str, Any] | None = None) -> None:
        keys = self._keys(session)

        def op() -> None:
            pipe = self.client.pipeline(transaction=True)
            for p in pages:
                rec = {"spans": p.spans, "text": p.text, "text_tokens": p.text_tokens, "hash": p.content_hash,
                       "floor": p.floor, "meta": p.meta}
                pipe.hset(keys["pages"], str(p.index), json.dumps(rec, ensure_ascii=False))
                pipe.hset(keys["png"], str(p.index), p.png or b"")
            if meta is not None:
                pipe.set(keys["meta"], json.dumps(meta))
            self._expire(pipe, keys)
            pipe.execute()

        self._call(op)

    def get_pages(self, session: str, start: int = 0, stop: int | None = None, *, with_png: bool = True) -> list[StoredPage]:
        keys = self._keys(session)
        if stop is None:
            stop = self.count_pages(session)
        idx = [str(i) for i in range(start, stop)]
        if not idx:
            return []
        recs = self._call(lambda: self.client.hmget(keys["pages"], idx))
        pngs = self._call(lambda: self.client.hmget(keys["png"], idx)) if with_png else [None] * len(idx)
        out = []
        for i, rec, png in zip(range(start, stop), recs, pngs):
            if rec is None:
                continue
            r = json.loads(rec)
            out.append(StoredPage(i, r["spans"], r["text"], r["text_tokens"], r["hash"], png, r.get("floor"), r.get("meta") or {}))
        return out

    def count_pages(self, session: str) -> int:
        keys = self._keys(session)
        return int(self._call(lambda: self.client.hlen(keys["pages"])))

    def set_floors(self, session: str, floors: dict[int, str | None]) -> None:
        keys = self._keys(session)
        if not floors:
            return

        def op() -> None:
            # WATCH the pages hash so a concurrent page write cannot be overwritten with stale JSON
            with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(keys["pages"])
                        idx = [str(i) for i in floors]
                        current = pipe.hmget(keys["pages"], idx)
                        pipe.multi()
                        for i, raw in zip(floors, current):
                            if raw is None:
                                continue
                            rec = json.loads(raw)
                            rec["floor"] = floors[i]
                            pipe.hset(keys["pages"], str(i), json.dumps(rec, ensure_ascii=False))
                        pipe.execute()
                        return
                    except self._redis.exceptions.WatchError:
                        continue

        self._call(op)

    # -- metadata ---------------------------------------------------------------------------------
    def get_meta(self, session: str) -> dict[str, Any]:
        keys = self._keys(session)
        raw = self._call(lambda: self.client.get(keys["meta"]))
        return json.loads(raw) if raw else {}

    def set_meta(self, session: str, meta: dict[str, Any]) -> None:
        keys = self._keys(session)

        def op() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(keys["meta"], json.dumps(meta))
            self._expire(pipe, keys)
            pipe.execute()

        self._call(op)

    # -- cache ------------------------------------------------------------------------------------
    def put_cache(self, session: str, key: str, blob: bytes) -> None:
        keys = self._keys(session)

        def op() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(keys["cache"], key, blob)
            self._expire(pipe, keys)
            pipe.execute()

        self._call(op)

    def get_cache_blob(self, session: str, key: str) -> bytes | None:
        keys = self._keys(session)
        return self._call(lambda: self.client.hget(keys["cache"], key))

    def delete_cache(self, session: str, key: str) -> None:
        keys = self._keys(session)
        self._call(lambda: self.client.hdel(keys["cache"], key))

    # -- sessions ---------------------------------------------------------------------------------
    def list_sessions(self) -> list[str]:
        pattern = f"{self.prefix}:{{*}}:meta"
        keys = self._call(lambda: list(self.client.scan_iter(match=pattern, count=500)))
        out = []
        for k in keys:
            k = k.decode() if isinstance(k, bytes) else k
            out.append(k[len(self.prefix) + 2 : -len("}:meta")])
        return sorted(out)

    def delete_session(self, session: str) -> None:
        keys = self._keys(session)
        self._call(lambda: self.client.delete(*keys.values()))

    def stats(self, session: str) -> dict[str, Any]:
        keys = self._keys(session)
        pages = self.get_pages(session, with_png=False)
        floors: dict[str, int] = {}
        for p in pages:
            floors[p.floor or "none"] = floors.get(p.floor or "none", 0) + 1
        cache_n = self._call(lambda: self.client.hlen(keys["cache"]))
        cache_bytes = self._call(lambda: sum(self.client.hstrlen(keys["cache"], f) for f in self.client.hkeys(keys["cache"])))
        png_bytes = self._call(lambda: sum(self.client.hstrlen(keys["png"], f) for f in self.client.hkeys(keys["png"])))
        return {"session": session, "turns": self.count_turns(session), "pages": len(pages),
                "page_text_tokens": sum(p.text_tokens for p in pages), "png_bytes": png_bytes,
                "pages_by_floor": floors, "cache_entries": cache_n, "cache_bytes": cache_bytes}

    def close(self) -> None:
        self.client.close()
