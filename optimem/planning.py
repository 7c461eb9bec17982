"""The bridge between rendered pages and the policies: turn and page records for planning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies import PageInfo, TurnInfo, detect_exact


def turn_records(
    contents: Sequence[str],
    *,
    pinned: Sequence[bool] | None = None,
    timestamps: Sequence[float | None] | None = None,
    tokens: Sequence[int] | None = None,
) -> list[TurnInfo]:
    """TurnInfo per turn: DeepSeek-OCR token counts, the exact-content detector, pins, times."""
    from renderers.tokens import count_tokens_batch

    counts = list(tokens) if tokens is not None else count_tokens_batch(list(contents))
    out = []
    for i, text in enumerate(contents):
        out.append(
            TurnInfo(
                index=i,
                tokens=counts[i],
                pinned=bool(pinned[i]) if pinned is not None else False,
                exact=bool(detect_exact(text)),
                timestamp=timestamps[i] if timestamps is not None else None,
            )
        )
    return out


def page_records(pages: Sequence[Any], *, text_tokens: Sequence[int] | None = None,
                 floors: Sequence[str | None] | None = None, first_index: int = 0) -> list[PageInfo]:
    """PageInfo per sealed page, from renderer pages or layouts (anything with `.spans` and `.text`)."""
    from renderers.tokens import count_tokens_batch

    counts = list(text_tokens) if text_tokens is not None else count_tokens_batch([p.text for p in pages])
    out = []
    for i, p in enumerate(pages):
        last = p.spans[-1]
        out.append(
            PageInfo(
                index=first_index + i,
                first_turn=p.spans[0].turn,
                last_turn=last.turn,
                text_tokens=counts[i],
                floor=floors[i] if floors is not None else None,
                partial_last=last.continues,
            )
        )
    return out
