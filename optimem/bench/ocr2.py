"""`optimem bench ocr2`: DeepSeek-OCR-2's encoder (transformers' native classes, through
`optimem.model.DeepseekOCR2`) in pages/s and TFLOP/s per optimem tier and batch size.

Full-size OCR-2 vision side (SAM-B, the 896-channel compressor, the 24-layer Qwen2-style encoder) with
random weights, bf16 on CUDA. Timed: `get_image_features` from pixels already on the device (the
image processor's CPU work is excluded, as in `bench encode`'s optimem path), each batch one forward
(global views batched together, tiles batched together). FLOPs per page: torch's FlopCounterMode over
one page, 2 per multiply-add (counted with transformers' own SAM attention, so the fused attention's
work saved is not counted as useful). Eager, SAM attention fused as in v1 (`--attention`);
`--compile-batches` adds rows through `DeepseekOCR2.compile()`.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tiers", nargs="+", default=["small", "base", "tiles"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--tiny", action="store_true", help="tiny random config (CPU smoke test), not full size")
    p.add_argument("--attention", choices=["fused", "stock"], default="fused",
                   help="SAM attention: optimem's fused path (default) or transformers' own (dense bias)")
    p.add_argument("--compile-batches", nargs="*", type=int, default=[],
                   help="also rows through `DeepseekOCR2.compile()` at these batch sizes (one compile per tier and batch)")
    p.add_argument("--min-seconds", type=float, default=0.5)


def run(args: argparse.Namespace) -> dict:
    import time

    import torch

    from optimem.bench.encode import _page_image
    from optimem.bench.gpu import bf16_peak, device_info, flops_of, time_fn
    from optimem.model.ocr2 import DeepseekOCR2, full_ocr2_config, tiny_ocr2_config
    from optimem.model.runtime import dtype_name, resolve_device
    from optimem.model.sam_attention import fuse_sam_attention

    device = resolve_device(args.device)
    dtype = args.dtype if device.type == "cuda" else "float32"  # bf16 matmuls crawl on most CPUs
    model = DeepseekOCR2.random(tiny_ocr2_config() if args.tiny else full_ocr2_config(), dtype=dtype, device=str(device),
                                fused_attention=False)  # FLOPs are counted through transformers' own attention
    info = device_info(device)
    peak = bf16_peak(info)
    page = _page_image(1024)  # the same rendered page `bench encode` uses

    def features(inputs: dict[str, Any]) -> None:
        with torch.inference_mode():
            model.hf.model.get_image_features(**inputs)

    flops = {tier: flops_of(lambda tier=tier: features(model.pixels([page], tier))) for tier in args.tiers}
    if args.attention == "fused":
        fuse_sam_attention(model.hf)

    def measure(tier: str, b: int, compiled: bool) -> dict:
        inputs = model.pixels([page] * b, tier)
        extra = {}
        if compiled:
            t0 = time.perf_counter()
            features(inputs)  # compiles this shape
            extra["compile_s"] = round(time.perf_counter() - t0, 1)
        pps = b / time_fn(lambda: features(inputs), device, min_seconds=args.min_seconds)
        return {"tier": tier, "batch": b, "compiled": compiled, **extra, "placeholders": model.placeholder_count(tier),
                "pages_per_s": round(pps, 1), "gflop_per_page": round(flops[tier] / 1e9, 1),
                "tflops": round(flops[tier] * pps / 1e12, 1),
                "pct_peak": round(100 * flops[tier] * pps / peak, 1) if peak else None}

    rows = [measure(tier, b, False) for tier in args.tiers for b in args.batches]
    if args.compile_batches:
        model.compile()
        rows += [measure(tier, b, True) for tier in args.tiers for b in args.compile_batches]
    vision_params = sum(p.numel() for p in model.hf.model.vision_tower.parameters())
    return {"rows": rows, "attention": args.attention, "config": "tiny" if args.tiny else "full",
            "dtype": dtype_name(model.dtype), "vision_params": vision_params, "peak_bf16_flops": peak, **info,
            "method": __doc__.split("\n\n", 1)[1].strip()}
