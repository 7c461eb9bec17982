"""Tier ladders: raw text, then a backend's image tiers from sharpest to coarsest, then dropped.

Policies never hard-code a model: the backend supplies its ladder (names, what each tier costs in the
model's context, and how much of a page's text survives at that tier).
"""

from __future__ import annotations

from dataclasses import dataclass


class PolicyError(ValueError):
    """A plan that cannot be made as asked (budget too small for what must stay text, bad settings)."""


@dataclass(frozen=True)
class TierCost:
    name: str
    tokens: int  # what one page at this tier costs in the model's context
    fidelity: float | None = None  # share of the page's text recoverable at this tier, 0..1


@dataclass(frozen=True)
class Ladder:
    tiers: tuple[TierCost, ...]  # sharpest first

    def __post_init__(self) -> None:
        if not self.tiers:
            raise PolicyError("a ladder needs at least one tier")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names) or "text" in names or "dropped" in names:
            raise PolicyError(f"tier names must be unique and not 'text'/'dropped': {names}")
        for t in self.tiers:
            if t.tokens <= 0:
                raise PolicyError(f"tier '{t.name}' must cost at least one token")
            if t.fidelity is not None and not 0.0 <= t.fidelity <= 1.0:
                raise PolicyError(f"tier '{t.name}' fidelity must be within 0..1")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def index(self, name: str) -> int:
        """Position of a tier (0 = sharpest); len(tiers) stands for 'dropped'."""
        if name == "dropped":
            return len(self.tiers)
        for i, t in enumerate(self.tiers):
            if t.name == name:
                return i
        raise PolicyError(f"unknown tier '{name}'; this ladder has: {', '.join(self.names)}, dropped")

    def fidelities(self) -> tuple[float, ...]:
        """Fidelity per tier; a tier without a measured value interpolates linearly from 1.0 at the
        sharpest to 0.5 at the coarsest (documented fallback, only used to order coarsening steps)."""
        n = len(self.tiers)
        out = []
        for i, t in enumerate(self.tiers):
            out.append(t.fidelity if t.fidelity is not None else 1.0 - 0.5 * (i / max(n - 1, 1)))
        return tuple(out)
