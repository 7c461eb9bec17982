"""`optimem bench encode`: DeepEncoder pages/s and TFLOP/s per mode and batch size, against the
reference's one-image-at-a-time path; plus decoder prefill tokens/s at 8k context.

Full-size DeepSeek-OCR architecture with random weights (no checkpoint is reachable here), bf16 on
CUDA. FLOPs per page are counted by torch's FlopCounterMode on one page (matmuls, convolutions and
attention, 2 FLOPs per multiply-add); TFLOP/s = FLOPs per page x pages/s. "Reference path" = the same
encoder driven the way DeepSeek-OCR's own code drives it: one image per forward, a separate SAM, CLIP
and projector call, the newline/separator assembly per image, from preprocessed pixels on the GPU
(CPU preprocessing excluded on both sides, so the ratio is the model's alone).
"""

from __future__ import annotations

import argparse
import math

PEAKS_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--modes", nargs="+", default=["tiny", "small", "base", "large"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--tiny", action="store_true", help="tiny random config (CPU smoke test), not full size")
    p.add_argument("--prefill-tokens", type=int, default=8192)
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")


def _peak(name: str) -> float | None:
    for key, val in PEAKS_BF16.items():
        if key in name:
            return val
    return None


def run(args: argparse.Namespace) -> dict:
    import torch

    from optimem.bench.gpu import device_info, flops_of, time_fn
    from optimem.model import DeepseekOCR, DeepseekOCRConfig, placeholder_count, tiny_config
    from optimem.model.preprocess import MODES

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = tiny_config() if args.tiny else DeepseekOCRConfig()
    model = DeepseekOCR.random(config, dtype=args.dtype, device=str(device))
    mod = model.module
    encoder = torch.compile(mod.encoder) if args.compile else mod.encoder
    info = device_info(device)
    peak = _peak(info.get("gpu", "")) if device.type == "cuda" else None
    rows = []
    for mode in args.modes:
        size = MODES[mode][0]
        with torch.inference_mode():
            one = torch.randn(1, 3, size, size, device=device, dtype=model.dtype)
            flops = flops_of(lambda: mod.page_embeddings(one))

            def reference_path(pixels) -> None:
                for i in range(pixels.shape[0]):  # one image per forward, stage by stage
                    img = pixels[i : i + 1]
                    sam = mod.encoder.sam_model(img).last_hidden_state
                    clip = mod.encoder.vision_model(sam)
                    feats = mod.encoder.projector(torch.cat([clip[:, 1:], sam.flatten(2).permute(0, 2, 1)], -1))
                    g = int(math.isqrt(feats.shape[1]))
                    mod._grid_with_newlines(feats[0], g, g)

            ref_pixels = torch.randn(8, 3, size, size, device=device, dtype=model.dtype)
            ref_s = time_fn(lambda: reference_path(ref_pixels), device) / 8
            for b in args.batches:
                pixels = torch.randn(b, 3, size, size, device=device, dtype=model.dtype)

                def batched() -> None:
                    feats = encoder(pixels)
                    g = int(math.isqrt(feats.shape[1]))
                    sep = mod.view_seperator[None, :]
                    torch.stack([torch.cat([mod._grid_with_newlines(f, g, g), sep]) for f in feats])

                try:
                    s = time_fn(batched, device)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    continue
                pps = b / s
                rows.append({
                    "mode": mode, "batch": b, "pages_per_s": round(pps, 1),
                    "tflops": round(flops * pps / 1e12, 1),
                    "pct_peak": round(100 * flops * pps / peak, 1) if peak else None,
                    "reference_pages_per_s": round(1 / ref_s, 1), "speedup_vs_reference": round(pps * ref_s, 2),
                    "gflop_per_page": round(flops / 1e9, 1), "placeholders": placeholder_count(mode),
                })
    # decoder prefill at 8k tokens
    n = min(args.prefill_tokens, config.text.max_position_embeddings * 4)
    with torch.inference_mode():
        emb = torch.randn(1, n, config.text.hidden_size, device=device, dtype=model.dtype)
        pre_s = time_fn(lambda: mod.language(inputs_embeds=emb), device, min_seconds=1.0)
    return {
        "table": rows,
        "decoder_prefill": {"tokens": n, "seconds": round(pre_s, 4), "tokens_per_s": round(n / pre_s)},
        "config": "tiny (smoke test)" if args.tiny else "full size DeepSeek-OCR v1 (3,336,106,240 parameters), random weights",
        "dtype": args.dtype, "compiled": args.compile, "peak_bf16_flops": peak, **info,
        "flops_method": "torch.utils.flop_counter.FlopCounterMode on one page",
    }
