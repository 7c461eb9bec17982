"""Lines that need more than one glyph per character: right-to-left scripts and emoji sequences.

A line is *complex* (`COMPLEX.search`) when it holds a character of a right-to-left script (Hebrew,
Arabic and their neighbours) or a piece of an emoji sequence (ZWJ, a variation selector, a skin-tone
modifier, a keycap, a regional indicator, a tag). Every other line keeps the cell path of
`layout.py`, so Latin and CJK pages are drawn exactly as fast as before.

How a complex line is drawn, left to right on the page:

1. Bidi levels per character (UAX #9 rules P-W-N-I) from python-bidi's reference implementation
   (`bidi.algorithm`): its fast Rust `get_display` returns only the reordered string, and drawing
   needs the levels to keep shaping runs whole. The paragraph's direction comes from its first
   strong character (`paragraph_is_rtl`), so a wrapped line keeps its paragraph's direction.
2. Level runs are put in visual order (rule L2).
3. Each run is cut into items by face: Arabic and Hebrew letters (with the spaces and punctuation
   between them) go to harfbuzz with Noto Sans Arabic / Hebrew, emoji sequences to harfbuzz with
   Noto Emoji (its ligatures draw ZWJ families, flags, keycaps and skin tones as one glyph), anything
   else to the per-character cells with fallback. A right-to-left run is drawn with its items in
   reverse order; harfbuzz lays out an RTL item in visual order itself (joining forms, mirrored
   brackets), cell items are reversed with their brackets mirrored.

The text stays logical everywhere else: line breaking, spans, the page text and token counts never
see visual order. Shaped words and glyph bitmaps are cached per style (bounded), so a repeated word is
shaped once; whole lines are not kept.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from .fonts import IGNORABLE, Face, Style

_RTL = "\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefe"
COMPLEX = re.compile(
    f"[{_RTL}\u200c\u200d\ufe0e\ufe0f\u20e3\U0001f1e6-\U0001f1ff\U0001f3fb-\U0001f3ff\U000e0000-\U000e007f]"
)
RTL_CHAR = re.compile(f"[{_RTL}]")
_LETTER = re.compile(r"[^\W\d_]")
_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u0870-\u08ff\ufb50-\ufdff\ufe70-\ufefe]")
_HEBREW = re.compile("[\u0590-\u05ff\ufb1d-\ufb4f]")
_RUN_CACHE_LIMIT = 20_000
_RUN_CACHE_BYTES = 8 << 20
_CACHED_LEN = 48  # words and short runs repeat and are kept; whole lines rarely do and are not


def paragraph_is_rtl(s: str, start: int, stop: int) -> bool:
    """Whether s[start:stop] is a right-to-left paragraph: its first strong letter is R or AL (P2-P3)."""
    if RTL_CHAR.search(s, start, stop) is None:
        return False
    pos = start
    while (m := _LETTER.search(s, pos, stop)) is not None:
        kind = unicodedata.bidirectional(m.group())
        if kind == "L":
            return False
        if kind in ("R", "AL"):
            return True
        pos = m.end()
    return False


# Bidi classes that resolve to the paragraph's level in a right-to-left paragraph when no L, EN or
# AN character is on the line (rules W1-W7 leave them neutral or R, N1 makes neutrals R): such a
# line, the common case of Arabic or Hebrew prose, is all level 1 without running the algorithm.
_RTL_ONLY = frozenset(("R", "AL", "WS", "ON", "NSM", "BN", "CS", "ES", "ET", "S"))


def bidi_levels(text: str, rtl: bool) -> list[int]:
    """Resolved embedding level of every character of one line (paragraph level 1 if `rtl`)."""
    if rtl and {unicodedata.bidirectional(c) for c in set(text)} <= _RTL_ONLY:
        return [1] * len(text)
    from bidi import algorithm as uba

    storage = uba.get_empty_storage()
    storage["base_level"] = 1 if rtl else 0
    storage["base_dir"] = "R" if rtl else "L"
    uba.get_embedding_levels(text, storage)
    chars = list(storage["chars"])  # rule X9 drops BN characters (ZWJ...) from storage: keep them here
    uba.explicit_embed_and_overrides(storage)
    uba.resolve_weak_types(storage)
    uba.resolve_neutral_types(storage, False)
    uba.resolve_implicit_levels(storage, False)
    kept = {id(c) for c in storage["chars"]}
    levels: list[int] = []
    prev = storage["base_level"]
    for c in chars:
        prev = c["level"] if id(c) in kept else prev  # a removed joiner takes its neighbour's level
        levels.append(prev)
    return levels


def _visual_runs(levels: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, level) runs of one line in visual order (rule L2)."""
    runs: list[tuple[int, int, int]] = []
    a = 0
    for i in range(1, len(levels) + 1):
        if i == len(levels) or levels[i] != levels[a]:
            runs.append((a, i, levels[a]))
            a = i
    top = max(levels)
    low = min(levels)
    low_odd = low if low % 2 else low + 1
    for lev in range(top, low_odd - 1, -1):
        i = 0
        while i < len(runs):
            if runs[i][2] >= lev:
                j = i
                while j < len(runs) and runs[j][2] >= lev:
                    j += 1
                runs[i:j] = runs[i:j][::-1]
                i = j
            else:
                i += 1
    return runs


