"""`optimem bench store`: the Redis store on one node and on a 3-master Redis Cluster, under load and failure.

- Load: W writer processes x T threads (the same client concurrency for every store), each thread
  driving S sessions (warmed with some turns and sealed pages) through `OpticalMemory` (the default
  layout backend, no model) on its process's one store, all starting at one instant: untimed
  warm-up adds, a timed phase of `add()` only, then a phase of chat turns (one `add()` and one
  `context(budget)` per turn, round robin over the sessions). The stores (one node, one node with a
  replica, a 3-master cluster without replicas, the cluster with replicas, and with `durable=1`) take
  turns within a round, in an order rotated
  each round, for `repeat` rounds: a change in the machine's load hits them alike, and each store is
  also compared with one node in the same round. Reported per store: medians over the rounds and
  the spread of adds/s, add p50/p99, chat turns/s and `context()` p50/p99, and per phase the CPU
  seconds per second spent by the clients, by the redis-servers and by everything else on the
  machine (/proc/stat), which says what limits the figure (clients and servers share this machine's
  cores with whatever else runs on it).
- Failover: writers append to sessions on the master that is killed and on other masters (most
  with turn keys, retrying a failed append with its key; one on the killed master and one
  elsewhere without keys, moving on after an error); one master is killed with SIGKILL; its replica is promoted after `cluster-node-timeout`.
  Reported: acknowledged appends lost, duplicates, errors the callers saw, and the time until the
  killed master's sessions took writes again; once with asynchronous replication and once with
  `durable=1` (`WAIT` for one replica).
- Resharding: writers append, write pages and read while `redis-cli --cluster reshard` moves the
  slots of their sessions to another master. Reported: errors the callers saw, appends lost.

The servers are started here on loopback (`optimem.bench.redis_local`); the writers are separate
processes started with `python -m optimem.bench.store WORKER.json`, kept for every round of one writer
count (results come back as JSON files).
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
    p.add_argument("--writers", nargs="+", type=int, default=[1, 4], help="writer processes")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per writer process (client concurrency = writers x threads, the same for every store)")
    p.add_argument("--sessions-per-writer", type=int, default=4, help="sessions each writer thread drives")
    p.add_argument("--duration", type=float, default=3.0, help="seconds of timed load per phase and configuration")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of untimed adds before each timed phase")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds per configuration; the stores take turns within a round (rotated each round), "
                        "so a change in the machine's load hits them alike")
    p.add_argument("--stores", nargs="+", choices=list(_STORES), default=list(_STORES), help="which stores to load")
    p.add_argument("--budget", type=int, default=4096, help="context() token budget")
    p.add_argument("--warm-turns", type=int, default=200, help="turns in each session before timing")
    p.add_argument("--no-failure", action="store_true", help="skip the failover and resharding trials")


# name -> what it is; "1 node + replica" has the cluster's redundancy (every write also applied on a
# replica) without the cluster, and "cluster 3+0" the cluster without replicas: together they separate
# the cost of replication from the cost of the cluster's routing and its three server processes
_STORES = {
    "1 node": "one redis-server",
    "1 node + replica": "one redis-server and one replica (REPLICAOF), writes on the master",
    "cluster 3+0": "3 masters, no replicas (no redundancy: the cluster's routing alone)",
    "cluster 3+3": "3 masters + 3 replicas",
    "cluster 3+3 durable=1": "3 masters + 3 replicas, every write waits for one replica (WAIT)",
}


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


def _machine_busy_s() -> float:
    """CPU seconds all cores have spent not idle since boot (Linux /proc/stat), to tell how much of the
    machine went to processes outside the benchmark."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait (guest is in user)
    except (OSError, ValueError, IndexError):
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
def _text(i: int) -> str:
    return _CONTENT.format(i=i, t=i % 40, r=i * 37 % 100000)


