"""Fonts and the glyph cache.

Fonts come from Python packages so that a fresh machine renders the same pixels after `pip install`,
with no system fonts: DejaVu Sans / Sans Bold / Sans Mono ship inside matplotlib's `mpl-data`
(located without importing matplotlib), and Noto Sans CJK (a TrueType collection with JP, KR, SC,
TC and HK faces, each covering all of CJK, kana and Hangul with regional glyph forms) ships in the
`noto-cjk-sans-otc` package. A style has a stack of faces; each character takes the first face that
has a glyph for it (per-glyph fallback). A character no face has is drawn as a visible box and
counted, never dropped.

Glyphs are rasterised once with freetype-py into a *cell*: an array of the line's full height and the
glyph's pixel advance, with the glyph placed on the line's baseline. A line is then the horizontal
concatenation of its cells (one numpy call), which is what makes rendering fast; see `layout.py`.

Scripts the CJK and DejaVu faces cannot set come from `manimgx-fonts` (OFL, Noto as published):
Noto Sans Arabic and Noto Sans Hebrew (shaped with harfbuzz, see `shaping.py`), Noto Emoji (the
monochrome outline emoji font, whose ligatures draw ZWJ sequences, flags, keycaps and skin tones
as one glyph) and Noto Sans Symbols. Pages are grey, so a monochrome emoji face loses nothing.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# Noto Sans CJK collection face order (checked against the face names in the file).
CJK_FACE_INDEX = {"JP": 0, "KR": 1, "SC": 2, "TC": 3, "HK": 4}


class FontError(ValueError):
    """A font file that is missing or unreadable."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


_SCRIPT_FILES = {  # FontFiles field -> file inside the manimgx_fonts package
    "arabic": "NotoSansArabic[wght].ttf",
    "hebrew": "NotoSansHebrew[wght].ttf",
    "emoji": "NotoEmoji[wght].ttf",
    "symbols": "NotoSansSymbols[wght].ttf",
}


@dataclass(frozen=True)
class FontFiles:
    """Paths of the faces the renderer uses. Override any of them to use other fonts.

    `arabic`, `hebrew`, `emoji` and `symbols` left as None take the bundled Noto files
    (`manimgx-fonts`); an empty string leaves that face out (its characters then fall back to the
    other faces, or are drawn as boxes and counted).
    """

    sans: str
    bold: str
    mono: str
    cjk: str
    cjk_face: str = "SC"
    arabic: str | None = None
    hebrew: str | None = None
    emoji: str | None = None
    symbols: str | None = None

    @staticmethod
    def default(cjk_face: str = "SC") -> "FontFiles":
        mpl = _package_dir("matplotlib")
        noto = _package_dir("noto_cjk_sans_otc")
        if mpl is None or noto is None:
            raise FontError(
                "bundled fonts not found: install optimem's dependencies "
                "(matplotlib ships DejaVu, noto-cjk-sans-otc ships Noto Sans CJK)"
            )
        ttf = mpl / "mpl-data" / "fonts" / "ttf"
        return FontFiles(
            sans=str(ttf / "DejaVuSans.ttf"),
            bold=str(ttf / "DejaVuSans-Bold.ttf"),
            mono=str(ttf / "DejaVuSansMono.ttf"),
            cjk=str(noto / "NotoSansCJK-Regular.ttc"),
            cjk_face=cjk_face,
        )

    def script_file(self, field: str) -> str | None:
        """The file for an optional script face: the given path, the bundled one, or None."""
        path = getattr(self, field)
        if path is None:
            pkg = _package_dir("manimgx_fonts")
            if pkg is None:
                raise FontError(
                    "bundled Arabic/Hebrew/emoji fonts not found: install optimem's dependencies "
                    "(manimgx-fonts), or pass arabic=/hebrew=/emoji=/symbols= in FontFiles ('' to leave one out)"
                )
            path = str(pkg / _SCRIPT_FILES[field])
        return path or None

    def check(self) -> None:
        for field in ("sans", "bold", "mono", "cjk"):
            path = getattr(self, field)
            if not os.path.isfile(path):
                raise FontError(f"font file for '{field}' not found: {path}; pass existing files in FontFiles")
        for field in _SCRIPT_FILES:
            path = self.script_file(field)
            if path is not None and not os.path.isfile(path):
                raise FontError(f"font file for '{field}' not found: {path}; pass an existing file, or '' to leave it out")
        if self.cjk_face not in CJK_FACE_INDEX:
            raise FontError(f"unknown CJK face '{self.cjk_face}'; valid: {', '.join(CJK_FACE_INDEX)}")


