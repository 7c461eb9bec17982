"""Backends: what reads the pages. A backend names its model, gives its tier ladder and encodes pages.

- `LayoutBackend`: DeepSeek-OCR v1's ladder (large 421, base 273, small 111, tiny 73 placeholder
  tokens) without a model. Planning, rendering, the demo and API-model compression work with it; it
  encodes nothing. No torch import.
- `DeepseekOCRBackend`: the native path through `optimem.model`: encodes pages into vision-token
  embeddings, builds decoder inputs and generates. It drives either model: DeepSeek-OCR v1 (run by
  optimem, ladder large/base/small/tiny) or DeepSeek-OCR-2 (transformers' native classes, ladder
  tiles/base/small); `from_pretrained` picks by the checkpoint's config.json.
- `DeepseekOCR2Backend`: the same backend, insisting on a DeepSeek-OCR-2 checkpoint.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from optimem.errors import ModelError
from policies import DEEPSEEK_OCR_V1, Ladder


@runtime_checkable
class Backend(Protocol):
    model_id: str
    ladder: Ladder

    def placeholder_count(self, tier: str) -> int: ...
    def encode(self, images: list[Any], tier: str) -> list[Any]: ...


class LayoutBackend:
    """The DeepSeek-OCR v1 ladder and token costs, no model."""

    model_id = "deepseek-ocr-v1:layout"
    ladder = DEEPSEEK_OCR_V1
    has_model = False

    def placeholder_count(self, tier: str) -> int:
        for t in self.ladder.tiers:
            if t.name == tier:
                return t.tokens
        raise ModelError(f"unknown tier '{tier}'; valid: {', '.join(self.ladder.names)}")

    def encode(self, images: list[Any], tier: str) -> list[Any]:
        raise ModelError("the layout backend has no model: pass backend=DeepseekOCRBackend(...) to encode pages")


class DeepseekOCRBackend:
    """A DeepSeek-OCR model (v1 or OCR-2, see `optimem.model`) reading the pages."""

    has_model = True

    def __init__(self, model: Any, *, batch_size: int = 16, compile: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.model = model
        self.model_id = model.model_id
        self.ladder = model.ladder()
        self.batch_size = batch_size
        if compile:
            self.compile()

    @classmethod
    def from_pretrained(cls, path: str, *, batch_size: int = 16, compile: bool = False,
                        **kwargs: Any) -> "DeepseekOCRBackend":
        """v1 or OCR-2 by the checkpoint's model_type; `dtype` and `device` pass through."""
        from optimem.model import load_model

        return cls(load_model(path, **kwargs), batch_size=batch_size, compile=compile)

    def compile(self, **kwargs: Any) -> "DeepseekOCRBackend":
        """Encode through the compiled encoder (`model.compile`, which gives the speed-up; for CUDA).
        From then on every forward carries exactly `batch_size` pages, a
        short last batch padded with copies of its last page whose outputs are dropped: the compiled
        encoder is specialised per input shape, so each tier compiles once (~35-50 s) instead of once
        per batch size that happens to come along."""
        self.model.compile(**kwargs)
        return self

    @property
    def compiled(self) -> bool:
        """The model's encoder is compiled, here or by the caller before wrapping it: pad batches."""
        from optimem.model.speed import is_compiled

        return is_compiled(self.model)

    def placeholder_count(self, tier: str) -> int:
        return self.model.placeholder_count(tier)

    def encode(self, images: list[Any], tier: str) -> list[Any]:
        """One [placeholders, hidden] tensor per image, batched `batch_size` pages per forward."""
        out: list[Any] = []
        compiled = self.compiled
        for i in range(0, len(images), self.batch_size):
            chunk = list(images[i : i + self.batch_size])
            pad = self.batch_size - len(chunk) if compiled else 0
            batch = self.model.encode_pages(chunk + chunk[-1:] * pad, tier)
            out.extend(batch[: len(chunk)])  # rows of a tensor, or items of a list
        return out


class DeepseekOCR2Backend(DeepseekOCRBackend):
    """DeepSeek-OCR-2 through transformers' native classes (`optimem.model.DeepseekOCR2`)."""

    @classmethod
    def from_pretrained(cls, path: str, *, batch_size: int = 16, **kwargs: Any) -> "DeepseekOCR2Backend":
        from optimem.model.ocr2 import DeepseekOCR2

        return cls(DeepseekOCR2.from_pretrained(path, **kwargs), batch_size=batch_size)