def _worker(spec_path: str) -> None:
    """One writer process for every round of one writer count. It opens each store once (the process's
    connections stay warm across rounds, as an application's would), warms its sessions, says ready, then
    for round k waits for `start{k}` and, from the shared start time: `warmup` s of untimed adds, `duration`
    s of adds (timed), `duration` s of chat turns (one add and one context() each), on `threads` threads
    that share the process's store. Results per round in `out{k}.json`."""
    from optimem.memory import OpticalMemory
    from optimem.store import open_store

    spec = json.loads(Path(spec_path).read_text())
    d, T, dur, warm = Path(spec["dir"]), spec["threads"], spec["duration"], spec["warmup"]
    start_dir = Path(spec["start_dir"])
    stores = {u: open_store(u) for u in dict.fromkeys(r["url"] for r in spec["rounds"])}
    # per store and thread: add-phase sessions and chat-phase sessions (so the chat phase does not first
    # seal what the add phase wrote)
    mems = {u: [([OpticalMemory(f"{s}-t{t}-a", st) for s in spec["sessions"]],
                 [OpticalMemory(f"{s}-t{t}-c", st) for s in spec["sessions"]]) for t in range(T)]
            for u, st in stores.items()}
    for per_thread in mems.values():
        for adds, chats in per_thread:
            for m in adds + chats:
                m.add_many([{"role": "user" if i % 2 == 0 else "assistant", "content": _text(i)}
                            for i in range(spec["warm_turns"])])
                m.context(spec["budget"])  # seal the warm pages now, not inside the timed part
    Path(spec["ready"]).write_text("ready")

    def run(adds: list, chats: list, t0: float, out: dict, t: int) -> None:
        i = spec["warm_turns"] + t * 1_000_000
        while time.time() < t0:  # warm-up, untimed
            adds[i % len(adds)].add("user" if i % 2 == 0 else "assistant", _text(i))
            i += 1
        while time.time() < t0 + dur:  # phase 1: adds only, round robin over the sessions
            m = adds[i % len(adds)]
            a = time.perf_counter()
            m.add("user" if i % 2 == 0 else "assistant", _text(i))
            out["adds"].append(time.perf_counter() - a)
            i += 1
        while time.time() < t0 + 2 * dur:  # phase 2: chat turns
            m = chats[i % len(chats)]
            a = time.perf_counter()
            m.add("user" if i % 2 == 0 else "assistant", _text(i))
            b = time.perf_counter()
            m.context(spec["budget"])
            out["chat_adds"].append(b - a)
            out["contexts"].append(time.perf_counter() - b)
            i += 1

    for k, rnd in enumerate(spec["rounds"]):
        start = start_dir / f"start{k}"
        while not start.exists():
            time.sleep(0.002)
        t0 = float(start.read_text()) + warm  # timing starts after the warm-up
        out: dict[str, Any] = {"adds": [], "chat_adds": [], "contexts": []}
        threads = [threading.Thread(target=run, args=(*mems[rnd["url"]][t], t0, out, t)) for t in range(T)]
        for th in threads:
            th.start()
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = time.process_time()  # the whole process: every thread's CPU
        time.sleep(max(0.0, t0 + dur - time.time()))
        cpu1 = time.process_time()
        for th in threads:
            th.join()
        out["cpu_adds_s"], out["cpu_chat_s"] = cpu1 - cpu0, time.process_time() - cpu1
        (d / f"out{k}.tmp").write_text(json.dumps(out))
        (d / f"out{k}.tmp").rename(d / f"out{k}.json")
    for st in stores.values():
        st.close()


