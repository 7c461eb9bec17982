"""The language side both DeepSeek-OCR facades share: splice page embeddings into the prompt's
placeholder rows, greedy decoding with the reference's no-repeat n-gram rule, and OCR.

A facade mixes in `DecoderMixin` and provides `device`, `image_token_id`, `bos_token_id`,
`eos_token_id`, `_tokenizer` (or None), `encode_pages(images, tier)`, `_embed(ids)` (token
embeddings, [1, n, hidden]) and `_forward(embeds, cache, position_ids)` -> (logits, cache).
"""

from __future__ import annotations

from typing import Any

from optimem.errors import ModelError


class DecoderMixin:
    _tokenizer: Any = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from renderers.tokens import load_tokenizer

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

    def generate(self, input_ids, image_embeds: list[Any] = (), *, max_new_tokens: int = 256,
                 no_repeat_ngram_size: int = 20, eos_token_id: int | None = None) -> list[int]:
        """Greedy decoding with a KV cache and the reference's no-repeat n-gram rule (a token that would
        repeat an n-gram already in prompt+output is banned)."""
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

    def generate_text(self, inputs: dict[str, Any], *, max_new_tokens: int = 256) -> str:
        ids = self.generate(inputs["input_ids"], inputs["image_embeds"], max_new_tokens=max_new_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def ocr(self, image: Any, tier: str = "small", *, max_new_tokens: int = 2048) -> str:
        """Read a page back to text with the reference's "Free OCR." prompt (plain format:
        BOS, the image placeholders, then "\\nFree OCR.")."""
        emb = self.encode_pages([image], tier)[0]
        ids = [self.bos_token_id] + [self.image_token_id] * emb.shape[0] + \
            self.tokenizer.encode("\nFree OCR.", add_special_tokens=False).ids
        out = self.generate(ids, [emb], max_new_tokens=max_new_tokens)
        return self.tokenizer.decode(out, skip_special_tokens=True)


def _banned_ngrams(seq: list[int], n: int) -> list[int]:
    if n <= 0 or len(seq) < n:
        return []
    prefix = tuple(seq[len(seq) - n + 1:])
    banned = []
    for i in range(len(seq) - n + 1):
        if tuple(seq[i : i + n - 1]) == prefix:
            banned.append(seq[i + n - 1])
    return banned
