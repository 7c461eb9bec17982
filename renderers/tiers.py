"""Page views: how a page's master is resampled into the square an encoder reads.

The geometry is exactly DeepSeek-OCR v1's preprocessing (shared/reference/deepseek-ocr.md §2):
"resize" squashes the image to a square (aspect not kept; Pillow's BICUBIC), "pad" fits it
aspect-preserving (BICUBIC) and centres it on grey 127, as `ImageOps.pad` does. A page is rendered
once, as its master, and every view derives from that master, so a page never needs re-rendering as
it decays. Which sizes and modes a model's tiers use is the model's own table (`optimem.ladders`);
this module names no model.

A grey master stays grey: resampling its one channel gives bit-identical pixels to resampling the
RGB image the encoder finally sees (every band is resampled alone, and the pad grey is equal on all
three), at a third of the work.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image, ImageOps

from .records import RenderError

PAD_GREY = 127  # int(0.5 * 255): the reference's pad colour, on every band


def view(master: Image.Image, size: int, mode: Literal["resize", "pad"]) -> Image.Image:
    """`master` resampled to a `size` square by `mode`; grey ("L") and RGB images keep their mode."""
    if size < 1:
        raise RenderError(f"a view needs a positive size, not {size}")
    image = master if master.mode in ("L", "RGB") else master.convert("RGB")
    if mode == "resize":
        return image.resize((size, size), Image.Resampling.BICUBIC)
    if mode == "pad":
        color = PAD_GREY if image.mode == "L" else (PAD_GREY,) * 3
        return ImageOps.pad(image, (size, size), color=color)
    raise RenderError(f"unknown view mode {mode!r}; use 'resize' or 'pad'")
