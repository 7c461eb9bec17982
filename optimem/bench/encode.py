"""`optimem bench encode`: DeepEncoder pages/s and TFLOP/s per mode and batch size, against the
reference's one-image-at-a-time path; plus decoder prefill tokens/s at 8k context.

Full-size DeepSeek-OCR architecture with random weights (no checkpoint is reachable on the GPU
machine), bf16 on CUDA.

- FLOPs per page: torch's FlopCounterMode over one page through the *stock* encoder (transformers'
  SAM attention with its dense relative-position bias), i.e. the model's useful matmul, convolution
  and attention FLOPs at 2 per multiply-add; the extra FLOPs of the fused attention's wider heads
  (sam_attention.py) are not counted, so TFLOP/s is not flattered by them.
- optimem path: pages batched per forward, pixels already on the GPU, SAM attention fused
  (`--attention fused`, the default), newline/separator layout included. Compiled rows
  (`--compile-batches`) go through the library's entry point, `optimem.model.speed.compile_encoder`
  (fused attention with 64-wide values on CUDA, the patch embedding as one matmul, torch.compile).
- `--exactness`: at the first variant point, the bf16 paths' outputs against the stock encoder run in
  fp32 (same weights), max and mean absolute error, next to the stock bf16 path's own error.
- Reference path: the same weights driven the way DeepSeek-OCR's own code drives them: one image per
  forward, stock SAM attention with the dense bias, under `torch.autocast(bfloat16)`, SAM, CLIP and
  projector called stage by stage and the newline layout assembled per image. Reported twice:
  `reference_pages_per_s` from a rendered page image (per-image preprocessing on the CPU as the
  reference does it, fp32 tensor -> bf16 -> cuda) and `reference_model_pages_per_s` from pixels
  already on the GPU (model only). The reference code itself cannot be committed, so this is the
  reference *path*, not its code.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
from typing import Any

log = logging.getLogger(__name__)

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--modes", nargs="+", default=["tiny", "small", "base", "large"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--tiny", action="store_true", help="tiny random config (CPU smoke test), not full size")
    p.add_argument("--prefill-tokens", type=int, default=8192)
    p.add_argument("--attention", choices=["fused", "sdpa"], default="fused",
                   help="SAM attention for the optimem path: fused relative positions (default) or stock SDPA+bias")
    p.add_argument("--compile", action="store_true", help="torch.compile the optimem encoder (one compile per shape)")
    p.add_argument("--compile-batches", nargs="*", type=int, default=[],
                   help="also rows with the encoder compiled by optimem.model.speed.compile_encoder at these batch sizes")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for the compiled rows (default: torch's)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; 'eager' for smoke tests)")
    p.add_argument("--compile-attention", default="fused", choices=["fused", "flex", "flex-global"],
                   help="SAM attention of the compiled rows (see optimem.model.speed)")
    p.add_argument("--variants", nargs="*", metavar="MODE:BATCH", default=None,
                   help="also time sdpa / fused / compiled at these points (default base:32)")
    p.add_argument("--profile", action="store_true",
                   help="top CUDA kernels of the fused and compiled paths at the first variant point")
    p.add_argument("--exactness", action="store_true",
                   help="bf16 outputs against the stock encoder in fp32 at the first variant point")
    p.add_argument("--min-seconds", type=float, default=0.5)


def _page_image(size: int):
    """A rendered text page (the real renderer, 1024 px like the memory's pages): the input the
    reference path preprocesses. Where the renderer's font stack is missing (a bare GPU machine), a
    PIL-drawn page of the same size: preprocessing cost depends on the size, not the text."""
    try:
        from optimem.bench.render import sample_text
        from optimem.renderers import RenderSettings, Turn
        from optimem.renderers.layout import Paginator

        pg = Paginator(RenderSettings(page_px=1024, font_px=24, margin_px=24))
        lines, _, _ = next(pg.iter_page_lines([Turn("document", sample_text("en", 3600, seed=1))]))
        return pg.draw(lines)[0]
    except Exception as exc:  # any renderer failure (fonts, freetype) only changes the page's content
        from PIL import Image, ImageDraw

        log.info("renderer unavailable (%s); drawing the reference page with PIL", exc)
        img = Image.new("L", (1024, 1024), 255)
        draw = ImageDraw.Draw(img)
        for y in range(24, 1000, 30):
            draw.text((24, y), "optical memory page text " * 4, fill=0)
        return img


def _layout(mod: Any, feats: Any) -> Any:
    import torch

    g = int(math.isqrt(feats.shape[1]))
    sep = mod.view_seperator.to(feats.dtype)[None, :]
    return torch.stack([torch.cat([mod._grid_with_newlines(f, g, g), sep]) for f in feats])


def _row(mode: str, batch: int, pps: float, flops: int, peak: float | None, ref_s: float, ref_model_s: float,
         **extra: Any) -> dict:
    from optimem.model import placeholder_count

    return {
        "mode": mode, "batch": batch, "compiled": "compile_s" in extra, **extra, "pages_per_s": round(pps, 1),
        "tflops": round(flops * pps / 1e12, 1), "pct_peak": round(100 * flops * pps / peak, 1) if peak else None,
        "reference_pages_per_s": round(1 / ref_s, 1), "speedup_vs_reference": round(pps * ref_s, 2),
        "reference_model_pages_per_s": round(1 / ref_model_s, 1), "speedup_vs_reference_model": round(pps * ref_model_s, 2),
        "gflop_per_page": round(flops / 1e9, 1), "placeholders": placeholder_count(mode),
    }


def run(args: argparse.Namespace) -> dict:
    import torch

    from optimem.bench.gpu import bf16_peak, device_info, flops_of, time_fn
    from optimem.model import DeepseekOCR, DeepseekOCRConfig, tiny_config
    from optimem.model.preprocess import MODES, preprocess
    from optimem.model.sam_attention import fuse_sam_attention, restore_sam_attention

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = tiny_config() if args.tiny else DeepseekOCRConfig()
    model = DeepseekOCR.random(config, dtype=args.dtype, device=str(device))
    mod = model.module
    stock = mod.encoder  # transformers' SAM attention: the reference path and the FLOP count
    restore_sam_attention(stock)  # DeepseekOCR fuses by default; the stock path must be stock
    fused = copy.deepcopy(stock)
    fuse_sam_attention(fused)
    ours = fused if args.attention == "fused" else stock

    def compiled_encoder() -> Any:
        """The library's compiled path (optimem.model.speed.compile_encoder) on a copy of the weights."""
        from types import SimpleNamespace

        from optimem.model.speed import compile_encoder

        if "lib" not in compiled:
            enc = copy.deepcopy(stock)
            extra = {"backend": args.compile_backend} if args.compile_backend else {}
            compile_encoder(SimpleNamespace(vision_encoder=enc), args.compile_mode,
                            attention=args.compile_attention, **extra)
            compiled["lib"] = enc
        return compiled["lib"]

    info = device_info(device)
    peak = bf16_peak(info)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    flops: dict[str, int] = {}

    def optimem_path(encoder: Any, pixels: Any) -> Any:
        return _layout(mod, encoder(pixels))

    def reference_stages(img: Any) -> Any:
        sam = stock.sam_model(img).last_hidden_state
        clip = stock.vision_model(sam)
        feats = stock.projector(torch.cat([clip[:, 1:], sam.flatten(2).permute(0, 2, 1)], -1))
        g = int(math.isqrt(feats.shape[1]))
        return mod._grid_with_newlines(feats[0], g, g)

    rows = []
    compiled: dict[str, Any] = {}
    for mode in args.modes:
        size = MODES[mode][0]
        page = _page_image(size)
        with torch.inference_mode():
            one = torch.randn(1, 3, size, size, device=device, dtype=model.dtype)
            flops[mode] = flops_of(lambda: optimem_path(stock, one))

            def reference_from_image(n: int = 4) -> None:
                for _ in range(n):  # per image: CPU preprocessing, fp32 tensor -> model dtype (bf16) -> device, stages
                    x = torch.from_numpy(preprocess(page, mode))[None].to(model.dtype).to(device)
                    with autocast:
                        reference_stages(x)

            ref_pixels = torch.randn(4, 3, size, size, device=device, dtype=model.dtype)

            def reference_model() -> None:
                for i in range(ref_pixels.shape[0]):
                    with autocast:
                        reference_stages(ref_pixels[i : i + 1])

            ref_s = time_fn(reference_from_image, device, min_seconds=args.min_seconds) / 4
            ref_model_s = time_fn(reference_model, device, min_seconds=args.min_seconds) / 4
            encoder = compiled_encoder() if args.compile else ours
            for b in args.batches:
                try:
                    pixels = torch.randn(b, 3, size, size, device=device, dtype=model.dtype)
                    s = time_fn(lambda: optimem_path(encoder, pixels), device, min_seconds=args.min_seconds)
                except torch.OutOfMemoryError:
                    pixels = None
                    torch.cuda.empty_cache()
                    rows.append({"mode": mode, "batch": b, "pages_per_s": None, "note": "out of memory"})
                    continue
                rows.append(_row(mode, b, b / s, flops[mode], peak, ref_s, ref_model_s))
            for b in args.compile_batches:
                import time

                enc = compiled_encoder()
                pixels = torch.randn(b, 3, size, size, device=device, dtype=model.dtype)
                t0 = time.perf_counter()
                optimem_path(enc, pixels)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                compile_s = time.perf_counter() - t0
                s = time_fn(lambda: optimem_path(enc, pixels), device, min_seconds=args.min_seconds)
                rows.append(_row(mode, b, b / s, flops[mode], peak, ref_s, ref_model_s, compile_s=round(compile_s, 1)))
            pixels = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result: dict[str, Any] = {"table": rows}
    if args.variants is not None:
        result["variants"] = _variants(args, mod, stock, fused, compiled_encoder, device, model.dtype, flops, peak)
        if args.exactness:
            result["exactness"] = _exactness(args, stock, fused, compiled_encoder, device, model.dtype)
    # decoder prefill at 8k tokens
    n = min(args.prefill_tokens, config.text.max_position_embeddings * 4)
    with torch.inference_mode():
        emb = torch.randn(1, n, config.text.hidden_size, device=device, dtype=model.dtype)
        pre_s = time_fn(lambda: mod.language(inputs_embeds=emb), device, min_seconds=1.0)
    result.update({
        "decoder_prefill": {"tokens": n, "seconds": round(pre_s, 4), "tokens_per_s": round(n / pre_s)},
        "config": "tiny (smoke test)" if args.tiny else "full size DeepSeek-OCR v1 (3,336,106,240 parameters), random weights",
        "dtype": args.dtype, "attention": args.attention, "compiled": args.compile, "peak_bf16_flops": peak, **info,
        "compiled_path": {"entry": "optimem.model.speed.compile_encoder", "mode": args.compile_mode or "default",
                          "attention": args.compile_attention, "dynamic": False,
                          "backend": args.compile_backend or "inductor"},
        "flops_method": "torch.utils.flop_counter.FlopCounterMode on one page through the stock encoder",
        "reference_path": "optimem's encoder driven like DeepSeek-OCR's code: batch 1, stock SAM attention, autocast "
                          "bf16, stage by stage; reference_pages_per_s includes per-image CPU preprocessing",
    })
    return result


def _variants(args, mod, stock, fused, compiled_encoder, device, dtype, flops, peak) -> list[dict]:
    """The same point timed with stock SDPA+bias, fused eager, and the library's compiled path."""
    import time

    import torch

    from optimem.bench.gpu import time_fn
    from optimem.model.preprocess import MODES

    points = args.variants or ["base:32"]
    out = []
    for i, point in enumerate(points):
        mode, b = point.split(":")
        size, b = MODES[mode][0], int(b)
        with torch.inference_mode():
            pixels = torch.randn(b, 3, size, size, device=device, dtype=dtype)
            if mode not in flops:
                one = pixels[:1]
                from optimem.bench.gpu import flops_of

                flops[mode] = flops_of(lambda: _layout(mod, stock(one)))
            for name in ("sdpa", "fused", "compiled"):
                enc = stock if name == "sdpa" else fused
                row: dict[str, Any] = {"mode": mode, "batch": b, "variant": name}
                try:
                    if name == "compiled":
                        enc = compiled_encoder()
                        t0 = time.perf_counter()
                        _layout(mod, enc(pixels))
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        row["compile_s"] = round(time.perf_counter() - t0, 1)  # ~0 where the table compiled it
                    s = time_fn(lambda: _layout(mod, enc(pixels)), device, min_seconds=args.min_seconds)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    row["note"] = "out of memory"
                    out.append(row)
                    continue
                pps = b / s
                row.update({"pages_per_s": round(pps, 1), "tflops": round(flops[mode] * pps / 1e12, 1),
                            "pct_peak": round(100 * flops[mode] * pps / peak, 1) if peak else None})
                if args.profile and i == 0 and name in ("fused", "compiled"):
                    row["profile_top"] = _profile(lambda: _layout(mod, enc(pixels)), device)
                out.append(row)
    return out


def _exactness(args, stock, fused, compiled_encoder, device, dtype) -> dict:
    """bf16 outputs [B, tokens, 1280] against the stock encoder in fp32 on the same pixels (the first
    variant point, fp32 run two pages at a time): max / mean absolute error per path."""
    import torch

    from optimem.model.preprocess import MODES

    mode, b = (args.variants or ["base:32"])[0].split(":")
    size, b = MODES[mode][0], int(b)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.inference_mode():
        pixels = torch.randn(b, 3, size, size, device=device, generator=gen).to(dtype)
        ref = copy.deepcopy(stock).float()
        want = torch.cat([ref(pixels[i:i + 2].float()) for i in range(0, b, 2)])
        del ref
        out = {"point": f"{mode}:{b}", "reference": "stock encoder, fp32 weights and activations",
               "ref_max_abs": round(want.abs().max().item(), 4)}
        paths = {"stock_bf16": lambda x: torch.cat([stock(x[i:i + 2]) for i in range(0, b, 2)]),
                 "fused_bf16": fused, "compiled_bf16": compiled_encoder()}
        for name, fn in paths.items():
            err = (fn(pixels).float() - want).abs()
            out[name] = {"max_abs_err": round(err.max().item(), 5), "mean_abs_err": round(err.mean().item(), 6)}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _profile(fn, device) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    with profile(activities=acts) as prof:
        for _ in range(3):
            fn()
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:25]
    return [{"name": e.key[:90], "ms_per_call_total": round(getattr(e, key, 0) / 1e3 / 3, 3), "count": e.count // 3}
            for e in events]