def _char_class(style: Style, ch: str) -> tuple[str | None, bool, bool]:
    """(what the character is, whether the Arabic face has it, whether the Hebrew face has it).

    What it is: "join" (a joiner, selector or mark: it belongs to the item before it), "arabic" or
    "hebrew" (a letter the shaping face has), "emoji" (an emoji-block character the emoji face has),
    "emoji?" (a BMP character the emoji face has: emoji only before a selector, keycap or skin tone),
    or None. Cached per style: a line is then one dict lookup per character.
    """
    shaping = style.shaping
    if ch in IGNORABLE or unicodedata.category(ch) == "Mn":
        return ("join", False, False)
    a_has = "arabic" in shaping and shaping["arabic"].has(ch)
    h_has = "hebrew" in shaping and shaping["hebrew"].has(ch)
    if _ARABIC.match(ch):
        return ("arabic" if a_has else None, a_has, h_has)
    if _HEBREW.match(ch):
        return ("hebrew" if h_has else None, a_has, h_has)
    kind = None
    emoji = shaping.get("emoji")
    if emoji is not None and emoji.has(ch):
        kind = "emoji" if ord(ch) >= 0x1F000 or ch == "\u20e3" else "emoji?"
    if ch.isalnum():
        a_has = h_has = False  # only spaces and punctuation ride along in a shaped item
    return (kind, a_has, h_has)


_EMOJI_NEXT = frozenset(["\ufe0f", "\u20e3", *map(chr, range(0x1F3FB, 0x1F400))])


def _items(style: Style, text: str, a: int, b: int) -> list[tuple[str | None, int, int]]:
    classes: dict = style.shaped.setdefault("classes", {})
    items: list[tuple[str | None, int, int]] = []
    cur: str | None = None
    start = a
    for i in range(a, b):
        ch = text[i]
        c = classes.get(ch)
        if c is None:
            c = classes[ch] = _char_class(style, ch)
        base = c[0]
        if base == "join":
            kind = cur
        elif base in ("arabic", "hebrew", "emoji"):
            kind = base
        elif base == "emoji?" and i + 1 < b and text[i + 1] in _EMOJI_NEXT:
            kind = "emoji"
        elif (cur == "arabic" and c[1]) or (cur == "hebrew" and c[2]):
            kind = cur  # spaces and punctuation between letters stay in the shaped item
        else:
            kind = None
        if kind != cur:
            if i > start:
                items.append((cur, start, i))
            cur, start = kind, i
    items.append((cur, start, b))
    return items


def _hb_font(face: Face):
    font = getattr(face, "_hb_font", None)
    if font is None:
        import uharfbuzz as hb

        blob = hb.Blob.from_file_path(face.path)
        font = hb.Font(hb.Face(blob, face.index))
        font.scale = (face.px * 64, face.px * 64)  # positions come back in 1/64 pixel
        face._hb_font = font  # type: ignore[attr-defined]
        face._glyphs = {}  # type: ignore[attr-defined]
    return font


_SPACES = re.compile("( +)")


