"""Timing helpers shared by the GPU benchmarks: CUDA events where there is CUDA, wall clock otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], device: Any, *, warmup: int = 2, min_seconds: float = 0.5, max_iters: int = 50) -> float:
    """Median-free mean seconds per call after warmup, running at least `min_seconds` (or max_iters)."""
    for _ in range(warmup):
        fn()
    sync(device)
    iters = 0
    start = time.perf_counter()
    while True:
        fn()
        iters += 1
        if iters >= max_iters:
            break
        if iters % 2 == 0:
            sync(device)
            if time.perf_counter() - start >= min_seconds:
                break
    sync(device)
    return (time.perf_counter() - start) / iters


def flops_of(fn: Callable[[], Any]) -> int:
    """FLOPs torch's FlopCounterMode counts for one call (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


PEAKS_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks, FLOP/s


def bf16_peak(info: dict[str, Any]) -> float | None:
    """The bf16 peak of the GPU `device_info` names; None on a CPU or an unknown GPU."""
    name = info.get("gpu", "")
    return next((val for key, val in PEAKS_BF16.items() if key in name), None)


def device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    if getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def graphed_time(fn: Callable[[], Any], device: Any, *, min_seconds: float = 0.3, max_iters: int = 50) -> tuple[float, str]:
    """Seconds per call of `fn` replayed as a CUDA graph (no Python or launch overhead, the way serving
    engines run decode), or timed eagerly where there is no CUDA or the capture fails.
    Returns (seconds, how): how is "cuda-graph" or "eager: <why>"."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return time_fn(fn, device, min_seconds=min_seconds, max_iters=max_iters), "eager: no CUDA"
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return time_fn(graph.replay, device, min_seconds=min_seconds, max_iters=max_iters * 4), "cuda-graph"
    except Exception as exc:  # capture refuses host syncs: measure eagerly and say why
        torch.cuda.synchronize()
        return time_fn(fn, device, min_seconds=min_seconds, max_iters=max_iters), f"eager: {type(exc).__name__}: {str(exc)[:120]}"
