"""Text → page images. Pure CPU: numpy, Pillow, freetype-py, uharfbuzz, python-bidi, tokenizers. Never imports torch or the rest of optimem (installed as optimem.renderers; imports inside are relative).

    from optimem.renderers import render_transcript, view
    pages = render_transcript([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}])
    small = view(pages[0].image, 640, "resize")   # 640x640 grey, as DeepSeek-OCR's small mode sees it
    # a model's tier names and sizes are its own table: optimem.ladders.DEEPSEEK_OCR_V1.view(master, "small")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .fonts import FontError, FontFiles
from .inputs import load_input, load_transcript
from .layout import Paginator, build_page, page_spans
from .records import DOCUMENT_ROLE, ROLES, Page, RenderError, RenderSettings, Span, Turn, png_bytes
from .text import normalize_text
from .tiers import PAD_GREY, view

__all__ = [
    "DOCUMENT_ROLE", "FontError", "FontFiles", "PAD_GREY", "Page", "Paginator", "ROLES", "RenderError",
    "RenderSettings", "Span", "Turn", "iter_pages", "load_input",
    "load_transcript", "normalize_text", "PageLayout", "paginate", "png_bytes", "render_document", "render_transcript", "view",
]


def _coerce(turns: Sequence[Turn | Mapping[str, Any]]) -> list[Turn]:
    if isinstance(turns, (str, bytes)):
        raise RenderError("a transcript is a list of turns; use render_document for plain text")
    return [Turn.coerce(t, i) for i, t in enumerate(turns)]


def iter_pages(
    turns: Sequence[Turn | Mapping[str, Any]],
    settings: RenderSettings | None = None,
    *,
    start: tuple[int, int] = (0, 0),
    first_index: int = 0,
) -> Iterator[Page]:
    """Pages one at a time (bounded memory for huge inputs). See `render_transcript`."""
    paginator = Paginator(settings)
    coerced = _coerce(turns)
    for i, (lines, full, contents) in enumerate(paginator.iter_page_lines(coerced, start)):
        yield build_page(paginator, first_index + i, lines, full, contents)


@dataclass(frozen=True)
class PageLayout:
    """A page laid out but not drawn: enough to plan (spans, text, token count) without pixels."""

    index: int
    spans: tuple[Span, ...]
    text: str
    full: bool

    @property
    def chars(self) -> int:
        return sum(s.end - s.start for s in self.spans)


def paginate(
    turns: Sequence[Turn | Mapping[str, Any]], settings: RenderSettings | None = None, *, start: tuple[int, int] = (0, 0)
) -> list[PageLayout]:
    """The pages `render_transcript` would draw, without drawing them (layout only: no pixels)."""
    paginator = Paginator(settings)
    return [
        PageLayout(i, page_spans(lines, contents), "\n".join(line.text for line in lines), full)
        for i, (lines, full, contents) in enumerate(paginator.iter_page_lines(_coerce(turns), start))
    ]


def render_transcript(
    turns: Sequence[Turn | Mapping[str, Any]],
    settings: RenderSettings | None = None,
    *,
    start: tuple[int, int] = (0, 0),
    first_index: int = 0,
) -> list[Page]:
    """Render turns into pages, each with its master image and the spans it holds.

    `start=(turn, char)` paginates from that point of the transcript (the first span of a page
    rendered earlier): the result equals the tail of a full render, which is how the memory
    re-renders only its open page. An empty transcript gives no pages.
    """
    return list(iter_pages(turns, settings, start=start, first_index=first_index))


def render_document(text: str, settings: RenderSettings | None = None) -> list[Page]:
    """Render a plain-text or Markdown document (no role headers). Spans refer to turn 0.

    Lines that look like Markdown (fences, tables, headings, lists) are styled as in turns.
    """
    if not isinstance(text, str):
        raise RenderError(f"a document is a string, not {type(text).__name__}")
    return render_transcript([Turn(DOCUMENT_ROLE, text)], settings)