@dataclass(frozen=True)
class Cell:
    """A glyph rendered into the line's full height and its advance width (ink: 0 paper, 255 full)."""

    ink: np.ndarray  # uint8 [line_height, advance]
    font: str  # family name, recorded on the page
    missing: bool = False


class Face:
    """One freetype face at one pixel size, with its metrics and a per-character cell cache."""

    def __init__(self, path: str, index: int, px: int) -> None:
        import freetype

        try:
            self._face = freetype.Face(path, index)
        except Exception as exc:  # freetype raises its own error types
            raise FontError(f"cannot open font {path} (face {index}): {exc}") from exc
        self._face.set_pixel_sizes(0, px)
        self.name = self._face.family_name.decode("ascii", "replace")
        self._ft = freetype
        self.path, self.index, self.px = path, index, px

    def has(self, ch: str) -> bool:
        return self._face.get_char_index(ord(ch)) != 0

    def ascender(self) -> int:
        return self._face.size.ascender >> 6

    def descender(self) -> int:
        return self._face.size.descender >> 6  # negative

    def raster(self, ch: str) -> tuple[np.ndarray, int, int, int]:
        """(bitmap, left bearing, top above baseline, advance) of a character, all in pixels."""
        self._face.load_char(ch, self._ft.FT_LOAD_RENDER | self._ft.FT_LOAD_TARGET_NORMAL)
        g = self._face.glyph
        return _bitmap(g), g.bitmap_left, g.bitmap_top, (g.advance.x + 32) >> 6

    def raster_glyph(self, gid: int) -> tuple[np.ndarray, int, int]:
        """(bitmap, left, top) of a glyph by id, for shaped text. Light hinting only: it keeps the
        horizontal metrics the shaper positioned, so joined Arabic letters meet without gaps."""
        self._face.load_glyph(gid, self._ft.FT_LOAD_RENDER | self._ft.FT_LOAD_TARGET_LIGHT)
        g = self._face.glyph
        return _bitmap(g), g.bitmap_left, g.bitmap_top


class Style:
    """A face stack at one size: per-glyph fallback, cells of one line height, and advances."""

    def __init__(
        self, faces: list[Face], px: int, line_height: int, *, mono_cell: int | None = None,
        shaping: dict[str, tuple[Face, int]] | None = None,
    ) -> None:
        self.faces = faces
        # faces that set whole runs through harfbuzz (see shaping.py): "arabic", "hebrew", "emoji",
        # each with the baseline its glyphs sit on in this line box (`_fit_shaping_face`)
        self.shaping = {k: f for k, (f, _) in (shaping or {}).items()}
        self.shaping_baseline = {k: b for k, (_, b) in (shaping or {}).items()}
        self.shaped: dict = {}  # shaping.py's caches (shaped runs, glyph bitmaps), per style
        self.px = px
        self.line_height = line_height
        primary = faces[0]
        # Baseline so that the primary face's ascender/descender are centred in the line box.
        extra = line_height - (primary.ascender() - primary.descender())
        self.baseline = primary.ascender() + max(extra, 0) // 2
        self.mono_cell = mono_cell
        # char -> Cell and char -> ink array, filled on first use; `ink` is a dict so that a whole
        # line's arrays come from one C-level `map(self.ink.__getitem__, text)`.
        self._cells = _CellCache(self._make_cell)
        self.ink = _InkCache(self._cells)
        self.widths = _WidthCache(self.ink)  # char -> advance in pixels
        self.words = _WordInkCache(self.ink)  # short word (with its trailing spaces) -> ink
        self.missing_chars: set[str] = set()  # characters no face of the stack has

    def cell(self, ch: str) -> Cell:
        return self._cells[ch]

    def _make_cell(self, ch: str) -> Cell:
        h = self.line_height
        if ch in IGNORABLE:  # joiners and selectors: no ink and no advance, never a missing box
            return Cell(np.zeros((h, 0), np.uint8), self.faces[0].name)
        if ch == " ":
            face = self.faces[0]
            _, _, _, adv = face.raster(" ")
            return Cell(np.zeros((h, self.mono_cell or adv), np.uint8), face.name)
        # emoji-block characters take the emoji face first: DejaVu has a few emoticons (U+1F600...)
        # in its own text style, which would mix two designs on one line
        faces = self.faces
        emoji = self.shaping.get("emoji")
        if emoji is not None and ord(ch) >= 0x1F000 and emoji.has(ch):
            faces = [emoji]
        for face in faces:
            if face.has(ch):
                bmp, left, top, adv = face.raster(ch)
                if self.mono_cell and adv <= self.mono_cell:
                    adv = self.mono_cell
                return Cell(_place(bmp, left, self.baseline - top, h, max(adv, 1)), face.name)
        self.missing_chars.add(ch)
        return Cell(_missing_box(h, self.px, self.baseline), "missing", missing=True)


