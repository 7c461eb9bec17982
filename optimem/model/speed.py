"""The fast DeepEncoder path: torch.compile over the whole encoder (one compile per input shape).

What it changes before compiling, all exact up to float rounding (tests/test_sam_attention.py):
- SAM attention: the fused relative-position SDPA (`optimem.model.sam_attention`), the eager default
  too; on CUDA its values stay 64 wide (cuDNN takes a narrower value head). `attention="flex"` puts
  torch's flex_attention there instead (head dim 64, bias in a score_mod): exact but measured 8-11x
  slower per block on an H100 with torch 2.11, so not the default.
- SAM's patch embedding as one matmul over unfolded 16x16 patches (`MatmulSamPatchEmbeddings`,
  the eager default too; `matmul_patch_embed=False` keeps transformers' convolution).

    model = DeepseekOCR.random(DeepseekOCRConfig(), dtype="bfloat16", device="cuda")
    model.compile()                          # = compile_encoder(model); DeepseekOCR2 has it too
    model.encode_pages(images, "base")       # first call per (tier, batch size) compiles (~35-50 s)

The encoder module (`model.vision_encoder`) is compiled in place (`nn.Module.compile`), so parameter names, `state_dict()`
and `save_pretrained` are unchanged and `model.encode_pages` / `page_embeddings` go through it.
The maths is the eager path's up to float rounding (tests/test_sam_attention.py); `uncompile_encoder`
undoes it. On CPU the same call works but buys little; it is meant for CUDA.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("fused", "flex", "flex-global")


def prepare_encoder(encoder: Any, attention: str = "fused", channels_last: bool = False,
                    matmul_patch_embed: bool = True) -> dict[str, int]:
    """Swap in the compiled path's modules, in place (no compile here); returns what was swapped.

    attention: "fused" (the fused relative-position SDPA, as eager), "flex" (every SAM block through
    flex_attention at head dim 64), "flex-global" (only the global blocks through flex_attention).
    channels_last: store the convolution weights channels-last (cuDNN's NHWC kernels).
    matmul_patch_embed: SAM's patch-embedding convolution as one matmul over unfolded patches.
    """
    import torch
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2SamPatchEmbeddings

    from optimem.model.sam_attention import MatmulSamPatchEmbeddings, flex_sam_attention, fuse_sam_attention

    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, not {attention!r}")
    swapped = {"fused": fuse_sam_attention(encoder)}  # the eager default, matmul patch embedding included
    if attention == "flex":
        swapped["flex"] = flex_sam_attention(encoder, "all")
    elif attention == "flex-global":
        swapped["flex"] = flex_sam_attention(encoder, "global")
    swapped["patch_embed"] = 0
    for sub in encoder.modules():
        if type(sub) is MatmulSamPatchEmbeddings:
            if not matmul_patch_embed:
                sub.__class__ = DeepseekOcr2SamPatchEmbeddings
            else:
                swapped["patch_embed"] += 1
    if channels_last:
        for sub in encoder.modules():
            if isinstance(sub, torch.nn.Conv2d):
                sub.to(memory_format=torch.channels_last)
    return swapped


def compile_encoder(model: Any, mode: str | None = None, *, attention: str = "fused", dynamic: bool | None = False,
                    channels_last: bool = False, matmul_patch_embed: bool = True, **compile_kwargs: Any) -> Any:
    """Make `model.encode_pages` run the compiled fast path: swap in the fast SAM attention and
    compile `model.vision_encoder` in place. `model` is a `DeepseekOCR` or a `DeepseekOCR2`. `mode` is torch.compile's (None = default; "max-autotune-no-cudagraphs" also
    benchmarks Triton matmul templates: minutes per shape, and on an H100 cuBLAS won every large
    matmul of the encoder anyway). dynamic=False compiles once per input shape
    (tier and batch size), the fastest kernels; None lets torch make the batch dimension dynamic after
    a second shape. Returns the encoder module."""
    encoder = model.vision_encoder
    swapped = prepare_encoder(encoder, attention, channels_last, matmul_patch_embed)
    kwargs: dict[str, Any] = {"dynamic": dynamic, **compile_kwargs}
    if mode is not None:
        kwargs["mode"] = mode
    encoder.compile(**kwargs)
    log.info("encoder compiled (%s, attention %s, swapped %s)", mode or "default", attention, swapped)
    return encoder


class CompileMixin:
    """`compile()` for a model facade that exposes `vision_encoder` (DeepseekOCR, DeepseekOCR2)."""

    def compile(self, mode: str | None = None, **kwargs: Any):
        """Run `encode_pages` through the compiled encoder (`compile_encoder`): faster batched throughput
        (README, GPU section: `optimem bench encode`) for a compile per tier and batch size, which is
        why a backend pads every batch to one size. For CUDA; returns self."""
        compile_encoder(self, mode, **kwargs)
        return self


def is_compiled(model: Any) -> bool:
    """Whether `model.encode_pages` goes through a compiled encoder (`compile_encoder`, or
    `nn.Module.compile` on `model.vision_encoder` directly)."""
    return getattr(getattr(model, "vision_encoder", None), "_compiled_call_impl", None) is not None


def uncompile_encoder(model: Any) -> Any:
    """Back to the eager default: drop the compiled call and put the fused SAM path
    (`fuse_sam_attention`) back where flex attention or the stock patch embedding had been chosen."""
    from optimem.model.sam_attention import fuse_sam_attention

    encoder = model.vision_encoder
    encoder._compiled_call_impl = None
    fuse_sam_attention(encoder)
    return encoder