def _shaped_ink(style: Style, kind: str, text: str, rtl: bool) -> np.ndarray:
    """One item shaped by harfbuzz, as ink [advance, line_height] (the cells' transposed layout).

    Arabic and Hebrew items are shaped word by word (joining never crosses a space) so that
    words, which repeat, are shaped once; the words of an RTL item are laid right to left.
    """
    if kind != "emoji" and " " in text and text.strip(" "):
        parts = [p for p in _SPACES.split(text) if p]
        if rtl:
            parts.reverse()
        return np.concatenate([_shaped_ink(style, kind, p, rtl) for p in parts], axis=0)
    face = style.shaping[kind]
    baseline = style.shaping_baseline[kind]
    key = ("run", kind, text, rtl)
    hit = style.shaped.get(key)
    if hit is not None:
        return hit
    import uharfbuzz as hb

    font = _hb_font(face)
    glyphs: dict = face._glyphs  # type: ignore[attr-defined]
    buf = hb.Buffer()
    buf.add_str(text)
    buf.direction = "rtl" if rtl else "ltr"
    buf.guess_segment_properties()
    hb.shape(font, buf, {})
    infos, positions = buf.glyph_infos, buf.glyph_positions
    width = max((sum(p.x_advance for p in positions) + 32) >> 6, 0)
    h = style.line_height
    canvas = np.zeros((h, width), np.uint8)
    pen = 0
    for info, pos in zip(infos, positions):
        g = glyphs.get(info.codepoint)
        if g is None:
            g = glyphs[info.codepoint] = face.raster_glyph(info.codepoint)
        bmp, left, top = g
        if bmp.size:
            x = ((pen + pos.x_offset + 32) >> 6) + left
            y = baseline - ((pos.y_offset + 32) >> 6) - top
            bh, bw = bmp.shape
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, width), min(y + bh, h)
            if x1 > x0 and y1 > y0:
                region = canvas[y0:y1, x0:x1]
                np.maximum(region, bmp[y0 - y : y1 - y, x0 - x : x1 - x], out=region)  # marks overlap letters
        pen += pos.x_advance
    ink = np.ascontiguousarray(canvas.T)
    if len(text) <= _CACHED_LEN:
        _keep(style, key, ink, ink.nbytes)
    return ink


def _mirror(ch: str) -> str:
    if unicodedata.mirrored(ch):
        from bidi.mirror import MIRRORED

        return MIRRORED.get(ch, ch)
    return ch


def line_ink(style: Style, text: str, rtl: bool) -> tuple[np.ndarray, frozenset[str], int]:
    """A complex line drawn in reading order: (ink [width, line_height], faces used, missing glyphs).

    `rtl` is the paragraph's direction (`paragraph_is_rtl`), which decides where neutral characters
    between runs of both directions go.
    """
    key = ("line", text, rtl)
    hit = style.shaped.get(key)
    if hit is not None:
        return hit
    if rtl or RTL_CHAR.search(text):
        runs = _visual_runs(bidi_levels(text, rtl))
    else:
        runs = [(0, len(text), 0)]
    parts: list[np.ndarray] = []
    fonts: set[str] = set()
    missing = 0
    for a, b, level in runs:
        odd = level % 2 == 1
        items = _items(style, text, a, b)
        for kind, s, e in reversed(items) if odd else items:
            if kind is not None:
                parts.append(_shaped_ink(style, kind, text[s:e], odd))
                fonts.add(style.shaping[kind].name)
                continue
            chars = [_mirror(c) for c in reversed(text[s:e])] if odd else text[s:e]
            for c in chars:
                cell = style.cell(c)
                if cell.missing:
                    missing += 1
                else:
                    fonts.add(cell.font)
                parts.append(style.ink[c])
    ink = np.concatenate(parts, axis=0) if parts else np.zeros((0, style.line_height), np.uint8)
    result = (ink, frozenset(fonts), missing)
    if len(text) <= _CACHED_LEN:
        _keep(style, key, result, ink.nbytes)
    return result


def _keep(style: Style, key: tuple, value: object, nbytes: int) -> None:
    """Cache a shaped run or line, bounded by entries and by the bytes of ink held (a log of unique
    words in Arabic or emoji would otherwise keep tens of megabytes of arrays per style)."""
    shaped = style.shaped
    held = shaped.get("ink bytes", 0) + nbytes
    if len(shaped) > _RUN_CACHE_LIMIT or held > _RUN_CACHE_BYTES:
        shaped.clear()
        held = nbytes
    shaped[key] = value
    shaped["ink bytes"] = held
