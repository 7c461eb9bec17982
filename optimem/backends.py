"""Backends: the only door to a model. A backend names its model, owns its tier ladder
(`optimem.ladders`: names, views, placeholder tokens, fidelity), encodes page views into vision
tokens, and, when it has a model, builds native prompts, generates and reads pages back (OCR).

- `NoModelBackend`: DeepSeek-OCR v1's ladder and prompt format without a model. Planning, rendering,
  the demo and API-model compression work with it; it encodes and generates nothing. No torch.
- `DeepseekOCRBackend`: the native path through `optimem.model`, either model: DeepSeek-OCR v1 (run
  by optimem, ladder large/base/small/tiny) or DeepSeek-OCR-2 (transformers' native classes, ladder
  tiles/base/small); `from_pretrained` picks by the checkpoint's config.json.
- `DeepseekOCR2Backend`: the same backend, insisting on a DeepSeek-OCR-2 checkpoint.

Callers ask `backend.has_model` and call these methods; nothing outside this module reaches into
`backend.model`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from optimem.errors import ModelError
from optimem.ladders import DEEPSEEK_OCR_V1, ModelLadder
from optimem.prompt import NativePrompt, PromptBuilder, SpecialIds
from optimem.policies import Overhead

# What optimem.context's "deepseek" template adds around a plan's items, in DeepSeek-OCR tokens: BOS and
# the closing "<|Assistant|>:" (3); "\n" after each page (1); per text turn at most 6, the system and
# tool turns' "<|User|>: System: " + "\n\n" (user 3 + 1, assistant 3 + EOS). Checked against the real
# prompt by tests/test_retention.py::test_native_prompt_never_exceeds_the_budget.
DEEPSEEK_TEMPLATE_OVERHEAD = Overhead(fixed=3, per_page=1, per_turn=6)


@runtime_checkable
class Backend(Protocol):
    model_id: str
    ladder: ModelLadder
    has_model: bool
    # held by whatever runs on the model's device (a generation, a background page encode batch)
    device_lock: Any

    def placeholder_count(self, tier: str) -> int: ...
    def encode(self, images: list[Any], tier: str) -> list[Any]: ...
    def prompts(self) -> PromptBuilder: ...
    def generate(self, prompt: NativePrompt, *, max_new_tokens: int = 256) -> str: ...
    def stream(self, prompt: NativePrompt, *, max_new_tokens: int = 256) -> Iterator[str]: ...
    def ocr(self, image: Any, tier: str, *, max_new_tokens: int = 2048) -> str: ...


class NoModelBackend:
    """DeepSeek-OCR v1's ladder, tokenizer and prompt format; no model (nothing is encoded)."""

    model_id = "deepseek-ocr-v1:layout"
    ladder: ModelLadder = DEEPSEEK_OCR_V1
    has_model = False
    template_overhead = DEEPSEEK_TEMPLATE_OVERHEAD
    device_lock = threading.RLock()  # no device: nothing waits on it

    def placeholder_count(self, tier: str) -> int:
        return self.ladder.placeholder_count(tier)

    def prompts(self) -> PromptBuilder:
        from optimem.renderers.tokens import BOS_ID, EOS_ID, IMAGE_TOKEN_ID, load_tokenizer

        return PromptBuilder(load_tokenizer(), SpecialIds(BOS_ID, EOS_ID, IMAGE_TOKEN_ID))

    def _no_model(self, what: str) -> ModelError:
        return ModelError(f"{what} needs a model: pass backend=DeepseekOCRBackend.from_pretrained(path)")

    def encode(self, images: list[Any], tier: str) -> list[Any]:
        raise self._no_model("encoding pages")

    def generate(self, prompt: NativePrompt, *, max_new_tokens: int = 256) -> str:
        raise self._no_model("generating")

    def stream(self, prompt: NativePrompt, *, max_new_tokens: int = 256) -> Iterator[str]:
        raise self._no_model("generating")

    def ocr(self, image: Any, tier: str, *, max_new_tokens: int = 2048) -> str:
        raise self._no_model("reading a page back")


LayoutBackend = NoModelBackend  # the name earlier releases used


class DeepseekOCRBackend:
    """A DeepSeek-OCR model (v1 or OCR-2, see `optimem.model`) reading the pages."""

    has_model = True
    template_overhead = DEEPSEEK_TEMPLATE_OVERHEAD

    def __init__(self, model: Any, *, batch_size: int = 16, compile: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.model = model
        self.model_id = model.model_id
        self.ladder = model.ladder
        self.batch_size = batch_size
        self._prompts: PromptBuilder | None = None
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
        From then on every forward carries exactly `batch_size` pages, a short last batch padded with
        copies of its last page whose outputs are dropped: the compiled encoder is specialised per
        input shape, so each tier compiles once instead of once per batch size that comes along."""
        self.model.compile(**kwargs)
        return self

    @property
    def device_lock(self) -> threading.RLock:
        """The model's device lock: its decode engine holds it while generating."""
        return self.model.device_lock

    @property
    def compiled(self) -> bool:
        """The model's encoder is compiled, here or by the caller before wrapping it: pad batches."""
        from optimem.model.speed import is_compiled

        return is_compiled(self.model)

    def placeholder_count(self, tier: str) -> int:
        return self.model.placeholder_count(tier)

    def prompts(self) -> PromptBuilder:
        if self._prompts is None:
            m = self.model
            self._prompts = PromptBuilder(m.tokenizer, SpecialIds(m.bos_token_id, m.eos_token_id, m.image_token_id))
        return self._prompts

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

    def generate(self, prompt: NativePrompt, *, max_new_tokens: int = 256) -> str:
        return self.model.generate_text(prompt.as_inputs(), max_new_tokens=max_new_tokens)

    def stream(self, prompt: NativePrompt, *, max_new_tokens: int = 256) -> Iterator[str]:
        """Text pieces as they are decoded (the whole reply at once where the model cannot stream)."""
        streamer = getattr(self.model, "stream_text", None)
        if streamer is not None:
            yield from streamer(prompt.as_inputs(), max_new_tokens=max_new_tokens)
        else:
            yield self.generate(prompt, max_new_tokens=max_new_tokens)

    def ocr(self, image: Any, tier: str, *, max_new_tokens: int = 2048) -> str:
        return self.model.ocr(image, tier, max_new_tokens=max_new_tokens)


class DeepseekOCR2Backend(DeepseekOCRBackend):
    """DeepSeek-OCR-2 through transformers' native classes (`optimem.model.DeepseekOCR2`)."""

    @classmethod
    def from_pretrained(cls, path: str, *, batch_size: int = 16, **kwargs: Any) -> "DeepseekOCR2Backend":
        from optimem.model.ocr2 import DeepseekOCR2

        return cls(DeepseekOCR2.from_pretrained(path, **kwargs), batch_size=batch_size)
