"""What an image costs in each provider's context, as each documents it, so a budget means the bill.

- OpenAI (GPT-4o class), `detail="high"`: fit within 2048x2048, then scale so the shortest side is
  768 px, count 512 px tiles: 85 + 170 x tiles. `detail="low"`: 85. (The documented rule also scales
  small images up to 768; `upscale=False` gives the variant some clients see for small images.)
- Anthropic: tokens = width x height / 750, after downscaling an image whose long edge passes 1568 px
  or that would cost more than ~1600 tokens (1.2 megapixels; 1092x1092 is the largest square kept).
- Google Gemini 2.0: 258 tokens when both sides are <= 384 px, else 258 per 768x768 tile.
- DeepSeek-OCR v1: the placeholder count of the mode (73 / 111 / 273 / 421).

Text tokens: OpenAI's tiktoken downloads its encodings at run time, which machines without network
cannot, so every provider's text is estimated with the DeepSeek-OCR tokenizer (`renderers.tokens`),
documented as an estimate (English BPE vocabularies of this size agree within ~10-15%).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from optimem.errors import ConfigError
from policies import Ladder, TierCost
from renderers.tiers import TIERS


def openai_image_tokens(width: int, height: int, detail: str = "high", *, upscale: bool = True) -> int:
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    s = min(1.0, 2048 / max(w, h))
    w, h = w * s, h * s
    short = min(w, h)
    if upscale or short > 768:
        w, h = w * 768 / short, h * 768 / short
    tiles = math.ceil(round(w, 6) / 512) * math.ceil(round(h, 6) / 512)
    return 85 + 170 * tiles


def anthropic_image_tokens(width: int, height: int) -> int:
    w, h = float(width), float(height)
    long_edge = max(w, h)
    if long_edge > 1568:
        w, h = w * 1568 / long_edge, h * 1568 / long_edge
    if w * h > 1_200_000:  # ~1600 tokens: the API downscales past this (1092x1092 is its largest square)
        s = math.sqrt(1_200_000 / (w * h))
        w, h = w * s, h * s
    return math.ceil(int(w) * int(h) / 750)


def gemini_image_tokens(width: int, height: int) -> int:
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


@dataclass(frozen=True)
class Provider:
    name: str
    image_tokens: Callable[[int, int], int]
    tiers: tuple[str, ...] = ("large", "base", "small", "tiny")
    detail: dict[str, str] | None = None  # per tier, for OpenAI

    def ladder(self) -> Ladder:
        """The renderer's tiers priced by this provider; tiers that cost no less than a sharper one
        are skipped (a blurrier page that costs the same is never worth sending)."""
        from policies.ladder import DEEPSEEK_OCR_V1

        fid = {t.name: t.fidelity for t in DEEPSEEK_OCR_V1.tiers}
        out: list[TierCost] = []
        for tier in self.tiers:
            size = TIERS[tier].size
            cost = self.image_tokens(size, size) if self.detail is None else openai_image_tokens(size, size, self.detail[tier])
            if out and cost >= out[-1].tokens:
                continue
            out.append(TierCost(tier, cost, fid[tier]))
        return Ladder(tuple(out))


def _deepseek(w: int, h: int) -> int:  # a square page at a v1 tier size
    for spec in TIERS.values():
        if spec.size >= max(w, h):
            best = spec
    return best.placeholder_tokens


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("openai", openai_image_tokens, ("large", "tiny"), {"large": "high", "tiny": "low"}),
    "anthropic": Provider("anthropic", anthropic_image_tokens),
    "gemini": Provider("gemini", gemini_image_tokens, ("large", "small")),
    "deepseek-ocr": Provider("deepseek-ocr", _deepseek),
}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}") from None


def text_tokens(text: str) -> int:
    """Estimate (see the module docstring): DeepSeek-OCR tokenizer count."""
    from renderers.tokens import count_tokens

    return count_tokens(text)
