"""One tier table per model: names, the page view each tier feeds the encoder, what a page costs in
the model's context, and how much of its text survives.

A backend owns one `ModelLadder`; everything else asks it: the policies get `ladder.costs` (names,
tokens, fidelity; policies never name a model), the page pipeline gets `ladder.view(master, tier)`,
the CLI gets the tier names. The geometry itself is `renderers.tiers.view` (exactly DeepSeek-OCR
v1's preprocessing); a tier whose model resamples pages itself (OCR-2's processor) has mode
"native" and its view is the master unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from optimem.errors import ConfigError
from optimem.policies import Ladder, TierCost


@dataclass(frozen=True)
class TierView:
    name: str
    size: int  # square side fed to the encoder (the global view for tiled tiers)
    mode: Literal["resize", "pad", "native"]
    tokens: int  # placeholder tokens one page costs in the decoder's context
    vision_tokens: int  # encoder outputs carrying the page (tokens less row newlines and separators)
    fidelity: float | None = None  # share of a page's text recoverable at this tier, 0..1


@dataclass(frozen=True)
class ModelLadder:
    model: str
    views: tuple[TierView, ...]  # sharpest first

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.views)

    @property
    def costs(self) -> Ladder:
        """What the policies plan with."""
        return Ladder(tuple(TierCost(v.name, v.tokens, v.fidelity) for v in self.views))

    def spec(self, tier: str) -> TierView:
        for v in self.views:
            if v.name == tier:
                return v
        raise ConfigError(f"unknown tier '{tier}' for {self.model}; valid: {', '.join(self.names)}")

    def placeholder_count(self, tier: str) -> int:
        return self.spec(tier).tokens

    def view(self, master, tier: str):
        """The image the encoder is fed at `tier`, derived from a page's master. Grey masters stay
        grey (one channel to resample: bit-identical to the RGB path, a third of the work); the
        encoder's preprocessing turns them into RGB."""
        from optimem.renderers.tiers import view

        spec = self.spec(tier)
        return master if spec.mode == "native" else view(master, spec.size, spec.mode)


def _v1(name: str, size: int, mode: Literal["resize", "pad"], fidelity: float) -> TierView:
    g = size // 64  # patch 16, then 4x compression per side: g*g tokens, a newline per row, a separator
    return TierView(name, size, mode, g * (g + 1) + 1, g * g, fidelity)


# DeepSeek-OCR v1's four native modes. Fidelities are provisional: small and tiny are the paper's Fox
# figures for pages of 900-1000 text tokens (Table 2: 96.8% at 100 vision tokens, 85.9% at 64); base
# and large are not in that table and are set just above small. `optimem bench legibility` measures a
# proxy per density; see the README.
DEEPSEEK_OCR_V1 = ModelLadder("deepseek-ocr-v1", (
    _v1("large", 1280, "pad", 0.99),
    _v1("base", 1024, "pad", 0.985),
    _v1("small", 640, "resize", 0.968),
    _v1("tiny", 512, "resize", 0.859),
))

# DeepSeek-OCR-2 (optimem.model.ocr2 explains the tiers): its image processor resamples the master.
# No fidelities are published or measured, so the planner orders coarsening by its fallback.
_OCR2_TILE, _OCR2_GLOBAL, _OCR2_TILES = 144, 256, 4
DEEPSEEK_OCR2 = ModelLadder("deepseek-ocr-2", (
    TierView("tiles", 1024, "native", _OCR2_TILES * _OCR2_TILE + _OCR2_GLOBAL + 1, _OCR2_TILES * _OCR2_TILE + _OCR2_GLOBAL),
    TierView("base", 1024, "native", _OCR2_GLOBAL + 1, _OCR2_GLOBAL),
    TierView("small", 768, "native", _OCR2_TILE + 1, _OCR2_TILE),
))