class _CellCache(dict):
    def __init__(self, make) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, ch: str) -> Cell:
        c = self[ch] = self._make(ch)
        return c


class _InkCache(dict):
    def __init__(self, cells: _CellCache) -> None:
        super().__init__()
        self._cells = cells

    def __missing__(self, ch: str) -> np.ndarray:
        # stored transposed ([advance, line_height], C-contiguous): a line is then a
        # concatenation along axis 0, one memcpy per glyph instead of a strided copy
        ink = self[ch] = np.ascontiguousarray(self._cells[ch].ink.T)
        return ink


class _WordInkCache(dict):
    """Whole words are the unit of drawing for spaced scripts: a line is ~15 word arrays instead of
    ~80 glyph arrays, and words repeat. Bounded by the bytes it holds (cleared past LIMIT_BYTES): a
    log of unique words (timestamps, ids) would otherwise keep tens of thousands of arrays per style."""

    LIMIT_BYTES = 8 << 20

    def __init__(self, ink: _InkCache) -> None:
        super().__init__()
        self._ink = ink
        self._bytes = 0

    def __missing__(self, word: str) -> np.ndarray:
        arr = np.concatenate(list(map(self._ink.__getitem__, word)), axis=0)
        if len(word) <= 24:
            if self._bytes + arr.nbytes > self.LIMIT_BYTES:
                self.clear()
                self._bytes = 0
            self[word] = arr
            self._bytes += arr.nbytes
        return arr


class _WidthCache(dict):
    def __init__(self, ink: _InkCache) -> None:
        super().__init__()
        self._ink = ink

    def __missing__(self, ch: str) -> int:
        w = self[ch] = self._ink[ch].shape[0]
        return w


def _place(bmp: np.ndarray, x: int, y: int, h: int, w: int) -> np.ndarray:
    """Put a glyph bitmap at (x, y) in an h x w cell, clipping what falls outside."""
    cell = np.zeros((h, w), np.uint8)
    if bmp.size == 0:
        return cell
    bh, bw = bmp.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + bw, w), min(y + bh, h)
    if x1 > x0 and y1 > y0:
        cell[y0:y1, x0:x1] = bmp[y0 - y : y1 - y, x0 - x : x1 - x]
    return cell


def _missing_box(h: int, px: int, baseline: int) -> np.ndarray:
    """A hollow rectangle the size of a capital letter: visibly 'a glyph was here'."""
    w = max(int(px * 0.6), 4)
    cell = np.zeros((h, w), np.uint8)
    top = max(baseline - int(px * 0.72), 0)
    x0, x1 = 1, w - 2
    cell[top:baseline, x0] = 255
    cell[top:baseline, x1] = 255
    cell[top, x0 : x1 + 1] = 255
    cell[baseline - 1, x0 : x1 + 1] = 255
    return cell


# Default-ignorable characters that may stay in normalised text: ZWNJ/ZWJ (Persian joining control,
# emoji ZWJ sequences), the combining grapheme joiner, the Arabic letter mark, variation selectors
# and tag characters (subdivision flags). The shaper consumes them; a cell draws them as nothing.
IGNORABLE = frozenset(
    ["\u200c", "\u200d", "\u034f", "\u061c", *map(chr, range(0xFE00, 0xFE10)), *map(chr, range(0x180B, 0x1810)),
     *map(chr, range(0xE0000, 0xE0080)), *map(chr, range(0xE0100, 0xE01F0))]
)


@lru_cache(maxsize=32)
def _face(path: str, index: int, px: int) -> Face:
    return Face(path, index, px)


