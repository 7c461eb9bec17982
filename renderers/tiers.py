"""Resolution tiers and how a tier image is derived from a page's master.

The geometry is exactly DeepSeek-OCR v1's preprocessing (shared/reference/deepseek-ocr.md §2):
tiny and small *resize* the image to a square (aspect not kept; Pillow's default BICUBIC), base and
large *pad*: an aspect-preserving BICUBIC fit into the square, centred on grey (127, 127, 127), as
`ImageOps.pad` does. A page is rendered once at the largest tier and every tier derives from that
master, so a page never needs re-rendering as it decays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps

from renderers.records import RenderError

PAD_COLOR = (127, 127, 127)  # int(0.5 * 255): the reference's pad colour


@dataclass(frozen=True)
class TierSpec:
    name: str
    size: int  # square side in pixels
    mode: Literal["resize", "pad"]
    vision_tokens: int  # valid vision tokens (grid²)
    placeholder_tokens: int  # what the tier costs in the decoder's context: grid·(grid+1) + 1

    @property
    def grid(self) -> int:
        return self.size // 64


def _tier(name: str, size: int, mode: Literal["resize", "pad"]) -> TierSpec:
    g = size // 64  # patch 16, then 4x compression per side
    return TierSpec(name, size, mode, g * g, g * (g + 1) + 1)


# Sharpest first. DeepSeek-OCR v1's four native resolution modes.
TIERS: dict[str, TierSpec] = {
    t.name: t
    for t in (
        _tier("large", 1280, "pad"),
        _tier("base", 1024, "pad"),
        _tier("small", 640, "resize"),
        _tier("tiny", 512, "resize"),
    )
}


def tier_spec(tier: str) -> TierSpec:
    try:
        return TIERS[tier]
    except KeyError:
        raise RenderError(f"unknown tier '{tier}'; valid tiers: {', '.join(TIERS)}") from None


def derive_tier(master: Image.Image, tier: str) -> Image.Image:
    """The RGB image DeepSeek-OCR's preprocessing would feed its encoder at `tier`."""
    spec = tier_spec(tier)
    image = master.convert("RGB") if master.mode != "RGB" else master
    if spec.mode == "resize":
        return image.resize((spec.size, spec.size), Image.Resampling.BICUBIC)
    return ImageOps.pad(image, (spec.size, spec.size), color=PAD_COLOR)
