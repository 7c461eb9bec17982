"""`optimem bench memory`: the memory's write path, read path and page pipeline.

- add-turn latency p50/p99 (one `OpticalMemory.add` per call) on a SQLite file and on Redis (a
  redis-server the benchmark starts on a free loopback port, or `--redis URL`);
- `context(budget)` time for sessions of 1k and 10k turns with a warm cache (pages sealed, floors
  persisted, the planner's per-turn token counts held by the memory object);
- page pipeline throughput on this CPU: sealing (render) pages, and encoding them with a tiny random
  DeepSeek-OCR (the full-size encoder's GPU speed is `optimem bench encode`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from optimem.progress import track


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", default=None, help="redis:// URL (default: start a redis-server here)")
    p.add_argument("--adds", type=int, default=2000, help="add() calls timed per store")
    p.add_argument("--sessions", nargs="+", type=int, default=[1000, 10000], help="session sizes for context()")


def _turn(i: int) -> dict:
    return {"role": "user" if i % 2 == 0 else "assistant",
            "content": f"Turn {i}: the migration of table t{i % 40} copied {i * 37 % 100000} rows; next we check the indexes."}


def _percentiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50_ms": round(1000 * xs[len(xs) // 2], 3), "p99_ms": round(1000 * xs[int(len(xs) * 0.99) - 1], 3)}


def bench_adds(url: str, n: int) -> dict:
    from optimem.memory import OpticalMemory

    mem = OpticalMemory("bench-adds", url)
    times = []
    for i in track(range(n), total=n, unit="adds"):
        t = time.perf_counter()
        mem.add(**{k: v for k, v in _turn(i).items()})
        times.append(time.perf_counter() - t)
    return _percentiles(times)


def bench_context(url: str, turns: int) -> dict:
    from optimem.memory import OpticalMemory

    mem = OpticalMemory(f"bench-ctx-{turns}", url)
    mem.add_many([_turn(i) for i in range(turns)])
    t = time.perf_counter()
    mem.context(8192)  # cold: renders and seals every page, counts tokens
    cold = time.perf_counter() - t
    mem.add("user", "one more question")
    times = []
    for i in range(15):
        t = time.perf_counter()
        mem.context(8192)
        times.append(time.perf_counter() - t)
    pages = mem.store.count_pages(mem.session)
    return {"turns": turns, "pages": pages, "cold_s": round(cold, 2), "warm_median_ms": round(1000 * statistics.median(times), 2)}


def bench_pipeline(tmp: Path) -> dict:
    from optimem.backends import DeepseekOCRBackend
    from optimem.memory import OpticalMemory
    from optimem.model import DeepseekOCR, tiny_config

    backend = DeepseekOCRBackend(DeepseekOCR.random(tiny_config()), batch_size=16)
    mem = OpticalMemory("bench-pipe", f"sqlite:///{tmp / 'pipe.db'}", backend=backend)
    mem.add_many([_turn(i) for i in range(600)])
    t = time.perf_counter()
    sealed = mem.sync()
    render_s = time.perf_counter() - t
    t = time.perf_counter()
    ctx = mem.context(1_000_000, encode=True)
    encode_s = time.perf_counter() - t
    return {"pages_sealed": sealed, "render_pages_per_s": round(sealed / render_s, 1),
            "pages_encoded": len(ctx.pages), "encode_pages_per_s_tiny_cpu": round(len(ctx.pages) / encode_s, 1)}


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="optimem-bench-"))
    server = None
    try:
        redis_url = args.redis
        if redis_url is None and shutil.which("redis-server"):
            from optimem.bench.redis_local import LocalRedis  # the benchmarks' throwaway server

            server = LocalRedis().start()
            redis_url = server.url + "?prefix=bench"
        sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
        rows = [{"store": "sqlite (file, WAL)", **bench_adds(sqlite_url, args.adds)}]
        if redis_url:
            rows.append({"store": "redis", **bench_adds(redis_url, args.adds)})
        contexts = [{"store": "sqlite", **bench_context(sqlite_url, n)} for n in args.sessions]
        if redis_url:
            contexts += [{"store": "redis", **bench_context(redis_url, n)} for n in args.sessions[:1]]
        return {"table": rows, "context": contexts, "pipeline": bench_pipeline(tmp),
                "targets": {"add_p99_ms_redis": 5, "context_10k_warm_ms": 50}}
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
