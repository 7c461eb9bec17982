"""Image preprocessing exactly as DeepSeek-OCR v1's reference does it, per mode.

Load: EXIF transpose, RGB. tiny/small: resize to a square (BICUBIC, aspect not kept); base/large:
`ImageOps.pad` (aspect-preserving BICUBIC fit, centred on grey 127). Gundam: the global view padded
to 1024, plus 640-px tiles cut from the image resized to the best (cols x rows) grid of 2..9 tiles
(`dynamic_preprocess`); an image no larger than 640 on both sides has no tiles. Pixels: ToTensor then
Normalize(mean 0.5, std 0.5), i.e. x/127.5 - 1, without torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from optimem.errors import ConfigError, InputError
from optimem.ladders import DEEPSEEK_OCR_V1
from optimem.renderers.tiers import PAD_GREY, view

# (image size fed to the encoder, mode): v1's four native modes, from its one tier table
MODES = {v.name: (v.size, v.mode) for v in DEEPSEEK_OCR_V1.views}
PAD = (PAD_GREY,) * 3
MAX_PIXELS = 1 << 28  # ~268 MP: past this the decode alone needs gigabytes; refuse rather than swap


def check_tier(tier: str) -> tuple[int, str]:
    try:
        return MODES[tier]
    except KeyError:
        raise ConfigError(f"unknown tier '{tier}'; valid: {', '.join(MODES)}, gundam") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied and converted to RGB; 16-bit and float images scaled, not clipped."""
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image, got {type(image).__name__}")
    w, h = image.size
    if w < 1 or h < 1:
        raise InputError("image has zero width or height")
    if w * h > MAX_PIXELS:
        raise InputError(f"image of {w}x{h} pixels is too large (over {MAX_PIXELS} pixels); downscale it first")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    return image if image.mode == "RGB" else image.convert("RGB")


def normalize(image: Image.Image) -> np.ndarray:
    """[3, H, W] float32: ToTensor + Normalize(0.5, 0.5)."""
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return ((arr - 0.5) / 0.5).transpose(2, 0, 1).copy()


def preprocess(image: Image.Image, tier: str) -> np.ndarray:
    size, mode = check_tier(tier)
    return normalize(view(to_rgb(image), size, mode))


@dataclass(frozen=True)
class GundamInput:
    global_view: np.ndarray  # [3, 1024, 1024]
    tiles: np.ndarray  # [n, 3, 640, 640], n = cols * rows (0 when the image is small)
    cols: int
    rows: int

    @property
    def placeholders(self) -> int:
        return gundam_placeholders(self.cols, self.rows) if len(self.tiles) else 273


def gundam_placeholders(cols: int, rows: int) -> int:
    """273 for the global view + (10·cols + 1)·(10·rows) for the stitched tiles with row newlines."""
    return 273 + (10 * cols + 1) * (10 * rows)


def _target_ratios(min_num: int = 2, max_num: int = 9) -> list[tuple[int, int]]:
    ratios = set((i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                 if min_num <= i * j <= max_num)
    return sorted(ratios, key=lambda x: x[0] * x[1])


def best_grid(width: int, height: int, tile: int = 640) -> tuple[int, int]:
    """(cols, rows) the reference picks: the closest aspect ratio, ties to the larger grid when the
    image is big enough to fill more than half of it."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for r in _target_ratios():
        diff = abs(aspect - r[0] / r[1])
        if diff < best_diff:
            best, best_diff = r, diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * r[0] * r[1]:
            best = r
    return best


def preprocess_gundam(image: Image.Image, base: int = 1024, tile: int = 640) -> GundamInput:
    image = to_rgb(image)
    w, h = image.size
    glob = normalize(view(image, base, "pad"))
    if w <= tile and h <= tile:
        return GundamInput(glob, np.zeros((0, 3, tile, tile), np.float32), 1, 1)
    cols, rows = best_grid(w, h, tile)
    resized = image.resize((tile * cols, tile * rows), Image.Resampling.BICUBIC)
    tiles = [normalize(resized.crop(((i % cols) * tile, (i // cols) * tile, (i % cols + 1) * tile, (i // cols + 1) * tile)))
             for i in range(cols * rows)]
    return GundamInput(glob, np.stack(tiles), cols, rows)