def load_rounds(configs: list[dict[str, Any]], *, writers: int, threads: int = 1, sessions_per_writer: int = 4,
                duration: float = 3.0, warmup: float = 0.5, repeat: int = 3, warm_turns: int = 200,
                budget: int = 4096, tag: str = "load") -> list[dict[str, Any]]:
    """`writers` processes x `threads` threads against every store of `configs` ({"store", "url",
    "pids"}: the redis-server pids to charge), `repeat` rounds; in each round the stores take turns in an
    order rotated by one per round. One row per store and round."""
    tmp = Path(tempfile.mkdtemp(prefix="optimem-bench-store-"))
    order = [configs[(r + j) % len(configs)] for r in range(repeat) for j in range(len(configs))]
    procs = []
    rows = []
    try:
        for w in range(writers):
            (tmp / f"w{w}").mkdir()
            spec = {"rounds": [{"url": c["url"]} for c in order], "threads": threads, "start_dir": str(tmp),
                    "dir": str(tmp / f"w{w}"), "sessions": [f"{tag}-w{w}-s{s}" for s in range(sessions_per_writer)],
                    "duration": duration, "warmup": warmup, "warm_turns": warm_turns, "budget": budget,
                    "ready": str(tmp / f"ready{w}")}
            (tmp / f"spec{w}.json").write_text(json.dumps(spec))
            procs.append(subprocess.Popen([sys.executable, "-m", "optimem.bench.store", str(tmp / f"spec{w}.json")]))
        deadline = time.monotonic() + 600
        while not all((tmp / f"ready{w}").exists() for w in range(writers)):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("a bench writer failed while warming up")
            time.sleep(0.05)
        for k, c in enumerate(order):
            load0 = os.getloadavg()[0]
            t0 = time.time() + 0.2 + warmup  # when the timed adds start, after the warm-up
            (tmp / "start.tmp").write_text(repr(t0 - warmup))
            (tmp / "start.tmp").rename(tmp / f"start{k}")
            marks = []
            for t in (t0, t0 + duration, t0 + 2 * duration):
                time.sleep(max(0.0, t - time.time()))
                marks.append((sum(_cpu_s(p) for p in c["pids"]), _machine_busy_s()))
            files = [tmp / f"w{w}" / f"out{k}.json" for w in range(writers)]
            deadline = time.monotonic() + 120
            while not all(f.exists() for f in files):
                if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError(f"a bench writer failed in round {k} ({c['store']})")
                time.sleep(0.01)
            outs = [json.loads(f.read_text()) for f in files]
            rows.append({"store": c["store"], "round": k // len(configs), "turn_in_round": k % len(configs),
                         **_row(outs, marks, duration, load0, os.getloadavg()[0])})
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _row(outs: list[dict], marks: list[tuple[float, float]], duration: float, load0: float, load1: float) -> dict:
    adds = [x for o in outs for x in o["adds"]]
    chat = [x for o in outs for x in o["chat_adds"]]
    ctx = [x for o in outs for x in o["contexts"]]
    (s0, m0), (s1, m1), (s2, m2) = marks
    client_a = sum(o["cpu_adds_s"] for o in outs)
    client_c = sum(o["cpu_chat_s"] for o in outs)
    return {"adds_per_s": round(len(adds) / duration, 1),
            "add_p50_ms": round(1000 * _pct(adds, 0.5), 3), "add_p99_ms": round(1000 * _pct(adds, 0.99), 3),
            "client_cpu_per_s_adds": round(client_a / duration, 2),
            "server_cpu_per_s_adds": round((s1 - s0) / duration, 2),
            # CPU per add, what throughput is made of on a CPU-bound machine; steadier than adds/s under
            # outside load (which takes cores away but does not change the work per add much)
            "client_cpu_us_per_add": round(1e6 * client_a / max(1, len(adds)), 1),
            "server_cpu_us_per_add": round(1e6 * (s1 - s0) / max(1, len(adds)), 1),
            # every core's busy time minus the bench's clients and servers: what else ran meanwhile
            "other_cpu_per_s_adds": round(max(0.0, (m1 - m0) - client_a - (s1 - s0)) / duration, 2),
            "chat_turns_per_s": round(len(ctx) / duration, 1),
            "chat_add_p99_ms": round(1000 * _pct(chat, 0.99), 3),
            "context_p50_ms": round(1000 * _pct(ctx, 0.5), 2), "context_p99_ms": round(1000 * _pct(ctx, 0.99), 2),
            "client_cpu_per_s_chat": round(client_c / duration, 2),
            "server_cpu_per_s_chat": round((s2 - s1) / duration, 2),
            "other_cpu_per_s_chat": round(max(0.0, (m2 - m1) - client_c - (s2 - s1)) / duration, 2),
            "loadavg_1m": [round(load0, 2), round(load1, 2)]}


def summarize(rows: list[dict[str, Any]], base: str = "1 node") -> list[dict[str, Any]]:
    """Per store and writer count: the median over rounds, the spread of adds/s, and adds/s relative to
    `base` in the same round (the two ran seconds apart, so a change in the machine's load mostly cancels)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["writers"], r["threads"], r["store"]), []).append(r)
    out = []
    for (w, t, store), rs in groups.items():
        med = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]
               if isinstance(rs[0][k], (int, float)) and k not in ("round", "turn_in_round", "writers", "threads")}
        base_by_round = {r["round"]: r["adds_per_s"] for r in groups.get((w, t, base), [])}
        ratios = sorted(round(r["adds_per_s"] / base_by_round[r["round"]], 2) for r in rs
                        if base_by_round.get(r["round"]))
        out.append({"store": store, "writers": w, "threads": t, "rounds": len(rs), **med,
                    "adds_per_s_min": min(r["adds_per_s"] for r in rs), "adds_per_s_max": max(r["adds_per_s"] for r in rs),
                    "add_p99_ms_max": max(r["add_p99_ms"] for r in rs),
                    f"adds_vs_{base.replace(' ', '_')}_same_round": ratios,
                    "loadavg_1m_range": [min(r["loadavg_1m"][0] for r in rs), max(r["loadavg_1m"][1] for r in rs)]})
    return out


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
def _start_replica_pair() -> tuple[Any, Any]:
    """A redis-server and a replica of it (REPLICAOF), handed over once the replica's link is up."""
    from optimem.bench.redis_local import LocalRedis

    master = LocalRedis().start()
    replica = None
    try:
        replica = LocalRedis().start()
        replica.node.cli("REPLICAOF", "127.0.0.1", str(master.node.port))
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in replica.node.cli("INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench's single-node replica did not sync within 30 s")
            time.sleep(0.05)
    except BaseException:  # the caller has not got them yet: stop both here
        for server in (replica, master):
            if server is not None:
                server.stop()
                server.cleanup()
        raise
    return master, replica


