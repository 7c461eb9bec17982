"""Throwaway Redis on loopback for benchmarks and tests: one node, or a Redis Cluster of 3 masters + 3 replicas.

Each node is a real `redis-server` process on a free loopback port with its own temporary directory,
an append-only file fsynced every second (what the store asks of a production Redis) and no RDB
snapshots. The cluster is built the way an operator builds one (`redis-cli --cluster create ...
--cluster-replicas 1`) and is handed over only when every node reports `cluster_state:ok` and every
replica's link to its master is up, so failover and `WAIT` work from the first write.

Lives in the package (not in tests/) because `optimem bench store` starts the same cluster.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from optimem.errors import ConfigError

log = logging.getLogger(__name__)
# a CLUSTER NODES line: <40-hex id> <ip>:<port>@<bus port>[,hostname] <flags> <master id or -> ...
_NODE_LINE = re.compile(r"[0-9a-f]{40} \S*:(\d+)@\d+\S* \S+ \S+ \d+ \d+ \d+ \S+")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(taken: set[int] | None = None) -> int:
    """A loopback port P that is free along with P + 10000 (Redis Cluster's bus port)."""
    taken = taken or set()
    for _ in range(500):
        p = random.randint(20000, 55000)
        if p not in taken and p + 10000 not in taken and _port_free(p) and _port_free(p + 10000):
            return p
    raise ConfigError("no free loopback port pair (P, P+10000) for a Redis Cluster node")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{name} is not installed: `bash scripts/setup.sh --dev` installs Debian's redis-server")
    return path


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisNode:
    """One redis-server process; `cluster=True` starts it in cluster mode."""

    port: int
    dir: Path
    cluster: bool = False
    node_timeout_ms: int = 1000
    appendonly: bool = True  # what optimem's store asks of a production Redis (AOF, fsync every second)
    appendfsync: str = "everysec"  # "always": every acknowledged write survives kill -9 (crash tests)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, timeout: float = 10.0) -> "RedisNode":
        args = [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
                "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log")]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", str(self.node_timeout_ms),
                     # a replica with a stale link may still be promoted: tests kill masters on purpose
                     "--cluster-replica-validity-factor", "0",
                     "--cluster-require-full-coverage", "yes"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"redis-server on port {self.port} exited at start; see {self.dir / 'redis.log'}")
            if _ping(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server on port {self.port} did not answer PING within {timeout:.0f} s")

    def kill(self) -> None:
        """kill -9: no shutdown, no goodbye to the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    stop = kill

    def pause(self) -> None:
        """SIGSTOP: the server accepts nothing and answers nothing until `resume` (a stalled Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        out = subprocess.run([_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), *args],
                             capture_output=True, text=True, timeout=timeout)
        return out.stdout


class LocalRedis:
    """A single redis-server on a free loopback port.

    `persistence`: "everysec" (AOF fsynced every second, the production default), "always" (AOF fsynced
    per write) or "none" (no AOF, no RDB: what the store warns about).
    """

    def __init__(self, persistence: str = "everysec") -> None:
        if persistence not in ("everysec", "always", "none"):
            raise ConfigError(f"persistence must be 'everysec', 'always' or 'none', not {persistence!r}")
        self.dir = Path(tempfile.mkdtemp(prefix="optimem-redis-"))
        self.node = RedisNode(free_port_pair(), self.dir, appendonly=persistence != "none",
                              appendfsync="always" if persistence == "always" else "everysec")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.node.port}/0"

    def start(self) -> "LocalRedis":
        self.node.start()
        return self

    def stop(self) -> None:
        """kill -9; `start` again brings it back on the same port with the same append-only file."""
        self.node.kill()

    def pause(self) -> None:
        self.node.pause()

    def resume(self) -> None:
        self.node.resume()

    def cleanup(self) -> None:
        self.node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalRedisCluster:
    """3 masters + 3 replicas (by default) on loopback, created with `redis-cli --cluster create`."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        _binary("redis-server")
        _binary("redis-cli")
        self.replicas = replicas
        self.root = Path(tempfile.mkdtemp(prefix="optimem-cluster-"))
        ports: set[int] = set()
        self.nodes: list[RedisNode] = []
        for _ in range(masters * (1 + replicas)):
            p = free_port_pair(ports)
            ports |= {p, p + 10000}
            d = self.root / str(p)
            d.mkdir()
            self.nodes.append(RedisNode(p, d, cluster=True, node_timeout_ms=node_timeout_ms))

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    @property
    def url(self) -> str:
        """A `redis+cluster://` store URL naming three of the nodes as seeds."""
        return "redis+cluster://" + ",".join(self.addresses[:3]) + "/"

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def start(self, timeout: float = 60.0) -> "LocalRedisCluster":
        try:
            for n in self.nodes:
                n.start()
            out = subprocess.run([_binary("redis-cli"), "--cluster", "create", *self.addresses,
                                  "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                                 capture_output=True, text=True, timeout=timeout)
            if out.returncode != 0 or "[OK] All 16384 slots covered" not in out.stdout:
                raise ConfigError(f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def topology(self) -> list[dict]:
        """CLUSTER NODES as seen from a live node: [{id, port, role, master_port, slots, failed}]."""
        for n in self.nodes:
            if n.alive:
                rows = self._topology_from(n)
                if rows:
                    return rows
        return []

    def masters(self) -> list[int]:
        return [r["port"] for r in self.topology() if r["role"] == "master" and not r["failed"] and r["slots"]]

    def master_of_slot(self, slot: int) -> int:
        for r in self.topology():
            if r["role"] != "master" or r["failed"]:
                continue
            for rng in r["slots"]:
                if rng.startswith("["):
                    continue  # migrating/importing marker
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return r["port"]
        raise ConfigError(f"no live master serves slot {slot}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok and agrees on the masters; every live replica is in sync."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            live = [n for n in self.nodes if n.alive]
            states = [n.cli("CLUSTER", "INFO") for n in live]
            ok = all("cluster_state:ok" in s for s in states)
            if ok:
                views = {tuple(sorted(r["port"] for r in self._topology_from(n)
                                      if r["role"] == "master" and r["slots"] and not r["failed"])) for n in live}
                repl = [n.cli("INFO", "replication") for n in live]
                synced = all("role:master" in r or "master_link_status:up" in r for r in repl)
                if len(views) == 1 and synced:
                    return
                last = f"views={views} synced={synced}"
            else:
                last = "cluster_state not ok on every node"
            time.sleep(0.1)
        raise ConfigError(f"Redis Cluster did not become healthy within {timeout:.0f} s ({last})")

    @staticmethod
    def _topology_from(node: RedisNode) -> list[dict]:
        """Parse one node's CLUSTER NODES; anything else redis-cli printed (a node still starting says
        "Could not connect ...") yields no rows."""
        rows, by_id = [], {}
        for line in node.cli("CLUSTER", "NODES").strip().splitlines():
            m = _NODE_LINE.match(line)
            if not m:
                continue
            parts = line.split()
            by_id[parts[0]] = int(m.group(1))
            rows.append({"id": parts[0], "port": int(m.group(1)),
                         "role": "master" if "master" in parts[2] else "replica", "master_id": parts[3],
                         "failed": "fail" in parts[2], "slots": parts[8:]})
        for r in rows:
            r["master_port"] = by_id.get(r.pop("master_id"))
        return rows

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again (same port, same nodes.conf): it rejoins, as a replica if it was failed over."""
        self.node(port).start()
        self.wait_healthy(timeout)

    def cleanup(self) -> None:
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.root, ignore_errors=True)
