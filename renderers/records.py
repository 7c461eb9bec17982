"""The renderer's records: turns in, pages out, and the settings that decide the layout."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from PIL import Image

from .fonts import FontFiles

ROLES = ("system", "user", "assistant", "tool")
DOCUMENT_ROLE = "document"  # a document is one long "turn" drawn without a role header
# Other names for the same four roles: LangChain's message types (human, ai, function), OpenAI's
# "developer", Gemini's "model". The one table every entry point goes through (rendering, planning,
# OpticalMemory.add), so a transcript is accepted or refused the same way everywhere.
ROLE_ALIASES = {"human": "user", "ai": "assistant", "model": "assistant", "developer": "system", "function": "tool"}


class RenderError(ValueError):
    """Input the renderer cannot use; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    name: str | None = None  # who spoke ("Caroline"): drawn in the header instead of the role

    @staticmethod
    def coerce(obj: "Turn | Mapping[str, Any]", index: int = 0) -> "Turn":
        if isinstance(obj, Turn):
            return obj
        if not isinstance(obj, Mapping):
            raise RenderError(f"turn {index}: expected an object with 'role' and 'content', got {type(obj).__name__}")
        role, content = normalize_role(obj.get("role"), index), obj.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RenderError(
                f"turn {index}: 'content' must be a string (got {type(content).__name__}); "
                "flatten multimodal content to text before rendering"
            )
        meta = obj.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise RenderError(f"turn {index}: 'metadata' must be an object")
        return Turn(role, content, MappingProxyType(dict(meta)), normalize_name(obj.get("name"), index))


MAX_NAME_CHARS = 40


def normalize_name(name: Any, index: int = 0) -> str | None:
    """A speaker's name as a header draws it: one line, inner whitespace collapsed, at most
    MAX_NAME_CHARS characters (longer ones end in an ellipsis); None or blank means no name."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise RenderError(f"turn {index}: 'name' must be a string, not {type(name).__name__}")
    name = " ".join(name.split())
    if len(name) > MAX_NAME_CHARS:
        name = name[: MAX_NAME_CHARS - 1].rstrip() + "\u2026"
    return name or None


def normalize_role(role: Any, index: int = 0) -> str:
    """`role` as one of ROLES (or DOCUMENT_ROLE): trimmed, lower-cased, aliases mapped (human -> user,
    ai -> assistant, ...). Anything else is a RenderError naming the turn and the accepted roles."""
    if not isinstance(role, str) or not role.strip():
        raise RenderError(f"turn {index}: 'role' must be a non-empty string")
    name = role.strip().lower()
    name = ROLE_ALIASES.get(name, name)
    if name not in ROLES and name != DOCUMENT_ROLE:
        raise RenderError(f"turn {index}: unknown role {role!r}: use one of {', '.join(ROLES)} "
                          f"(or {', '.join(ROLE_ALIASES)}, which mean the same)")
    return name


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of turn `turn`'s normalised content that lie on a page."""

    turn: int
    start: int
    end: int
    continued: bool  # the turn began on an earlier page
    continues: bool  # the turn goes on to the next page


@dataclass(frozen=True)
class RenderSettings:
    """Layout settings. `font_px` (on the master) is the density knob: smaller = more text per page.

    Default 20 px: the densest page whose English text still reads back at >= 0.97 character accuracy
    at the *tiny* tier in `optimem bench legibility` (about 1,040 DeepSeek-OCR tokens per page: 0.999
    at every tier, ~16x compression at tiny, ~10x at small; benchmarks/results/legibility.json). A page
    is rendered once and decays to tiny, so the coarsest tier sets the density.
    """

    page_px: int = 1280  # the master is rendered once at the largest tier and only downscaled
    font_px: int = 20
    line_spacing: float = 1.25
    margin_px: int = 28
    tab_width: int = 4
    fonts: FontFiles | None = None  # None: the bundled DejaVu + Noto Sans CJK
    cjk_face: str = "SC"  # which regional Noto CJK face draws CJK text: SC, TC, JP, KR, HK
    # a turn that does not fit in the rest of a page starts on the next one when at most a quarter
    # of the page is left (a turn longer than a page then spans pages from a page top): most pages
    # end between turns, so the pages before a turn are final once drawn (the LangChain
    # compressor's pages); with more room left the turn fills it, as pages hold fewer turns otherwise
    turn_breaks: bool = False

    def __post_init__(self) -> None:
        if not 64 <= self.page_px <= 8192:
            raise RenderError(f"page_px must be between 64 and 8192, got {self.page_px}")
        if not 4 <= self.font_px <= self.page_px // 4:
            raise RenderError(f"font_px must be between 4 and page_px/4, got {self.font_px}")
        if not 1.0 <= self.line_spacing <= 3.0:
            raise RenderError(f"line_spacing must be between 1.0 and 3.0, got {self.line_spacing}")
        if not 0 <= self.margin_px < self.page_px // 4:
            raise RenderError(f"margin_px must be between 0 and page_px/4, got {self.margin_px}")
        if not 1 <= self.tab_width <= 16:
            raise RenderError(f"tab_width must be between 1 and 16, got {self.tab_width}")

    def font_files(self) -> FontFiles:
        return self.fonts if self.fonts is not None else FontFiles.default(self.cjk_face)


@dataclass(frozen=True, eq=False)
class Page:
    index: int
    image: Image.Image  # the master (grayscale, page_px square); tiers derive from it
    spans: tuple[Span, ...]
    text: str  # the text exactly as drawn: role headers and content lines, joined by newlines
    chars: int  # content characters on the page (sum of span lengths)
    text_tokens: int  # DeepSeek-OCR tokens of `text`
    missing_glyphs: int  # characters no font had, drawn as boxes
    fonts: tuple[str, ...]
    full: bool  # False only for a last page that still has room

    def png_bytes(self) -> bytes:
        return self._png

    @cached_property
    def _png(self) -> bytes:
        return png_bytes(self.image)

    @cached_property
    def content_hash(self) -> str:
        """The page's identity: a hash of its pixels (size, mode and raw bytes), so knowing which page
        this is never costs a PNG encoding."""
        return pixels_hash(self.image)


def pixels_hash(image: Image.Image) -> str:
    h = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG bytes: no metadata chunks, fixed compression. Level 1: a page is encoded once
    when it is sealed, on the write path of a chat turn, and level 6 costs about four times as long
    for files about a fifth smaller (grey text compresses well either way)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