def run(args: argparse.Namespace) -> dict:
    from optimem.bench.redis_local import LocalRedis, LocalRedisCluster

    started: list[Any] = []
    cluster = None
    try:
        single = LocalRedis().start()
        started.append(single)
        master, replica = _start_replica_pair()
        started += [master, replica]
        cluster = LocalRedisCluster().start()
        cpids = [n.proc.pid for n in cluster.nodes]
        if "cluster 3+0" in args.stores:
            bare = LocalRedisCluster(replicas=0).start()
            started.append(bare)
            bpids = [n.proc.pid for n in bare.nodes]
        configs = [c for c in (
            {"store": "1 node", "url": single.url + "?prefix=bench", "pids": [single.node.proc.pid]},
            {"store": "1 node + replica", "url": master.url + "?prefix=bench",
             "pids": [master.node.proc.pid, replica.node.proc.pid]},
            {"store": "cluster 3+0", "url": bare.url + "?prefix=bench", "pids": bpids}
            if "cluster 3+0" in args.stores else {"store": ""},
            {"store": "cluster 3+3", "url": cluster.url + "?prefix=bench", "pids": cpids},
            # what WAIT for one replica costs per write (one more round trip and the replica's ack)
            {"store": "cluster 3+3 durable=1", "url": cluster.url + "?prefix=benchd&durable=1", "pids": cpids},
        ) if c["store"] in args.stores]
        rows = []
        for w in args.writers:
            for r in load_rounds(configs, writers=w, threads=args.threads, sessions_per_writer=args.sessions_per_writer,
                                 duration=args.duration, warmup=args.warmup, repeat=args.repeat,
                                 warm_turns=args.warm_turns, budget=args.budget, tag=f"w{w}"):
                rows.append({"writers": w, "threads": args.threads, **r})
        result: dict[str, Any] = {"table": summarize(rows), "rounds": rows}
        if not args.no_failure and cluster is not None:
            result["failover"] = [failover_trial(cluster, durable=0, tag="fa"),
                                  failover_trial(cluster, durable=1, tag="fb")]
            result["reshard"] = reshard_trial(cluster)
        result["setup"] = {
            "machine_note": "clients and all redis-servers share this machine's cores (os.cpu_count() in machine);"
                            " other work on the machine adds noise: other_cpu_per_s_* is every core's busy time"
                            " (/proc/stat) minus the bench's clients and servers, loadavg_1m at each row's start and end",
            "stores": {k: v for k, v in _STORES.items() if k in args.stores},
            "cluster": "3 masters + 3 replicas, redis-cli --cluster create, cluster-node-timeout 1000 ms, AOF fsync every second, no RDB;"
                       " 'cluster 3+0' is a second cluster built the same way with --cluster-replicas 0",
            "single": "redis-server, AOF fsync every second, no RDB (the replica likewise)",
            "client": "writers processes x threads threads, each thread driving sessions_per_writer sessions through"
                      " OpticalMemory; the cluster store sends each session's calls to its slot's master directly",
            "duration_s": args.duration, "warmup_s": args.warmup, "repeat": args.repeat, "threads": args.threads,
            "sessions_per_writer": args.sessions_per_writer, "budget": args.budget, "warm_turns": args.warm_turns,
            "redis_server": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
        }
        result["targets"] = {"cluster_adds_per_s_vs_single": ">= 1x at the same writers x threads", "add_p99_ms": 5,
                             "failover_duplicates": 0, "failover_lost_durable": 0, "reshard_errors": 0, "reshard_lost": 0}
        return result
    finally:
        for x in started:
            x.cleanup()
        if cluster is not None:
            cluster.cleanup()


if __name__ == "__main__":
    _worker(sys.argv[1])
