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
concatenation of its cells (one numpy call), which is what makes rendering fast; see `render.py`.
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


@dataclass(frozen=True)
class FontFiles:
    """Paths of the faces the renderer uses. Override any of them to use other fonts."""

    sans: str
    bold: str
    mono: str
    cjk: str
    cjk_face: str = "SC"

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

    def check(self) -> None:
        for field in ("sans", "bold", "mono", "cjk"):
            path = getattr(self, field)
            if not os.path.isfile(path):
                raise FontError(f"font file for '{field}' not found: {path}; pass existing files in FontFiles")
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
        bm = g.bitmap
        if bm.rows and bm.width:
            arr = np.array(bm.buffer, dtype=np.uint8).reshape(bm.rows, bm.pitch)[:, : bm.width]
        else:
            arr = np.zeros((0, 0), dtype=np.uint8)
        return arr, g.bitmap_left, g.bitmap_top, (g.advance.x + 32) >> 6


class Style:
    """A face stack at one size: per-glyph fallback, cells of one line height, and advances."""

    def __init__(self, faces: list[Face], px: int, line_height: int, *, mono_cell: int | None = None) -> None:
        self.faces = faces
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
        if ch == " ":
            face = self.faces[0]
            _, _, _, adv = face.raster(" ")
            return Cell(np.zeros((h, self.mono_cell or adv), np.uint8), face.name)
        for face in self.faces:
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
    ~80 glyph arrays, and words repeat. Bounded: cleared when it grows past LIMIT entries."""

    LIMIT = 50_000

    def __init__(self, ink: _InkCache) -> None:
        super().__init__()
        self._ink = ink

    def __missing__(self, word: str) -> np.ndarray:
        arr = np.concatenate(list(map(self._ink.__getitem__, word)), axis=0)
        if len(word) <= 24:
            if len(self) >= self.LIMIT:
                self.clear()
            self[word] = arr
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


@lru_cache(maxsize=32)
def load_styles(files: FontFiles, body_px: int, line_spacing: float) -> dict[str, Style]:
    """The three styles a page uses, sharing one line height so lines stack on a fixed grid."""
    files.check()
    cjk_index = CJK_FACE_INDEX[files.cjk_face]
    line_height = max(int(round(body_px * line_spacing)), body_px + 2)
    cjk = Face(files.cjk, cjk_index, body_px)
    sans = Face(files.sans, 0, body_px)
    bold = Face(files.bold, 0, body_px)
    mono = Face(files.mono, 0, body_px)
    _, _, _, mono_adv = mono.raster("M")
    # DejaVu has no CJK; the CJK face also carries fallbacks for symbols DejaVu lacks.
    return {
        "body": Style([sans, cjk], body_px, line_height),
        "bold": Style([bold, sans, cjk], body_px, line_height),
        "mono": Style([mono, sans, cjk], body_px, line_height, mono_cell=mono_adv),
    }
