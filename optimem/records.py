"""The bridge from stored or rendered things to the planner's records: one `TurnInfo` per turn
(DeepSeek-OCR token count, exact-content flag, pin, time) and one `PageInfo` per sealed page (first
and last turn, text tokens, floor, whether its last turn continues). Chat memory, document QA, the
CLI and the LangChain compressor all plan through these two functions; `tail_cuts` and `tail_infos`
say where a long turn may be cut (its earlier pages shown, its tail as text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optimem.policies import PageInfo, TailInfo, TurnInfo, detect_exact

TAIL_PAGES = 3  # a long turn may be cut at its last few continuation pages: its tail as text is at most that long


def turn_infos(
    texts: Sequence[str],
    *,
    ids: Sequence[int] | None = None,
    pinned: Sequence[bool] | None = None,
    timestamps: Sequence[float | None] | None = None,
    tokens: Sequence[int] | None = None,
) -> list[TurnInfo]:
    """TurnInfo per text (ids default to positions); token counts are counted here unless given."""
    if tokens is None:
        from optimem.renderers.tokens import count_tokens_batch

        tokens = count_tokens_batch(list(texts))
    return [
        TurnInfo(
            index=ids[i] if ids is not None else i,
            tokens=tokens[i],
            pinned=bool(pinned[i]) if pinned is not None else False,
            exact=bool(detect_exact(text)),
            timestamp=timestamps[i] if timestamps is not None else None,
        )
        for i, text in enumerate(texts)
    ]


def stored_turn_infos(turns: Sequence[Any], known: Sequence[Sequence[Any]] = ()) -> list[TurnInfo]:
    """TurnInfo per stored turn (`StoredTurn`): tokens counted over the content as a text turn sends it
    (a decomposed accent or a CRLF costs more than its normalised, drawn form), the exact-content flag
    over the normalised text. `known[id] = (tokens, exact)` for turns counted before (a turn never
    changes), so only the others go through the tokenizer."""
    from optimem.renderers import normalize_text
    from optimem.renderers.tokens import count_tokens_batch

    fresh = [t for t in turns if t.id >= len(known)]
    texts = [spoken_text(t.content, (t.metadata or {}).get("name")) for t in fresh]
    counted = dict(zip((t.id for t in fresh), count_tokens_batch(texts))) if fresh else {}
    out = []
    for t in turns:
        if t.id in counted:
            tokens, exact = counted[t.id], bool(detect_exact(normalize_text(t.content)))
        else:
            tokens, exact = known[t.id]
        out.append(TurnInfo(t.id, int(tokens), pinned=t.pinned, exact=bool(exact), timestamp=t.created))
    return out


def spoken_text(content: str, name: str | None) -> str:
    """A turn's text as a prompt carries it: prefixed with its speaker's name when it has one."""
    return f"{name}: {content}" if name else content


def _span(s: Any, key: str) -> Any:
    return s[key] if isinstance(s, dict) else getattr(s, key)


def page_infos(pages: Sequence[Any], *, floors: Sequence[str | None] | None = None,
               first_index: int | None = None, turn_offset: int = 0) -> list[PageInfo]:
    """PageInfo per sealed page: stored pages (`StoredPage`, spans as dicts, floors) or rendered pages
    and layouts (spans as `Span`s). Indices are the pages' own unless `first_index` renumbers them."""
    out = []
    for i, p in enumerate(pages):
        first, last = p.spans[0], p.spans[-1]
        index = p.index if first_index is None else first_index + i
        floor = floors[i] if floors is not None else getattr(p, "floor", None)
        text_tokens = getattr(p, "text_tokens", None)
        if text_tokens is None:
            from optimem.renderers.tokens import count_tokens

            text_tokens = count_tokens(p.text)
        out.append(PageInfo(index, turn_offset + _span(first, "turn"), turn_offset + _span(last, "turn"),
                            text_tokens, floor, partial_last=bool(_span(last, "continues"))))
    return out


class TailCuts:
    """Where long turns may be cut, kept as sealed pages arrive in order (stored pages or layouts): per
    turn, the (page, first character of the turn on it) of its last `TAIL_PAGES` continuation pages,
    and (page count, its last character) when the last page's last turn continues past it."""

    def __init__(self) -> None:
        self.cont: dict[int, list[tuple[int, int]]] = {}
        self.open: tuple[int, int, int] | None = None  # (turn, page count, first character not on a page)

    def add(self, pages: Sequence[Any], first_index: int | None = None) -> set[int]:
        """Take the next sealed pages; returns the turns whose cut points changed."""
        touched: set[int] = set()
        for i, p in enumerate(pages):
            s0 = p.spans[0]
            if _span(s0, "continued"):
                turn = _span(s0, "turn")
                lst = self.cont.setdefault(turn, [])
                lst.append((p.index if first_index is None else first_index + i, _span(s0, "start")))
                del lst[:-TAIL_PAGES]
                touched.add(turn)
        if pages:
            if self.open is not None:
                touched.add(self.open[0])
            last = pages[-1].spans[-1]
            n = (pages[-1].index if first_index is None else first_index + len(pages) - 1) + 1
            self.open = (_span(last, "turn"), n, _span(last, "end")) if _span(last, "continues") else None
            if self.open is not None:
                touched.add(self.open[0])
        return touched

    def cuts(self, turn: int) -> list[tuple[int, int]]:
        out = list(self.cont.get(turn, ()))
        if self.open is not None and self.open[0] == turn:
            out.append(self.open[1:])
        return out


def tail_infos(turn: int, text: str, name: str | None, cuts: Sequence[tuple[int, int]]) -> tuple[list[TailInfo], dict[int, int]]:
    """`TailInfo` per cut point (page, first character) of one turn, given its normalised text: the
    tokens of its text from there on as a text turn sends it (with its speaker's name). Also returns
    {page: first character}, for the context to cut the same text."""
    from optimem.renderers.tokens import count_tokens_batch

    counts = count_tokens_batch([spoken_text(text[start:], name) for _, start in cuts])
    return [TailInfo(turn, page, n) for (page, _), n in zip(cuts, counts)], dict(cuts)
