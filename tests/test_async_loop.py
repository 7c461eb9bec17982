"""The async API never blocks the event loop, even while Redis stalls (issue 15, item 15).

A SIGSTOPped redis-server accepts connections and answers nothing: every store call waits for the
client's timeout. The loop's other tasks must keep running meanwhile, so the constructor does no I/O and
every `a*` method runs its store calls off the loop.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from optimem import OpticalMemory
from optimem.bench.redis_local import LocalRedis
from optimem.errors import StoreError


@pytest.fixture()
def stalled_redis():
    server = LocalRedis(persistence="none").start()
    try:
        yield server
    finally:
        server.resume()
        server.cleanup()


async def _ticker(gaps: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


def test_async_calls_do_not_block_the_loop_while_redis_stalls(stalled_redis):
    url = stalled_redis.url + "?prefix=loop&timeout=1"
    warm = OpticalMemory("s", url)
    warm.add_many([{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(6)])
    stalled_redis.pause()

    async def go():
        gaps: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.create_task(_ticker(gaps, stop))
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        mem = OpticalMemory("s", url)  # no I/O in the constructor
        built = time.perf_counter() - t
        calls = [mem.aadd("user", "during the stall"), mem.acontext(2048), mem.aturns(), mem.apin(0),
                 mem.astats(), mem.async_sync()]
        results = await asyncio.gather(*calls, return_exceptions=True)
        stop.set()
        await tick
        return built, gaps, results

    built, gaps, results = asyncio.run(go())
    assert built < 0.1
    # every call waited for the stalled server and failed with the store's error, none hung
    assert all(isinstance(r, StoreError) for r in results), results
    # meanwhile the loop kept ticking every ~10 ms (generous bound for a loaded 2-core CI box)
    assert len(gaps) > 20 and max(gaps) < 0.5, max(gaps)