_SAMPLES = {
    "arabic": [*map(chr, range(0x621, 0x64B)), *map(chr, range(0xFE70, 0xFEFD))],
    "hebrew": list(map(chr, range(0x5D0, 0x5EB))),
    "emoji": list("\U0001f35c\U0001f338\U0001f600\U0001f468\U0001f44d\U0001f389\u2764"),
}


@lru_cache(maxsize=64)
def _fit_shaping_face(path: str, px: int, line_height: int, baseline: int, script: str) -> tuple[Face, int]:
    """The face (maybe a pixel or two smaller) and baseline that keep a script's glyphs in the line box.

    Noto Sans Arabic reaches further below the baseline than DejaVu (the dots of a final yeh sit
    ~0.4 em down), so at the shared baseline its lowest dots would be cut off. Its own baseline is
    raised just enough that the 5th-95th percentile of its glyphs' ink fits; if that range is taller
    than the line, the face is drawn smaller until it fits.
    """
    face = Face(path, 0, px)
    for size in range(px, max(px // 2, 4) - 1, -1):
        face = face if size == px else Face(path, 0, size)
        tops, bottoms = [], []
        for ch in _SAMPLES[script]:
            if face.has(ch):
                bmp, _, top, _ = face.raster(ch)
                if bmp.size:
                    tops.append(top)
                    bottoms.append(top - bmp.shape[0])
        if not tops:
            return face, baseline
        tops.sort()
        bottoms.sort()
        hi, lo = tops[(len(tops) * 95) // 100 - 1 if len(tops) > 1 else 0], bottoms[len(bottoms) * 5 // 100]
        if hi - lo <= line_height - 1:
            return face, min(max(baseline, hi), line_height - 1 + lo)
    return face, baseline


@lru_cache(maxsize=64)
def load_styles(files: FontFiles, body_px: int, line_spacing: float, cjk_face: str | None = None) -> dict[str, Style]:
    """The three styles a page uses, sharing one line height so lines stack on a fixed grid.

    `cjk_face` picks the regional Noto CJK face (JP, KR, SC, TC, HK) for these styles; None takes
    `files.cjk_face`. Faces are shared between the regional variants; glyph caches are not.
    """
    files.check()
    region = cjk_face or files.cjk_face
    if region not in CJK_FACE_INDEX:
        raise FontError(f"unknown CJK face '{region}'; valid: {', '.join(CJK_FACE_INDEX)}")
    line_height = max(int(round(body_px * line_spacing)), body_px + 2)
    cjk = _face(files.cjk, CJK_FACE_INDEX[region], body_px)
    sans = _face(files.sans, 0, body_px)
    bold = _face(files.bold, 0, body_px)
    mono = _face(files.mono, 0, body_px)
    _, _, _, mono_adv = mono.raster("M")
    scripts = {k: _face(p, 0, body_px) for k in _SCRIPT_FILES if (p := files.script_file(k)) is not None}
    # DejaVu has no CJK; the CJK face also carries fallbacks for symbols DejaVu lacks. The script
    # faces come last: DejaVu's Arabic and Hebrew cover the letters already (as cells, for widths),
    # the shaper sets runs of those scripts with the Noto faces.
    tail = [cjk, *(scripts[k] for k in ("arabic", "hebrew", "emoji", "symbols") if k in scripts)]
    line_baseline = Style([sans], body_px, line_height).baseline
    shaping = {
        k: _fit_shaping_face(scripts[k].path, body_px, line_height, line_baseline, k)
        for k in ("arabic", "hebrew", "emoji") if k in scripts
    }
    return {
        "body": Style([sans, *tail], body_px, line_height, shaping=shaping),
        "bold": Style([bold, sans, *tail], body_px, line_height, shaping=shaping),
        "mono": Style([mono, sans, *tail], body_px, line_height, mono_cell=mono_adv, shaping=shaping),
    }


def _bitmap(glyph) -> np.ndarray:
    """A rendered freetype glyph's coverage as a [rows, width] uint8 array (empty for a blank glyph)."""
    bm = glyph.bitmap
    if bm.rows and bm.width:
        return np.array(bm.buffer, dtype=np.uint8).reshape(bm.rows, bm.pitch)[:, : bm.width]
    return np.zeros((0, 0), dtype=np.uint8)
