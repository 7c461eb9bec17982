"""The Redis store on Redis Cluster: `redis+cluster://host:port,host:port/?prefix=..&ttl=..&durable=1`.

Everything `RedisStore` does works unchanged, because every key of a session carries the session as
its hash tag (`{prefix}:{<session>}:<kind>`): one session lives in one slot, so its Lua scripts and
MULTI/EXEC transactions only ever name keys of one slot, and redis-py's cluster client routes them to
the master that owns it (it refuses a cross-slot script or transaction instead of splitting it).
What differs on a cluster, and lives here:

- Routing. Since all of a session's keys share one slot, the store computes that slot once per
  session and sends the session's scripts, transactions and commands straight to the master that
  owns it, through that node's plain `redis.Redis` pool (the one redis-py's cluster client keeps for
  the node): the same client work per call as on a single node. redis-py's `RedisCluster` does much
  more Python work per command (command policies, hashing every key, node selection, metrics), which
  on a CPU-bound client costs more than the round trip. The slot map is redis-py's; when the direct
  call fails because the map is stale (MOVED/ASK, TRYAGAIN, CLUSTERDOWN, a refused connection), the
  call is retried through `RedisCluster` itself, which follows redirects and updates the map that the
  next direct call reads.

- Topology changes. MOVED/ASK redirects during resharding are followed inside redis-py. A failover
  (a master dies, its replica is promoted after `cluster-node-timeout`) shows up as refused
  connections and CLUSTERDOWN for a few seconds; calls are retried with backoff and a topology refresh
  for up to `retry_s` seconds (URL parameter, default 15). A write whose outcome is unknown (the
  connection broke after the command was sent) is retried only when it is an append whose turns all
  carry a `key` (RedisStore's script makes the resend a no-op); any other such write raises
  `StoreError` saying it may have been applied, rather than risk storing a turn twice.
- Durability. Replication is asynchronous: a write acknowledged by a master that dies before its
  replica received it is lost. With `durable=N` every write returns only after N replicas
  acknowledged it (Redis `WAIT`), and raises `StoreError` when they do not within `wait_ms`
  (default 2000). `WAIT` counts the writes of the connection it is sent on, so it follows, on one
  connection to the slot's master, a marker write to the session's slot (`...:{session}:sync`,
  expires after `wait_ms`): replication is in order, so the replicas holding the marker also hold
  every earlier write of that slot, including the original of a keyed retry that turned out a no-op.
  A Lua write (append, pin, floors) sent directly is pipelined with the marker and `WAIT` (one round
  trip in all); a transaction, or a call retried through `RedisCluster`, is followed by a second
  round trip for them.
- Listing sessions. SCAN runs on every primary; the MATCH pattern escapes the prefix, and every key
  returned is also checked against the exact key shape, so a prefix can never widen the listing.
  Keys that move between masters while the listing runs can be missed or seen twice (deduplicated).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import re
import threading
import time
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlencode, urlparse

from optimem.errors import ConfigError, StoreError
from optimem.store.base import check_session
from optimem.store.redis import RedisStore

log = logging.getLogger(__name__)

SCHEMES = ("redis+cluster", "rediss+cluster")
_OWN_PARAMS = ("durable", "wait_ms", "retry_s")


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def parse_cluster_url(url: str) -> dict[str, Any]:
    """Seeds, credentials and options of a `redis+cluster://` URL; raises ConfigError on anything malformed."""
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES:
        raise ConfigError(f"not a Redis Cluster URL {url!r}: use redis+cluster://host:port,host:port/?prefix=..")
    netloc = parsed.netloc
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        username, _, password = userinfo.partition(":")
        username = unquote(username) or None
        password = unquote(password) or None
    seeds = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"Redis Cluster URL {url!r}: seed {part!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    if parsed.path not in ("", "/", "/0"):
        raise ConfigError(f"Redis Cluster URL {url!r}: a cluster has only database 0; drop {parsed.path!r}")
    query = parse_qs(parsed.query, keep_blank_values=True)
    opts: dict[str, Any] = {"seeds": seeds, "username": username, "password": password,
                            "ssl": parsed.scheme == "rediss+cluster"}
    try:
        opts["durable"] = int(query.pop("durable", ["0"])[0])
        opts["wait_ms"] = int(query.pop("wait_ms", ["2000"])[0])
        opts["retry_s"] = float(query.pop("retry_s", ["15"])[0])
        opts["timeout"] = float(query.get("timeout", ["10"])[-1])  # RedisStore's parameter: left in the query
    except ValueError:
        raise ConfigError(f"Redis Cluster URL {url!r}: durable and wait_ms are integers, retry_s and timeout "
                          "numbers (seconds)") from None
    if opts["durable"] < 0 or opts["wait_ms"] <= 0 or not 0 <= opts["retry_s"] < math.inf \
            or not 0 < opts["timeout"] < math.inf:
        raise ConfigError(f"Redis Cluster URL {url!r}: durable >= 0, wait_ms > 0, retry_s >= 0 and timeout > 0")
    # what is left (prefix, ttl) is RedisStore's to read
    opts["store_query"] = urlencode({k: v[-1] for k, v in query.items()})
    return opts


@functools.lru_cache(maxsize=1 << 17)
def _key_slot(key: bytes) -> int:
    """A key's cluster hash slot (CRC16 of its hash tag), remembered: the same keys come back on every call."""
    from redis.crc import key_slot

    return key_slot(key)


