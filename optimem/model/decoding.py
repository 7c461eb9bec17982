"""The language side both DeepSeek-OCR facades share: splice page embeddings into the prompt's
placeholder rows, greedy decoding with the reference's no-repeat n-gram rule (through the decode
engine, `optimem.model.engine`; the plain transformers loop stays as `generate_eager`), streaming,
and OCR.

A facade mixes in `DecoderMixin` and provides `device`, `image_token_id`, `bos_token_id`,
`eos_token_id`, `_tokenizer` (or None), `encode_pages(images, tier)`, `_embed(ids)` (token
embeddings, [1, n, hidden]) and `_forward(embeds, cache, position_ids)` -> (logits, cache).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from optimem.errors import ModelError


_LOCK_CREATION = threading.Lock()


class DecoderMixin:
    _tokenizer: Any = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from optimem.renderers.tokens import load_tokenizer

            self._tokenizer = load_tokenizer()
        return self._tokenizer

    def build_inputs_embeds(self, input_ids, image_embeds: list[Any]):
        """Token embeddings with every image placeholder row replaced, in order, by `image_embeds`."""
        import torch

        ids = torch.as_tensor(input_ids, device=self.device).reshape(1, -1)
        with torch.inference_mode():
            embeds = self._embed(ids).clone()
            mask = ids[0] == self.image_token_id
            rows = [e.to(self.device, embeds.dtype).reshape(-1, embeds.shape[-1]) for e in image_embeds]
            total = sum(r.shape[0] for r in rows)
            if int(mask.sum()) != total:
                raise ModelError(f"prompt has {int(mask.sum())} image placeholders but the images bring {total} embeddings")
            if rows:
                embeds[0, mask] = torch.cat(rows, 0)
        return embeds

    def logits(self, inputs_embeds):
        import torch

        with torch.inference_mode():
            out, _ = self._forward(inputs_embeds, None, None)
        return out

    # -- decoding ------------------------------------------------------------------------------------
    def _decoder_parts(self):
        """(decoder text model, lm_head) of either facade: v1's `module.language` or OCR-2's
        `hf.model.language_model`; both are transformers' DeepseekOcr2TextModel."""
        module = getattr(self, "module", None)
        if module is not None and hasattr(module, "language"):
            return module.language, module.lm_head
        hf = getattr(self, "hf", None)
        if hf is not None:
            return hf.model.language_model, hf.lm_head
        raise ModelError(f"{type(self).__name__} has no DeepSeek MoE decoder for the decode engine")

    _engine: Any = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A copy of the model without its decode engine: the engine is a cache (KV, graphs, sessions)
        that its copy builds again on first use, and its tensors cannot be deep-copied."""
        import copy

        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, None if key in ("_engine", "_device_lock") else copy.deepcopy(value, memo))
        return new

    _device_lock: Any = None

    @property
    def device_lock(self) -> threading.RLock:
        """Held by whatever runs on this model's device: the decode engine for a whole generation (and
        its CUDA graph captures), a background page encode for one batch, so the two never interleave.
        It lives on the model, not the engine, so taking it never builds an engine."""
        if self._device_lock is None:
            with _LOCK_CREATION:
                if self._device_lock is None:
                    self._device_lock = threading.RLock()
        return self._device_lock

    @property
    def engine(self):
        """The decode engine (`optimem.model.engine.DecodeEngine`), built on first use: static KV cache
        sized to the decoder's window, the step as a CUDA graph on CUDA, sessions with KV reuse."""
        if self._engine is None:
            from optimem.model.engine import DecodeEngine

            language, lm_head = self._decoder_parts()
            self._engine = DecodeEngine(language, lm_head, lock=self.device_lock)
        return self._engine

    def configure_engine(self, **kwargs: Any):
        """Rebuild the engine with other settings (`capacity`, `graphs`, `prefill_chunk`,
        `max_sessions`, `bucketed`, `expert_kernel`, `fused`, `grouped_prefill`, `graph_prefill`); returns it."""
        from optimem.model.engine import DecodeEngine

        language, lm_head = self._decoder_parts()
        self._engine = DecodeEngine(language, lm_head, lock=self.device_lock, **kwargs)
        return self._engine

    @property
    def last_generation(self):
        """`GenerationStats` of the engine's last call (reused/prefilled tokens, prefill and decode time)."""
        return self.engine.stats

    def generate_ids(self, input_ids, image_embeds: list[Any] = (), *, max_new_tokens: int = 256,
                     no_repeat_ngram_size: int = 20, eos_token_id: int | None = None,
                     stop_token_ids: list[int] | None = None, session: Any = "default",
                     image_keys: list[Any] | None = None, reuse: bool = True, ngram_window: int | None = None,
                     ngram_whitelist: list[int] | None = None) -> Iterator[int]:
        """Token ids one at a time, through the decode engine (see `generate` for the arguments)."""
        import torch

        eos = self.eos_token_id if eos_token_id is None else eos_token_id
        stops = list(stop_token_ids) if stop_token_ids is not None else [eos]
        ids = torch.as_tensor(input_ids).reshape(-1).tolist()
        return self.engine.run(ids, list(image_embeds), image_token_id=self.image_token_id,
                               max_new_tokens=max_new_tokens, stop_token_ids=stops,
                               no_repeat_ngram_size=no_repeat_ngram_size, ngram_window=ngram_window,
                               ngram_whitelist=ngram_whitelist, session=session, image_keys=image_keys, reuse=reuse)

    def generate(self, input_ids, image_embeds: list[Any] = (), *, max_new_tokens: int = 256,
                 no_repeat_ngram_size: int = 20, eos_token_id: int | None = None, **kwargs: Any) -> list[int]:
        """Greedy decoding with the reference's no-repeat n-gram rule (a token that would repeat an
        n-gram already in prompt+output is banned), through the decode engine.

        `session` (default "default"): the KV of the leading prompt tokens that match the session's
        last call (ids, and image rows by tensor identity or `image_keys`) is reused, only the rest
        is prefilled; `reuse=False` prefills everything. `stop_token_ids` (default: EOS) end the
        reply and are not returned. `ngram_window` / `ngram_whitelist`: vLLM's windowed variant."""
        return list(self.generate_ids(input_ids, image_embeds, max_new_tokens=max_new_tokens,
                                      no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=eos_token_id, **kwargs))

    def stream(self, input_ids, image_embeds: list[Any] = (), **kwargs: Any) -> Iterator[str]:
        """The reply as text pieces while it is decoded (arguments as `generate`). A piece is held back
        while it ends inside a multi-byte character."""
        tok = self.tokenizer
        out: list[int] = []
        sent = 0
        for t in self.generate_ids(input_ids, image_embeds, **kwargs):
            out.append(t)
            text = tok.decode(out, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
        text = tok.decode(out, skip_special_tokens=True)
        if len(text) > sent:
            yield text[sent:]

    def generate_eager(self, input_ids, image_embeds: list[Any] = (), *, max_new_tokens: int = 256,
                       no_repeat_ngram_size: int = 20, eos_token_id: int | None = None) -> list[int]:
        """The plain transformers loop (DynamicCache, the ban recomputed in Python each step): the
        reference the engine is tested against, and the "before" of the decode benchmark."""
        import torch
        from transformers import DynamicCache

        eos = self.eos_token_id if eos_token_id is None else eos_token_id
        ids = list(torch.as_tensor(input_ids).reshape(-1).tolist())
        embeds = self.build_inputs_embeds(ids, list(image_embeds))
        cache = DynamicCache()
        out: list[int] = []
        with torch.inference_mode():
            logits, cache = self._forward(embeds, cache, None)
            for _ in range(max_new_tokens):
                scores = logits[0, -1].float()
                for banned in _banned_ngrams(ids + out, no_repeat_ngram_size):
                    scores[banned] = -float("inf")
                nxt = int(scores.argmax())
                if nxt == eos:
                    break
                out.append(nxt)
                step = self._embed(torch.tensor([[nxt]], device=self.device))
                pos = torch.tensor([[len(ids) + len(out) - 1]], device=self.device)
                logits, cache = self._forward(step, cache, pos)
        return out

    def generate_text(self, inputs: dict[str, Any], *, max_new_tokens: int = 256, **kwargs: Any) -> str:
        """`inputs`: input_ids, image_embeds, and optionally session and image_keys (see `generate`)."""
        ids = self.generate(inputs["input_ids"], inputs["image_embeds"], max_new_tokens=max_new_tokens,
                            **_engine_inputs(inputs), **kwargs)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def stream_text(self, inputs: dict[str, Any], *, max_new_tokens: int = 256, **kwargs: Any) -> Iterator[str]:
        """`generate_text` as pieces (what `Backend.stream` yields)."""
        return self.stream(inputs["input_ids"], inputs["image_embeds"], max_new_tokens=max_new_tokens,
                           **_engine_inputs(inputs), **kwargs)

    def ocr(self, image: Any, tier: str = "small", *, max_new_tokens: int = 2048) -> str:
        """Read a page back to text with the reference's "Free OCR." prompt (plain format:
        BOS, the image placeholders, then "\\nFree OCR.")."""
        emb = self.encode_pages([image], tier)[0]
        ids = [self.bos_token_id] + [self.image_token_id] * emb.shape[0] + \
            self.tokenizer.encode("\nFree OCR.", add_special_tokens=False).ids
        out = self.generate(ids, [emb], max_new_tokens=max_new_tokens, session=None)
        return self.tokenizer.decode(out, skip_special_tokens=True)


def _engine_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The optional engine arguments a prompt dict may carry: the KV session and per-page keys."""
    return {k: inputs[k] for k in ("session", "image_keys") if inputs.get(k) is not None}


def _banned_ngrams(seq: list[int], n: int) -> list[int]:
    if n <= 0 or len(seq) < n:
        return []
    prefix = tuple(seq[len(seq) - n + 1:])
    banned = []
    for i in range(len(seq) - n + 1):
        if tuple(seq[i : i + n - 1]) == prefix:
            banned.append(seq[i + n - 1])
    return banned
