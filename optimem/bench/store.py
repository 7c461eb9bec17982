"""`optimem bench store`: the Redis store on one node and on a 3-master Redis Cluster, under load and failure.

- Load: W writer processes, each driving S sessions (warmed with some turns and sealed pages)
  through `OpticalMemory` (the default layout backend, no model), all starting at one instant: a
  phase of `add()` only, then a phase of chat turns (one `add()` and one `context(budget)` per
  turn, round robin over the sessions). Reported: adds/s over all writers and add p50/p99, chat
  turns/s and `context()` p50/p99, and per phase the CPU seconds per second spent by the clients and
  by the redis-servers, which says what limits the figure (clients and servers share this machine's
  cores, and so does whatever else runs on it: see the load average).
- Failover: writers append to sessions of every master (most with turn keys, retrying a failed
  append with its key; one on the killed master and one elsewhere without keys, moving on after an
  error); one master is killed with SIGKILL; its replica is promoted after `cluster-node-timeout`.
  Reported: acknowledged appends lost, duplicates, errors the callers saw, and the time until the
  killed master's sessions took writes again; once with asynchronous replication and once with
  `durable=1` (`WAIT` for one replica).
- Resharding: writers append, write pages and read while `redis-cli --cluster reshard` moves the
  slots of their sessions to another master. Reported: errors the callers saw, appends lost.

Both servers are started here on loopback (`optimem.bench.redis_local`); the workers are separate
processes started with `python -m optimem.bench.store WORKER.json` (results come back as JSON files).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_CONTENT = ("Turn {i}: the migration of table t{t} copied {r} rows; next we check the indexes and the "
            "foreign keys before switching traffic over.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--writers", nargs="+", type=int, default=[1, 4], help="writer processes (client concurrency)")
    p.add_argument("--sessions-per-writer", type=int, default=4, help="sessions each writer drives")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of timed load per configuration")
    p.add_argument("--budget", type=int, default=4096, help="context() token budget")
    p.add_argument("--warm-turns", type=int, default=200, help="turns in each session before timing")
    p.add_argument("--no-failure", action="store_true", help="skip the failover and resharding trials")


# -- helpers ------------------------------------------------------------------------------------------
def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))] if xs else float("nan")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _slot_of(session: str, prefix: str) -> int:
    from redis.crc import key_slot

    return key_slot(f"{prefix}:{{{session}}}:turns".encode())


def _sessions_on(cluster, prefix: str, want_on: int, n_on: int, n_off: int, tag: str) -> list[str]:
    """Session ids whose slot lives on master port `want_on` (n_on of them) and elsewhere (n_off)."""
    on, off, i = [], [], 0
    while len(on) < n_on or len(off) < n_off:
        s = f"{tag}-{i}"
        i += 1
        if cluster.master_of_slot(_slot_of(s, prefix)) == want_on:
            if len(on) < n_on:
                on.append(s)
        elif len(off) < n_off:
            off.append(s)
    return on + off


# -- load ---------------------------------------------------------------------------------------------
def _worker(spec_path: str) -> None:
    """One writer process: warm its sessions, say ready, wait for the start file, then two timed phases
    from the shared start time: adds only, then chat turns (one add and one context() per turn)."""
    from optimem.memory import OpticalMemory
    from optimem.store import open_store

    spec = json.loads(Path(spec_path).read_text())
    store = open_store(spec["url"])
    # separate sessions for the two phases, so the chat phase does not first seal what the add phase wrote
    mems = [OpticalMemory(s + "-a", store) for s in spec["sessions"]]
    chats = [OpticalMemory(s + "-c", store) for s in spec["sessions"]]
    for m in mems + chats:
        m.add_many([{"role": "user" if i % 2 == 0 else "assistant",
                     "content": _CONTENT.format(i=i, t=i % 40, r=i * 37 % 100000)} for i in range(spec["warm_turns"])])
        m.context(spec["budget"])  # seal the warm pages now, not inside the timed part
    Path(spec["ready"]).write_text("ready")
    while not Path(spec["start"]).exists():
        time.sleep(0.002)
    t0 = float(Path(spec["start"]).read_text())
    out: dict[str, Any] = {"adds": [], "chat_adds": [], "contexts": []}
    i = spec["warm_turns"]
    cpu0 = time.process_time()
    while time.time() < t0 + spec["duration"]:  # phase 1: adds only, round robin over the sessions
        m = mems[i % len(mems)]
        t = time.perf_counter()
        m.add("user" if i % 2 == 0 else "assistant", _CONTENT.format(i=i, t=i % 40, r=i * 37 % 100000))
        out["adds"].append(time.perf_counter() - t)
        i += 1
    out["cpu_adds_s"] = time.process_time() - cpu0
    while time.time() < t0 + 2 * spec["duration"]:  # phase 2: chat turns
        m = chats[i % len(chats)]
        t = time.perf_counter()
        m.add("user" if i % 2 == 0 else "assistant", _CONTENT.format(i=i, t=i % 40, r=i * 37 % 100000))
        t1 = time.perf_counter()
        m.context(spec["budget"])
        out["chat_adds"].append(t1 - t)
        out["contexts"].append(time.perf_counter() - t1)
        i += 1
    out["cpu_s"] = time.process_time() - cpu0
    Path(spec["out"]).write_text(json.dumps(out))


def load(url: str, server_pids: list[int], *, writers: int, sessions_per_writer: int, duration: float,
         warm_turns: int = 200, budget: int = 4096, tag: str = "load") -> dict[str, Any]:
    """W writer processes x S sessions each: `duration` s of adds, then `duration` s of chat turns."""
    tmp = Path(tempfile.mkdtemp(prefix="optimem-bench-store-"))
    procs = []
    try:
        start = tmp / "start"
        for w in range(writers):
            spec = {"url": url, "sessions": [f"{tag}-w{w}-s{s}" for s in range(sessions_per_writer)],
                    "duration": duration, "warm_turns": warm_turns, "budget": budget,
                    "ready": str(tmp / f"ready{w}"), "start": str(start), "out": str(tmp / f"out{w}.json")}
            (tmp / f"spec{w}.json").write_text(json.dumps(spec))
            procs.append(subprocess.Popen([sys.executable, "-m", "optimem.bench.store", str(tmp / f"spec{w}.json")]))
        deadline = time.monotonic() + 300
        while not all((tmp / f"ready{w}").exists() for w in range(writers)):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("a bench writer failed while warming up")
            time.sleep(0.05)
        load0 = os.getloadavg()[0]
        t0 = time.time() + 0.2
        (tmp / "start.tmp").write_text(repr(t0))
        (tmp / "start.tmp").rename(start)
        time.sleep(max(0.0, t0 - time.time()))
        srv0 = sum(_cpu_s(p) for p in server_pids)
        time.sleep(max(0.0, t0 + duration - time.time()))
        srv1 = sum(_cpu_s(p) for p in server_pids)
        for p in procs:
            p.wait(timeout=duration + 120)
        srv2 = sum(_cpu_s(p) for p in server_pids)
        outs = [json.loads((tmp / f"out{w}.json").read_text()) for w in range(writers)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    adds = [x for o in outs for x in o["adds"]]
    chat = [x for o in outs for x in o["chat_adds"]]
    ctx = [x for o in outs for x in o["contexts"]]
    return {"writers": writers, "sessions": writers * sessions_per_writer,
            "adds_per_s": round(len(adds) / duration, 1),
            "add_p50_ms": round(1000 * _pct(adds, 0.5), 3), "add_p99_ms": round(1000 * _pct(adds, 0.99), 3),
            "client_cpu_per_s_adds": round(sum(o["cpu_adds_s"] for o in outs) / duration, 2),
            "server_cpu_per_s_adds": round((srv1 - srv0) / duration, 2),
            "chat_turns_per_s": round(len(ctx) / duration, 1),
            "chat_add_p99_ms": round(1000 * _pct(chat, 0.99), 3),
            "context_p50_ms": round(1000 * _pct(ctx, 0.5), 2), "context_p99_ms": round(1000 * _pct(ctx, 0.99), 2),
            "client_cpu_per_s_chat": round(sum(o["cpu_s"] - o["cpu_adds_s"] for o in outs) / duration, 2),
            "server_cpu_per_s_chat": round((srv2 - srv1) / duration, 2),
            "loadavg_1m_at_start": round(load0, 2)}


# -- failure trials -----------------------------------------------------------------------------------
class _Writers:
    """Threads appending numbered turns (content `w:i`) to one session each. A keyed writer (key `w:i`)
    retries a failed append with the same key until it is acknowledged, as a careful client would: the
    key makes the retry of an append that did land a no-op. An unkeyed writer (`unkeyed`: the indices
    of those) moves on after an error, since the append may have been applied. Either way a duplicate
    means the store resent a write on its own."""

    def __init__(self, url: str, sessions: list[str], pages_every: int = 0, unkeyed: frozenset[int] = frozenset()) -> None:
        from optimem.store import open_store

        self.sessions = sessions
        self.stores = [open_store(url) for _ in sessions]
        self.acked: list[set[int]] = [set() for _ in sessions]
        self.errors: list[str] = []
        self.last_ok = [0.0] * len(sessions)
        self.stop = threading.Event()
        self.pages_every = pages_every
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(len(sessions))]
        self.ops = 0
        self.unkeyed = unkeyed

    def _run(self, w: int) -> None:
        from optimem.errors import StoreError
        from optimem.store import StoredPage

        st, s, i = self.stores[w], self.sessions[w], 0
        while not self.stop.is_set():
            try:
                turn = {"role": "user", "content": f"{w}:{i}"}
                if w not in self.unkeyed:
                    turn["key"] = f"{w}:{i}"
                st.append_turns(s, [turn])
                self.acked[w].add(i)
                self.last_ok[w] = time.monotonic()
                if self.pages_every and i % self.pages_every == 0:
                    st.put_pages(s, [StoredPage(i, [{"turn": i, "start": 0, "end": 1}], "p", 1, f"h{i}", png=b"x")],
                                 meta={"n": i})
                    st.get_turns(s, max(0, i - 5))
                self.ops += 1
                i += 1
            except StoreError as exc:
                self.errors.append(f"{s}{' (unkeyed)' if w in self.unkeyed else ''}: {exc}")
                time.sleep(0.05)
                if w in self.unkeyed:
                    i += 1

    def start(self) -> "_Writers":
        for t in self.threads:
            t.start()
        return self

    def finish(self, url: str) -> dict[str, Any]:
        from optimem.store import open_store

        self.stop.set()
        for t in self.threads:
            t.join(60)
        st = open_store(url)
        lost = dups = acked = 0
        for w, s in enumerate(self.sessions):
            seen: dict[int, int] = {}
            for t in st.get_turns(s):
                n = int(t.content.split(":")[1])
                seen[n] = seen.get(n, 0) + 1
            dups += sum(v - 1 for v in seen.values())
            lost += len(self.acked[w] - seen.keys())
            acked += len(self.acked[w])
        for x in self.stores + [st]:
            x.close()
        return {"acknowledged": acked, "lost_acknowledged": lost, "duplicates": dups,
                "errors_surfaced": len(self.errors),
                "errors_surfaced_unkeyed": sum("(unkeyed)" in e for e in self.errors),
                "error_examples": sorted({e[:300] for e in self.errors})[:3]}


def failover_trial(cluster, *, durable: int = 0, victim_sessions: int = 3, other_sessions: int = 3,
                   before_s: float = 0.5, after_s: float = 1.0, max_s: float = 20.0, tag: str = "fo") -> dict[str, Any]:
    """Kill -9 one master under writes; once its replica is promoted, restart the killed node (as a
    supervisor would; it rejoins as the new master's replica); count what was lost.

    With durable=N a write needs N replicas, so the killed master's sessions take writes again only
    when the restarted node has synced; without it, as soon as the replica is promoted."""
    prefix = f"{tag}{durable}"
    url = f"{cluster.url}?prefix={prefix}&durable={durable}&retry_s={max_s}"
    victim = cluster.masters()[0]
    sessions = _sessions_on(cluster, prefix, victim, victim_sessions, other_sessions, "s")
    slot = _slot_of(sessions[0], prefix)
    unkeyed = frozenset({victim_sessions - 1, len(sessions) - 1})
    writers = _Writers(url, sessions, unkeyed=unkeyed).start()
    try:
        time.sleep(before_s)
        acked_before = sum(len(a) for a in writers.acked)
        cluster.node(victim).kill()
        killed = time.monotonic()
        deadline = killed + max_s
        promoted = promoted_after = None
        while time.monotonic() < deadline:
            try:
                port = cluster.master_of_slot(slot)
            except Exception:  # noqa: BLE001 - no live master for the slot yet
                port = None
            if port is not None and port != victim:
                promoted, promoted_after = port, time.monotonic() - killed
                break
            time.sleep(0.05)
        if promoted is not None:
            cluster.node(victim).start()  # the supervisor brings the dead node back
        while time.monotonic() < deadline and min(writers.last_ok[:victim_sessions]) <= killed:
            time.sleep(0.02)
        # every session of the killed master has taken a write since (polled every 20 ms)
        resumed_after = time.monotonic() - killed if min(writers.last_ok[:victim_sessions]) > killed else None
        time.sleep(after_s)
        out = writers.finish(url)
    finally:
        writers.stop.set()
        if not cluster.node(victim).alive:  # leave the cluster whole for whoever uses it next
            cluster.node(victim).start()
        cluster.wait_healthy(30)
    return {"durable": durable, "node_timeout_ms": cluster.nodes[0].node_timeout_ms, "killed_port": victim,
            "promoted_port": promoted, "sessions_on_killed_master": victim_sessions,
            "sessions_elsewhere": other_sessions, "unkeyed_writers": len(unkeyed),
            "acknowledged_before_kill": acked_before,
            "replica_promoted_after_s": round(promoted_after, 2) if promoted_after is not None else None,
            "writes_resumed_after_s": round(resumed_after, 2) if resumed_after is not None else None, **out}


def reshard_trial(cluster, *, sessions: int = 6, slots: int = 300, tag: str = "rs") -> dict[str, Any]:
    """Move `slots` slots (holding every written session) from one master to another under writes."""
    prefix = f"{tag}"
    url = f"{cluster.url}?prefix={prefix}&retry_s=20"
    topo = cluster.topology()
    masters = sorted((r for r in topo if r["role"] == "master" and r["slots"] and not r["failed"]),
                     key=lambda r: r["port"])
    src, dst = masters[0], masters[1]
    ranges = [tuple(int(x) for x in (rng.split("-") if "-" in rng else (rng, rng))) for rng in src["slots"]
              if not rng.startswith("[")]
    moving = sorted(s for lo, hi in ranges for s in range(lo, hi + 1))[:slots]  # redis-cli moves the lowest first
    moving_set = set(moving)
    names, i = [], 0
    while len(names) < sessions:
        s = f"s-{i}"
        i += 1
        if _slot_of(s, prefix) in moving_set:
            names.append(s)
    writers = _Writers(url, names, pages_every=4).start()
    time.sleep(0.3)
    t = time.monotonic()
    out = subprocess.run([shutil.which("redis-cli") or "redis-cli", "--cluster", "reshard",
                          f"127.0.0.1:{src['port']}", "--cluster-from", src["id"], "--cluster-to", dst["id"],
                          "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "10"],
                         capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t
    time.sleep(0.3)
    res = writers.finish(url)
    if out.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster reshard failed: {out.stdout[-1500:]} {out.stderr[-1500:]}")
    moved_to = {cluster.master_of_slot(_slot_of(s, prefix)) for s in names}
    return {"slots_moved": slots, "reshard_s": round(took, 2), "sessions": sessions,
            "sessions_now_on_target": moved_to == {dst["port"]}, "operations": writers.ops, **res}


# -- the benchmark ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    from optimem.bench.redis_local import LocalRedis, LocalRedisCluster

    single = LocalRedis().start()
    cluster = None
    try:
        cluster = LocalRedisCluster().start()
        rows = []
        for w in args.writers:
            for name, url, pids in (
                ("1 node", single.url + "?prefix=bench", [single.node.proc.pid]),
                ("cluster 3+3", cluster.url + "?prefix=bench", [n.proc.pid for n in cluster.nodes]),
                # what WAIT for one replica costs per write (one more round trip and the replica's ack)
                ("cluster 3+3 durable=1", cluster.url + "?prefix=benchd&durable=1", [n.proc.pid for n in cluster.nodes]),
            ):
                r = load(url, pids, writers=w, sessions_per_writer=args.sessions_per_writer,
                         duration=args.duration, warm_turns=args.warm_turns, budget=args.budget, tag=f"w{w}")
                rows.append({"store": name, **r})
        result: dict[str, Any] = {"table": rows}
        if not args.no_failure:
            result["failover"] = [failover_trial(cluster, durable=0, tag="fa"),
                                  failover_trial(cluster, durable=1, tag="fb")]
            result["reshard"] = reshard_trial(cluster)
        result["setup"] = {
            "machine_note": "clients and all redis-servers share this machine's cores (os.cpu_count() in machine);"
                            " other work on the machine adds noise, see loadavg_1m_at_start",
            "cluster": "3 masters + 3 replicas, redis-cli --cluster create, cluster-node-timeout 1000 ms, AOF fsync every second, no RDB",
            "single": "one redis-server, no replica, AOF fsync every second, no RDB",
            "duration_s": args.duration, "sessions_per_writer": args.sessions_per_writer,
            "budget": args.budget, "warm_turns": args.warm_turns,
            "redis_server": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
        }
        result["targets"] = {"cluster_adds_per_s_vs_single": ">= 1x at the same writers", "add_p99_ms": 5,
                             "failover_duplicates": 0, "failover_lost_durable": 0, "reshard_errors": 0, "reshard_lost": 0}
        return result
    finally:
        single.cleanup()
        if cluster is not None:
            cluster.cleanup()


if __name__ == "__main__":
    _worker(sys.argv[1])