_CLASSES: dict[str, type] = {}


def _cluster_class() -> type:
    """redis-py's RedisCluster whose transaction pipelines answer `explicit_transaction` (has `multi()`
    been called?) as standalone pipelines do; RedisStore's WATCH/MULTI bodies ask it to tell a
    transaction that decided to write nothing."""
    if not _CLASSES:
        from redis.cluster import ClusterPipeline, RedisCluster

        class _Pipeline(ClusterPipeline):
            @property
            def explicit_transaction(self) -> bool:
                return bool(getattr(self._execution_strategy, "_explicit_transaction", False))

        class _RedisCluster(RedisCluster):
            def keyslot(self, key):
                # redis-py hashes every key of every command, twice for a script: the append script
                # names all ten keys of a session, so the CRC dominated the client's CPU per append.
                # Key -> slot never changes; a bounded cache makes it a lookup.
                return _key_slot(self.encoder.encode(key))

            def pipeline(self, transaction=None, shard_hint=None):
                pipe = super().pipeline(transaction, shard_hint)
                pipe.__class__ = _Pipeline
                return pipe

        _CLASSES["cluster"] = _RedisCluster
    return _CLASSES["cluster"]


class _RoutedScript:
    """A registered Lua script run on the client the current call is routed to (the session's master
    directly, or `RedisCluster` when retrying after a topology change)."""

    def __init__(self, store: "RedisClusterStore", script: Any) -> None:
        self.store, self.script = store, script

    def __call__(self, keys: Any = None, args: Any = None) -> Any:
        st = self.store
        client = st.client
        if st.durable and client is not st._cluster and getattr(st._tl_store, "writing", False) \
                and st.wait_ms / 1000 + 1 < st.timeout:
            return st._script_and_wait(self.script, client, list(keys or []), list(args or []))
        return self.script(keys=keys, args=args, client=client)


