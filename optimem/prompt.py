"""Native DeepSeek-OCR prompts as token ids plus the vision-token rows that fill their image
placeholders: one builder for chat (`Context.pieces()`), document QA (pages, then the question) and
OCR (a page, then an instruction). Special token ids come from the backend (its model's config),
never from constants, so a checkpoint with other ids is prompted correctly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from optimem.context import ASSISTANT, USER, Context
from optimem.errors import ModelError


@dataclass(frozen=True)
class SpecialIds:
    bos: int
    eos: int
    image: int


@dataclass
class NativePrompt:
    input_ids: list[int] = field(default_factory=list)
    image_embeds: list[Any] = field(default_factory=list)  # one [placeholders, hidden] per page, in order
    image_keys: list[Any] = field(default_factory=list)  # per page: (content hash, tier), its identity
    session: str | None = None  # whose KV cache the decode engine may reuse

    def as_inputs(self) -> dict[str, Any]:
        """The dict `model.generate_text` / `stream_text` take (session and page identities let the
        decode engine keep one session's KV prefix and match pages without comparing tensors)."""
        inputs: dict[str, Any] = {"input_ids": self.input_ids, "image_embeds": self.image_embeds}
        if self.session is not None:
            inputs["session"] = self.session
        if self.image_keys and len(self.image_keys) == len(self.image_embeds):
            inputs["image_keys"] = list(self.image_keys)
        return inputs

    def __len__(self) -> int:
        return len(self.input_ids)


class PromptBuilder:
    # a chat prompt re-sends the same turns call after call: their token ids are kept (LRU by text)
    # so building a prompt tokenizes only what is new
    TEXT_CACHE = 4096

    def __init__(self, tokenizer: Any, ids: SpecialIds) -> None:
        self.tokenizer = tokenizer
        self.ids = ids
        self._tokens: OrderedDict[str, list[int]] = OrderedDict()
        self._tokens_lock = threading.Lock()

    def _text(self, prompt: NativePrompt, text: str) -> None:
        with self._tokens_lock:
            ids = self._tokens.get(text)
            if ids is not None:
                self._tokens.move_to_end(text)
        if ids is None:
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
            with self._tokens_lock:
                self._tokens[text] = ids
                while len(self._tokens) > self.TEXT_CACHE:
                    self._tokens.popitem(last=False)
        prompt.input_ids.extend(ids)

    def _page(self, prompt: NativePrompt, placeholders: int, embeds: Any, what: str, key: Any = None) -> None:
        if embeds is None:
            raise ModelError(f"{what} has no vision tokens: build the context with a model backend (encode=True)")
        rows = int(embeds.shape[0])
        if rows != placeholders:
            raise ModelError(f"{what} brings {rows} vision tokens for {placeholders} placeholders")
        prompt.input_ids.extend([self.ids.image] * placeholders)
        prompt.image_embeds.append(embeds)
        if key is not None:
            prompt.image_keys.append(key)

    def chat(self, ctx: Context, *, session: str | None = None) -> NativePrompt:
        """The context's pieces (`Context.pieces`), after BOS."""
        prompt = NativePrompt([self.ids.bos], session=session)
        for kind, val in ctx.pieces():
            if kind == "page":
                self._page(prompt, val.tokens, val.embeds, f"page {val.index}", (val.content_hash, val.tier))
            elif kind == "eos":
                prompt.input_ids.append(self.ids.eos)
            else:
                self._text(prompt, val)
        return prompt

    def pages_then_question(self, pages: Iterable[tuple[str, Any]], question: str) -> NativePrompt:
        """BOS, each (label, embeds) page's placeholders + "\\n", then the question as a user turn."""
        prompt = NativePrompt([self.ids.bos])
        for label, embeds in pages:
            self._page(prompt, int(embeds.shape[0]), embeds, label)
            self._text(prompt, "\n")
        self._text(prompt, f"{USER}: {question}\n\n{ASSISTANT}:")
        return prompt
