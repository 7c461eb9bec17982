"""Work done ahead of need, off the caller's path: one background thread, a bounded queue of jobs.

A chat memory has idle time between turns (the user reads the reply and types). Sealing pages that
filled up and encoding the tier views the next plan will show take tens to hundreds of milliseconds;
done in that idle time, the next `context()` finds them done and only looks them up.

The queue is bounded and coalescing: a job has a key (for a memory, its session), a newer job with
the same key replaces one still waiting (the newer state makes the older job moot), and when the
queue is full the oldest waiting job is dropped (counted). A job's failure is logged and counted,
never raised into the caller, which then simply does the work itself when it needs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)


class AheadWorker:
    """One daemon thread running submitted jobs in order; `wait()` blocks until none is left."""

    def __init__(self, max_pending: int = 4, name: str = "optimem-ahead") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.max_pending = max_pending
        self._name = name
        self._cond = threading.Condition()
        self._pending: OrderedDict[Hashable, Callable[[], Any]] = OrderedDict()
        self._running: Hashable | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = {"done": 0, "replaced": 0, "dropped": 0, "failed": 0, "busy_s": 0.0}

    def submit(self, key: Hashable, job: Callable[[], Any]) -> None:
        """Queue `job` under `key` (replacing a waiting job with the same key)."""
        with self._cond:
            if self._closed:
                return
            if key in self._pending:
                del self._pending[key]
                self.stats["replaced"] += 1
            while len(self._pending) >= self.max_pending:
                self._pending.popitem(last=False)
                self.stats["dropped"] += 1
            self._pending[key] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self, key: Hashable) -> bool:
        """Drop the waiting job of `key` (a running one finishes); whether one was waiting."""
        with self._cond:
            return self._pending.pop(key, None) is not None

    def busy(self, key: Hashable | None = None) -> bool:
        with self._cond:
            if key is None:
                return bool(self._pending) or self._running is not None
            return key in self._pending or self._running == key

    def wait(self, key: Hashable | None = None, timeout: float | None = None) -> bool:
        """Block until no job (of `key`, or at all) is waiting or running; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (key in self._pending or self._running == key) if key is not None else \
                    (self._pending or self._running is not None):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Drop waiting jobs, let a running one finish, stop the thread."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    if not self._cond.wait(30.0) and not self._pending:
                        self._thread = None  # idle: end the thread; the next submit starts another
                        return
                if self._closed:
                    self._thread = None
                    self._cond.notify_all()
                    return
                key, job = self._pending.popitem(last=False)
                self._running = key
            t = time.perf_counter()
            try:
                job()
                ok = True
            except Exception as exc:  # noqa: BLE001 - work ahead is an optimisation: the caller redoes it
                ok = False
                log.warning("background job for %r failed (%s: %s); the next call does the work itself",
                            key, type(exc).__name__, exc)
            with self._cond:
                self.stats["busy_s"] += time.perf_counter() - t
                self.stats["done" if ok else "failed"] += 1
                self._running = None
                self._cond.notify_all()


_WORKER: AheadWorker | None = None
_WORKER_LOCK = threading.Lock()


def worker() -> AheadWorker:
    """The process's shared worker (one thread: jobs of different sessions take turns)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None or _WORKER._closed:
            _WORKER = AheadWorker()
        return _WORKER


__all__ = ["AheadWorker", "worker"]