class RedisClusterStore(RedisStore):
    """`RedisStore` on Redis Cluster, each session's calls sent to its slot's master; see the module
    docstring for what differs."""

    @property
    def client(self) -> Any:
        """What RedisStore's methods talk to: inside a routed call the session's master (a plain
        `redis.Redis`), otherwise redis-py's `RedisCluster`."""
        route = getattr(self._local, "route", None)
        return self._cluster if route is None else route

    @client.setter
    def client(self, value: Any) -> None:
        self._cluster = value

    def __init__(self, url: str, *, client: Any = None) -> None:
        import redis
        from redis.cluster import ClusterNode, RedisCluster

        opts = parse_cluster_url(url)
        self.durable: int = opts["durable"]
        self.wait_ms: int = opts["wait_ms"]
        self.retry_s: float = opts["retry_s"]
        self.timeout: float = opts["timeout"]
        self._local = threading.local()
        if client is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:
                # No retries inside redis-py: it would resend a command whose connection broke after it
                # was sent, and an append resent that way can be stored twice. `_call` retries instead,
                # knowing which calls are safe to repeat. MOVED/ASK/TRYAGAIN are still followed inside.
                client = _cluster_class()(
                    startup_nodes=[ClusterNode(h, p) for h, p in opts["seeds"]],
                    username=opts["username"], password=opts["password"], ssl=opts["ssl"],
                    retry=Retry(NoBackoff(), 0), require_full_coverage=True,
                    socket_timeout=opts["timeout"], socket_connect_timeout=min(opts["timeout"], 2),
                    health_check_interval=30)
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
                raise StoreError(f"cannot reach Redis Cluster at {opts['seeds']}: {exc}") from exc
        elif type(client) is RedisCluster:
            client.__class__ = _cluster_class()  # RedisStore's transactions ask pipelines `explicit_transaction`
        parsed = urlparse(url)
        store_url = parsed._replace(query=opts["store_query"]).geturl()
        super().__init__(store_url, client=client)
        self.url = url
        for name in ("_append", "_pin", "_floors", "_snapshot"):
            setattr(self, name, _RoutedScript(self, getattr(self, name)))
        self._node_clients: dict[tuple[str, int], Any] = {}
        self._node_lock = threading.Lock()
        from redis.exceptions import (AskError, ClusterDownError, ClusterError, ConnectionError, MasterDownError,
                                      RedisClusterException, RedisError, SlotNotCoveredError, TimeoutError,
                                      TryAgainError)

        self._errors_all = (RedisError, RedisClusterException)
        # the command was not carried out: safe to send again whatever it was. A redirect (MOVED/ASK,
        # AskError is MOVED's base) reaching us comes from a transaction, which Redis aborted; ClusterError
        # is redis-py giving up after many redirects ("TTL exhausted").
        self._not_applied = (ClusterDownError, SlotNotCoveredError, TryAgainError, MasterDownError, AskError,
                             ClusterError)
        self._maybe_applied = (ConnectionError, TimeoutError)
        self._redirect = (AskError, TryAgainError)  # the slot map was stale: RedisCluster follows these itself

    # -- routing ----------------------------------------------------------------------------------
    def _route(self, session: str | None) -> Any:
        """The plain client of the master that owns `session`'s slot in redis-py's slot map, or None
        (no session, or the slot is not covered in the map: the call goes through RedisCluster)."""
        if session is None:
            return None
        slot = _key_slot(f"{{{session}}}".encode())  # the hash tag's slot
        nodes = self._cluster.nodes_manager.slots_cache.get(slot)
        if not nodes:
            return None
        return nodes[0].redis_connection or self._cluster.get_redis_connection(nodes[0])

    # -- retries ----------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any]) -> Any:
        """RedisStore's `_call`, retried across topology changes for up to `retry_s` seconds.

        Retried: anything Redis did not carry out (CLUSTERDOWN, TRYAGAIN, a redirect that aborted a
        transaction, a refused connection), and every read. A write whose connection broke after it was
        sent is retried only when it is an append whose turns all carry a `key` (the script makes the
        resend a no-op); any other such write raises `StoreError` saying it may have been applied."""
        if not getattr(self, "_persistence_checked", True):
            self._check_persistence()
        writing = getattr(getattr(self, "_tl_store", None), "writing", False)  # set by RedisStore._write
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        outer = getattr(self._local, "route", None)
        # first attempt straight to the session's master (set by _keys, which every method calls first)
        direct = getattr(self._local, "session", None)
        while True:
            route = self._route(direct)
            self._local.route = route
            try:
                return fn()
            except self._errors_all as exc:
                self._local.route = outer
                direct = None  # retries go through RedisCluster, which follows MOVED/ASK and updates the slot map
                if route is not None and isinstance(exc, self._redirect):
                    log.debug("slot map stale for this session (%s); retrying through the cluster client", exc)
                    continue  # nothing was carried out, and the retry follows the redirect
                maybe = isinstance(exc, self._maybe_applied) and "connecting to" not in str(exc)
                # redis-py words a failed connect "Error N connecting to host:port": nothing was sent then
                safe = not maybe or not writing or getattr(self._local, "keyed", False)
                retryable = isinstance(exc, self._not_applied + self._maybe_applied)
                if retryable and safe and time.monotonic() + delay < deadline:
                    log.info("Redis Cluster call failed (%s); refreshing the topology and retrying", exc)
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 1.0)
                    self._refresh()
                    continue
                if not writing:
                    raise StoreError(f"Redis Cluster read failed ({self.url}): {exc}") from exc
                if maybe:
                    raise StoreError(
                        f"Redis Cluster write failed ({self.url}): {exc}; it may have been applied (the connection "
                        "broke or timed out after the request was sent). Retry with the same turn keys to make the "
                        "retry a no-op, or read the session back before writing again") from exc
                raise StoreError(f"Redis Cluster write failed ({self.url}): {exc}; nothing was written "
                                 f"(retried for {self.retry_s:g} s)") from exc
            finally:
                self._local.route = outer

    def _refresh(self) -> None:
        try:
            self._cluster.nodes_manager.initialize()
        except Exception as exc:  # noqa: BLE001 - no node answered yet; the next attempt tries again
            log.debug("topology refresh failed: %s", exc)

    def _keys(self, session: str) -> dict[str, str]:
        keys = super()._keys(session)
        self._local.session = session  # which slot a durable write waits on (every method reads its keys first)
        return keys

    def append_turns(self, session: str, turns: list[dict[str, Any]]) -> list[int]:
        # keyed turns make a resent append a no-op, so an ambiguous failure may be retried
        self._local.keyed = bool(turns) and all(isinstance(t, dict) and t.get("key") for t in turns)
        try:
            return super().append_turns(session, turns)
        finally:
            self._local.keyed = False

    # -- durability -------------------------------------------------------------------------------
    def _write(self, fn: Callable[[], Any]) -> Any:
        """Every write of RedisStore passes here; with durable=N it returns once N replicas have it."""
        self._local.acked = None
        result = super()._write(fn)
        if self.durable:
            acked = self._local.acked  # set when a script's write and its WAIT went in one round trip
            if acked is None:
                self._wait_replicas(self._local.session)
            else:
                self._check_acked(self._local.session, acked)
        return result

    def _script_and_wait(self, script: Any, client: Any, keys: list, args: list) -> Any:
        """A Lua write (append, pin, floors) sent straight to the session's master together with the
        marker write and `WAIT`, pipelined on one connection: one round trip where the write and then
        `_wait_replicas` take two. The marker write is kept so that `WAIT` also covers an earlier write
        that this one finds already done (a retried keyed append that is a no-op writes nothing and would
        leave the connection's replication offset behind it)."""
        from redis.exceptions import NoScriptError

        marker = self._sync_marker(self._local.session)
        for attempt in (0, 1):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.set(marker, b"1", px=self.wait_ms)
            pipe.wait(self.durable, self.wait_ms)
            res = pipe.execute(raise_on_error=False)
            if attempt == 0 and isinstance(res[0], NoScriptError):  # a node that has not seen the script yet
                script.sha = client.script_load(script.script)
                continue
            for r in res:
                if isinstance(r, Exception):
                    raise r
            self._local.acked = int(res[2])
            return res[0]

    def _node_client(self, host: str, port: int) -> Any:
        import redis

        with self._node_lock:
            c = self._node_clients.get((host, port))
            if c is None:
                kw = self._cluster.nodes_manager.connection_kwargs
                c = redis.Redis(host=host, port=port, username=kw.get("username"), password=kw.get("password"),
                                ssl=kw.get("ssl", False), socket_timeout=(self.wait_ms / 1000) + 10,
                                socket_connect_timeout=2)
                self._node_clients[(host, port)] = c
            return c

    def _sync_marker(self, session: str) -> str:
        """The key a durable write sets in the session's slot before `WAIT` (see `_script_and_wait`)."""
        return f"{self.prefix}:{{{check_session(session)}}}:sync"

    def _wait_replicas(self, session: str) -> None:
        import redis

        marker = self._sync_marker(session)

        def op() -> int:
            node = self._cluster.get_node_from_key(marker)
            pipe = self._node_client(node.host, node.port).pipeline(transaction=False)
            pipe.set(marker, b"1", px=self.wait_ms)
            pipe.wait(self.durable, self.wait_ms)
            try:
                return int(pipe.execute()[1])
            except redis.exceptions.ResponseError as exc:
                if str(exc).startswith(("MOVED", "ASK")):  # the slot moved since the write: follow it
                    raise redis.exceptions.TryAgainError(str(exc)) from exc
                raise

        self._check_acked(session, self._call(op))

    def _check_acked(self, session: str, acked: int) -> None:
        if acked < self.durable:
            raise StoreError(
                f"the write to session {session!r} was applied on its master but only {acked} of {self.durable} "
                f"replicas confirmed it within {self.wait_ms} ms; it is lost if that master fails now. Check the "
                "replicas (INFO replication), or raise wait_ms")

    # -- listing ----------------------------------------------------------------------------------
    def list_sessions(self) -> list[str]:
        pattern = _glob_escape(self.prefix) + ":{*}:meta"
        shape = re.compile(re.escape(self.prefix) + r":\{([A-Za-z0-9._-]{1,128})\}:meta")

        self._local.session = None  # a listing is not routed to one session's master

        def op() -> set[str]:
            found: set[str] = set()
            for node in self._cluster.get_primaries():
                for k in self._cluster.get_redis_connection(node).scan_iter(match=pattern, count=1000, _type="string"):
                    m = shape.fullmatch(k.decode() if isinstance(k, bytes) else k)
                    if m:
                        found.add(m.group(1))
            return found

        return sorted(self._call(op))

    def close(self) -> None:
        for c in self._node_clients.values():
            c.close()
        super().close()

