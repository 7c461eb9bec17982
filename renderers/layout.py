"""Layout and pagination: turns → lines → pages.

Markdown is drawn as written (every character lands on the page, so spans stay exact) but styled to
stay readable: fenced code blocks and table rows in the monospace face with whitespace kept (table
columns stay aligned), `#` headings in bold, list items and indented lines with a hanging indent.
Right-to-left paragraphs (first strong letter Hebrew or Arabic) are right-aligned, and any line with
right-to-left text or an emoji sequence is drawn through `shaping.py` (bidi order, harfbuzz); line
breaking and spans stay on the logical text. Han characters take the regional CJK face of their
paragraph (kana: Japanese, Hangul: Korean, else the turn's `lang` metadata or Traditional/Simplified
by its characters; `text.paragraph_face`).

Each turn starts with a bold header, its speaker's name (`Caroline:`) or else its role (`User:`,
`Assistant:`, ...), under a rule; a turn that runs past the end of a page continues on the next under
`User (continued):`.

Pagination is greedy and restartable: rendering from a page's first (turn, offset) gives exactly the
pages that rendering everything gives from there on, which is what lets the memory re-render only its
open page as turns arrive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .fonts import Style, load_styles
from .records import DOCUMENT_ROLE, Page, RenderError, RenderSettings, Span, Turn, normalize_name
from .shaping import COMPLEX, line_ink, paragraph_is_rtl
from .text import _UNIT, CJK_RUN, CLOSING, OPENING, normalize_text, paragraph_face, turn_face

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6} ")
_LIST = re.compile(r"^(\s*)([-*+•]|\d{1,3}[.)])\s+")
_INDENT = re.compile(r"^ +")
_LABEL = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
_WIDTH_CACHE_LIMIT = 200_000
# turn_breaks: a turn moves to the next page only when at most this share of the page is left, so
# the space left empty stays small and most pages still end between turns
_TURN_BREAK_ROOM = 4  # (1 / this) of the page
_WORDS = re.compile(r"[^ ]+ *| +")  # words with their trailing spaces: concatenated, they give the line back


@dataclass(frozen=True)
class Line:
    style: str  # body | bold | mono | header
    text: str  # what is drawn
    indent: int  # pixels from the left margin
    turn: int
    start: int  # content range this line consumes (header lines consume nothing)
    end: int
    rtl: bool = False  # its paragraph reads right to left: drawn right-aligned, in bidi order
    cjk: str | None = None  # regional CJK face for its paragraph (None: the settings' face)


class _Measure:
    """Unit widths, cached: a line is measured as a sum of word widths, not of glyphs."""

    def __init__(self, style: Style) -> None:
        self.style = style
        self.cache: dict[str, int] = {}

    def width(self, s: str) -> int:
        w = self.cache.get(s)
        if w is None:
            if COMPLEX.search(s):  # shaped: Arabic joins, emoji sequences ligate
                w = line_ink(self.style, s, False)[0].shape[0]
            else:
                w = sum(map(self.style.widths.__getitem__, s))
            if len(s) > 48:
                return w  # long runs (CJK paragraphs, URLs) rarely repeat: don't keep them
            if len(self.cache) > _WIDTH_CACHE_LIMIT:
                self.cache.clear()
            self.cache[s] = w
        return w


def _iter_units(s: str, pos: int, end: int) -> Iterator[tuple[int, int]]:
    """Break units of s[pos:end] as (start, stop) offsets, lazily, with kinsoku glued in."""
    prev: tuple[int, int] | None = None
    opening: int | None = None  # start of opening punctuation waiting for the unit it belongs to
    for m in _UNIT.finditer(s, pos, end):
        a, b = m.span()
        ch = s[a]
        if opening is None and prev is not None and ch in CLOSING and s[prev[1] - 1] != " ":
            prev = (prev[0], b)
            continue
        if b - a == 1 and ch in OPENING:
            if opening is None:
                opening = a
            continue
        if opening is not None:
            a, opening = opening, None
        if prev is not None:
            yield prev
        prev = (a, b)
    if opening is not None:
        if prev is not None:
            yield prev
        prev = (opening, end)
    if prev is not None:
        yield prev


def _fit(s: str, pos: int, stop: int, room: int, adv, at_line_start: bool, cjk: bool) -> int:
    """How far s[pos:stop] fills `room` pixels: the end offset q (at least pos+1 at a line start).

    Inside a CJK run a line may end between any two characters, except that a closing mark is
    pulled onto the line it closes (hanging past the edge by one glyph) and an opening mark is
    pushed to the next line.
    """
    q = pos
    acc = 0
    while q < stop:
        a = adv(s[q])
        if acc + a > room:
            break
        acc += a
        q += 1
    if q == pos and at_line_start:
        q = pos + 1  # a glyph wider than the line: it still has to go somewhere
    if cjk and q < stop:
        while q < stop and s[q] in CLOSING:
            q += 1
        while q - 1 > pos and s[q - 1] in OPENING:
            q -= 1
    return q


def _wrap(
    s: str, a: int, b: int, measure: _Measure, width: int, indent: int, hang: int
) -> Iterator[tuple[int, int, int]]:
    """Greedy wrap of s[a:b] (one source line) into (start, stop, indent) pieces that fit `width`."""
    line_start = a
    x = indent
    cur_indent = indent
    empty = True
    adv = measure.style.widths.__getitem__
    for ua, ub in _iter_units(s, a, b):
        if ub - ua > width:  # certainly wider than the line (every glyph is >= 1 px): skip measuring
            w = width + 1
        else:
            w = measure.width(s[ua:ub])
        if s[ua] == " ":
            # spaces never start a wrapped line and may hang past the edge at a break
            if x + w <= width or empty:
                x += w
                empty = False
                continue
            yield line_start, ub, cur_indent
            line_start, x, cur_indent, empty = ub, hang, hang, True
            continue
        if x + w <= width:
            x += w
            empty = False
            continue
        cjk = CJK_RUN.match(s, ua) is not None
        if not empty and not cjk:
            yield line_start, ua, cur_indent
            line_start, x, cur_indent, empty = ua, hang, hang, True
            if x + w <= width:
                x += w
                empty = False
                continue
        # a CJK run breaks between characters; anything else longer than a line (URL, hash,
        # long word) breaks by character
        pos = ua
        while pos < ub:
            q = _fit(s, pos, ub, width - x, adv, empty, cjk)
            if q == ub:
                x += measure.width(s[pos:ub])
                empty = False
                break
            if q == pos:  # nothing fits on this (non-empty) line
                yield line_start, pos, cur_indent
            else:
                yield line_start, q, cur_indent
            line_start, x, cur_indent, empty = q, hang, hang, True
            pos = q
    yield line_start, b, cur_indent


def _fence_open_before(content: str, begin: int) -> bool:
    """Whether offset `begin` lies inside a fenced code block (fences before it are unbalanced)."""
    if begin == 0:
        return False
    count = 0
    for line in content[:begin].split("\n"):
        if _FENCE.match(line):
            count += 1
    return count % 2 == 1


def _content_lines(
    turn_index: int, content: str, begin: int, measures, width: int,
    turn_cjk: tuple[str | None, str | None] = (None, None),
) -> Iterator[Line]:
    """Lines of one turn from offset `begin`; `measures(style, cjk)` gives the measure to wrap with."""
    in_code = _fence_open_before(content, begin)
    pos = begin
    n = len(content)
    while pos < n:
        nl = content.find("\n", pos)
        stop = n if nl < 0 else nl
        after = stop if nl < 0 else nl + 1
        # the whole source line (from its real start) decides its style
        line_start = content.rfind("\n", 0, pos) + 1
        src_head = content[line_start : min(stop, line_start + 64)]
        fence = bool(_FENCE.match(src_head))
        if fence or in_code or src_head.lstrip().startswith("|"):
            style = "mono"
        elif _HEADING.match(src_head):
            style = "bold"
        else:
            style = "body"
        if fence and line_start == pos:
            in_code = not in_code
        if stop == pos:  # an empty source line
            yield Line(style, "", 0, turn_index, pos, after)
            pos = after
            continue
        # direction and CJK face belong to the whole paragraph, so a restart mid-paragraph agrees
        rtl = paragraph_is_rtl(content, line_start, stop)
        cjk = paragraph_face(content, line_start, stop, turn_cjk)
        measure = measures(style, cjk)
        hang = 0
        if style != "mono":
            m = _LIST.match(src_head) or _INDENT.match(src_head)
            if m:
                hang = min(measure.width(m.group(0)), width // 2)
        indent0 = 0 if pos == line_start else hang
        prev: tuple[int, int, int] | None = None
        for piece in _wrap_limited(content, pos, stop, measure, width, indent0, hang):
            if prev is not None:
                yield Line(style, content[prev[0] : prev[1]].rstrip(" "), prev[2], turn_index, prev[0], prev[1], rtl, cjk)
            prev = piece
        assert prev is not None and prev[1] == stop
        # the last piece of a source line also consumes its newline
        yield Line(style, content[prev[0] : prev[1]].rstrip(" "), prev[2], turn_index, prev[0], after, rtl, cjk)
        pos = after


def _wrap_limited(s: str, a: int, b: int, measure: _Measure, width: int, indent: int, hang: int):
    """`_wrap`, but over very long source lines (megabytes without a newline) in bounded windows."""
    window = 65536
    while b - a > window:
        cut = s.rfind(" ", a, a + window)
        cut = a + window if cut <= a else cut + 1
        pieces = list(_wrap(s, a, cut, measure, width, indent, hang))
        # keep all but the last (possibly partial) piece; re-wrap from its start with the rest
        for piece in pieces[:-1]:
            yield piece
        a, indent = pieces[-1][0], pieces[-1][2]
    yield from _wrap(s, a, b, measure, width, indent, hang)


class Paginator:
    """Lays out turns into pages. One paginator per settings; cheap to keep around."""

    def __init__(self, settings: RenderSettings | None = None) -> None:
        self.settings = settings or RenderSettings()
        s = self.settings
        self._files = s.font_files()
        self.styles = load_styles(self._files, s.font_px, s.line_spacing)
        self.measures = {k: _Measure(v) for k, v in self.styles.items()}
        self._regional: dict[tuple[str, str | None], tuple[Style, _Measure]] = {}
        self.line_height = self.styles["body"].line_height
        self.width = s.page_px - 2 * s.margin_px
        self.lines_per_page = (s.page_px - 2 * s.margin_px) // self.line_height
        if self.lines_per_page < 3:
            raise RenderError("page too small for its font size: fewer than 3 lines fit")

    def style(self, name: str, cjk: str | None = None) -> Style:
        """The style `name` (body, bold, mono) with CJK face `cjk` (None: the settings' face)."""
        return self._regional_pair(name, cjk)[0]

    def measure(self, name: str, cjk: str | None = None) -> _Measure:
        return self._regional_pair(name, cjk)[1]

    def _regional_pair(self, name: str, cjk: str | None) -> tuple[Style, _Measure]:
        pair = self._regional.get((name, cjk))
        if pair is None:
            if cjk is None or cjk == self._files.cjk_face:
                pair = (self.styles[name], self.measures[name])
            else:
                style = load_styles(self._files, self.settings.font_px, self.settings.line_spacing, cjk)[name]
                pair = (style, _Measure(style))
            self._regional[(name, cjk)] = pair
        return pair

    # -- layout ---------------------------------------------------------------------------------
    def _header(self, turn_index: int, role: str, continued: bool, at: int, name: str | None = None) -> Line:
        # a speaker's name says more than the role in a conversation between people ("Caroline:")
        label = normalize_name(name) or _LABEL.get(role, role[:1].upper() + role[1:])
        return Line("header", f"{label} (continued):" if continued else f"{label}:", 0, turn_index, at, at)

    def iter_page_lines(
        self, turns: Sequence[Turn], start: tuple[int, int] = (0, 0)
    ) -> Iterator[tuple[list[Line], bool, list[str]]]:
        """Yields (lines, full, contents) per page; `contents` are the normalised turn contents."""
        t0, c0 = start
        if t0 < 0 or c0 < 0 or (t0 > len(turns)):
            raise RenderError(f"start {start} is outside the transcript of {len(turns)} turns")
        page: list[Line] = []
        cap = self.lines_per_page
        contents: dict[int, str] = {}
        for ti in range(t0, len(turns)):
            turn = turns[ti]
            content = normalize_text(turn.content, self.settings.tab_width)
            contents[ti] = content
            begin = c0 if ti == t0 else 0
            if begin > len(content):
                raise RenderError(f"start offset {begin} is past the end of turn {ti} ({len(content)} chars)")
            has_header = turn.role != DOCUMENT_ROLE
            if has_header and len(page) + 2 > cap and page:
                yield page, True, contents
                page, contents = [], {ti: content}
            if has_header:
                page.append(self._header(ti, turn.role, begin > 0, begin, turn.name))
            elif not content:
                page.append(Line("body", "", 0, ti, 0, 0))  # an empty document still gets a page
            turn_cjk = turn_face(content, turn.metadata) if CJK_RUN.search(content) else (None, None)
            body: Iterable[Line] = _content_lines(ti, content, begin, self.measure, self.width, turn_cjk)
            if self.settings.turn_breaks and len(page) > int(has_header):
                # the turn starts on the next page unless it fits in the rest of this one (or more
                # than a quarter of the page is left: it is filled, as without turn_breaks)
                body = list(body)
                if len(page) + len(body) > cap and cap - len(page) <= cap // _TURN_BREAK_ROOM:
                    yield page[:-1] if has_header else page, True, contents
                    page, contents = page[-1:] if has_header else [], {ti: content}
            for line in body:
                if len(page) >= cap:
                    yield page, True, contents
                    page, contents = [], {ti: content}
                    if has_header:
                        page.append(self._header(ti, turn.role, True, line.start, turn.name))
                page.append(line)
        if page:
            yield page, False, contents

    # -- drawing --------------------------------------------------------------------------------
    def draw(self, lines: Sequence[Line]) -> tuple[Image.Image, int, tuple[str, ...]]:
        s = self.settings
        ink = np.zeros((s.page_px, s.page_px), np.uint8)
        lh = self.line_height
        missing = 0
        fonts: set[str] = set()
        seen_by_style: dict[Style, set[str]] = {}
        y = s.margin_px
        for line in lines:
            style = self.style("bold" if line.style == "header" else line.style, line.cjk)
            if line.text and (line.rtl or COMPLEX.search(line.text)):
                rows, used, lost = line_ink(style, line.text, line.rtl)
                fonts |= used
                missing += lost
                if line.rtl:  # right-aligned; a line too wide keeps its (right) reading start
                    right = s.page_px - s.margin_px - line.indent
                    w = min(rows.shape[0], right)
                    if w > 0:
                        ink[y : y + lh, right - w : right] = rows[rows.shape[0] - w :].T
                else:
                    x = s.margin_px + line.indent
                    w = min(rows.shape[0], s.page_px - x)
                    if w > 0:
                        ink[y : y + lh, x : x + w] = rows[:w].T
            elif line.text:
                if " " in line.text:
                    rows = np.concatenate(list(map(style.words.__getitem__, _WORDS.findall(line.text))), axis=0)
                else:  # unspaced text (CJK): glyph by glyph
                    rows = np.concatenate(list(map(style.ink.__getitem__, line.text)), axis=0)
                chars = set(line.text)
                seen = seen_by_style.setdefault(style, set())
                new = chars - seen
                if new:
                    seen |= new
                    fonts.update(style.cell(ch).font for ch in new)
                if style.missing_chars and not chars.isdisjoint(style.missing_chars):
                    missing += sum(line.text.count(ch) for ch in chars & style.missing_chars)
                x = s.margin_px + line.indent
                w = min(rows.shape[0], s.page_px - x)  # clip at the canvas edge, never drop
                if w > 0:
                    ink[y : y + lh, x : x + w] = rows[:w].T
                if line.style == "header":
                    # a rule after the role label marks where a turn begins, for eyes and OCR alike
                    x_rule = x + w + lh // 2
                    mid = y + style.baseline - style.px // 3
                    ink[mid : mid + 2, x_rule : s.page_px - s.margin_px] = 110
            y += lh
        fonts.discard("missing")
        image = Image.fromarray(np.subtract(255, ink, dtype=np.uint8), "L")
        return image, missing, tuple(sorted(fonts))


def page_spans(lines: Sequence[Line], contents: dict[int, str]) -> tuple[Span, ...]:
    out: list[Span] = []
    by_turn: dict[int, list[int]] = {}
    order: list[int] = []
    for line in lines:
        rng = by_turn.get(line.turn)
        if rng is None:
            by_turn[line.turn] = [line.start, line.end]
            order.append(line.turn)
        else:
            rng[0] = min(rng[0], line.start)
            rng[1] = max(rng[1], line.end)
    for t in order:
        a, b = by_turn[t]
        out.append(Span(t, a, b, continued=a > 0, continues=b < len(contents[t])))
    return tuple(out)


def build_page(paginator: Paginator, index: int, lines: list[Line], full: bool, contents: dict[int, str], tokens: int | None = None) -> Page:
    from .tokens import count_tokens

    image, missing, fonts = paginator.draw(lines)
    spans = page_spans(lines, contents)
    text = "\n".join(line.text for line in lines)
    return Page(
        index=index,
        image=image,
        spans=spans,
        text=text,
        chars=sum(sp.end - sp.start for sp in spans),
        text_tokens=count_tokens(text) if tokens is None else tokens,
        missing_glyphs=missing,
        fonts=fonts,
        full=full,
    )
