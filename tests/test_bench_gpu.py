"""CPU smoke tests of the GPU benchmarks (tiny configs); the SAM attention paths they time are
tested in tests/test_sam_attention.py. GPU-only checks skip cleanly without CUDA."""

from __future__ import annotations

import argparse
import json

import pytest

torch = pytest.importorskip("torch")

from optimem.bench import e2e, encode  # noqa: E402
from optimem.bench.gpu import flops_of, time_fn  # noqa: E402


def test_graphed_time_falls_back_on_cpu() -> None:
    from optimem.bench.gpu import graphed_time

    s, how = graphed_time(lambda: None, torch.device("cpu"), min_seconds=0.0, max_iters=3)
    assert s >= 0 and how == "eager: no CUDA"


def test_time_fn_and_flops_count() -> None:
    calls = []
    s = time_fn(lambda: calls.append(1), "cpu", warmup=1, min_seconds=0.0, max_iters=5)
    assert s >= 0 and 2 <= len(calls) <= 6
    a = torch.randn(8, 16)
    b = torch.randn(16, 4)
    assert flops_of(lambda: a @ b) == 2 * 8 * 16 * 4


def _ns(module, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p.parse_args(argv)


def test_encode_bench_tiny_cpu() -> None:
    args = _ns(encode, ["--tiny", "--device", "cpu", "--dtype", "float32", "--modes", "tiny", "--batches", "1", "2",
                        "--prefill-tokens", "64", "--min-seconds", "0"])
    out = encode.run(args)
    rows = out["table"]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["pages_per_s"] > 0 and r["gflop_per_page"] > 0 and r["placeholders"] == 73
        assert r["reference_pages_per_s"] > 0 and r["speedup_vs_reference"] > 0
        assert r["pct_peak"] is None  # no peak for a CPU
    assert out["decoder_prefill"]["tokens"] == 64
    json.dumps(out)


def test_encode_bench_variants_exactness_cpu() -> None:
    # the compiled rows / variants / exactness wiring, with dynamo's eager backend (no inductor on CPU)
    args = _ns(encode, ["--tiny", "--device", "cpu", "--dtype", "float32", "--modes", "tiny", "--batches", "2",
                        "--compile-batches", "2", "--compile-backend", "eager", "--variants", "tiny:2", "--exactness",
                        "--prefill-tokens", "64", "--min-seconds", "0"])
    torch._dynamo.reset()
    out = encode.run(args)
    rows = out["table"]
    assert [(r["batch"], r["compiled"]) for r in rows] == [(2, False), (2, True)]
    assert [v["variant"] for v in out["variants"]] == ["sdpa", "fused", "compiled"]
    ex = out["exactness"]
    for path in ("stock_bf16", "fused_bf16", "compiled_bf16"):  # fp32 here: all equal to the reference
        assert ex[path]["max_abs_err"] < 1e-4
    assert out["compiled_path"]["entry"] == "optimem.model.speed.compile_encoder"
    json.dumps(out)


def test_e2e_replay_from_curves(tmp_path) -> None:
    curves = {
        "prefill": [[512, 0.01], [8192, 0.05], [131072, 1.5]],
        "prefix_prefill": [[p, n, 0.002 * n / 128 + p * 1e-7] for p in (1024, 8192, 131072) for n in (128, 512, 2048)],
        "decode_step": [[1024, 0.010], [8192, 0.011], [131072, 0.03]],
        "encode_s_per_page": {"tiny": 0.002, "small": 0.003, "base": 0.004, "large": 0.008},
        "kv_bytes_per_token_formula": 61440, "weights_bytes_bf16": 2 * 3_336_106_240,
    }
    path = tmp_path / "curves.json"
    path.write_text(json.dumps(curves))
    args = _ns(e2e, ["--curves", str(path), "--histories", "4096", "--budgets", "2048", "--plots", str(tmp_path)])
    out = e2e.run(args)
    rows = {r["strategy"]: r for r in out["table"]}
    assert set(rows) == {"full", "prefix", "truncate@2048", "optimem@2048"}
    assert rows["optimem@2048"]["final_context_tokens"] <= 2048 - e2e.REPLY_TOKENS
    assert rows["truncate@2048"]["history_held_pct"] < rows["optimem@2048"]["history_held_pct"]
    assert rows["prefix"]["cumulative_gpu_s"] < rows["full"]["cumulative_gpu_s"]
    assert rows["full"]["kv_mib_per_session"] > rows["optimem@2048"]["kv_mib_per_session"]
    assert (tmp_path / "e2e.png").stat().st_size > 1000
    t = out["targets_at_32k"]["optimem@2048"]
    assert t["kv_smaller_than_full"][0] > 1 and isinstance(t["decode_faster_than_full"][1], bool)


def test_interp_is_linear_and_through_origin_below_grid() -> None:
    pts = [[100, 1.0], [200, 3.0]]
    assert e2e._interp(pts, 150) == pytest.approx(2.0)
    assert e2e._interp(pts, 50) == pytest.approx(0.5)
    assert e2e._interp(pts, 300) == pytest.approx(5.0)  # extrapolates the last segment
