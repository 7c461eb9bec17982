"""Text normalisation and the line-break unit pattern.

Every character of a turn's *normalised* content is laid out on some page, and page spans are
character ranges of that normalised text. Normalisation rules (each tested):

- Newlines: `\\r\\n` and `\\r` become `\\n`.
- Unicode NFC, so a base letter and its combining accent are one character and one glyph.
- Tabs expand to spaces up to the next multiple of the tab width (4 by default), per line.
- Unpaired surrogates (possible in Python strings decoded from JSON) become U+FFFD.
- NUL and the other C0/C1 control characters except `\\n` become U+FFFD, drawn visibly.
- Zero-width characters (U+200B-U+200D, U+2060, U+FEFF) and bidi controls (U+200E, U+200F,
  U+202A-U+202E, U+2066-U+2069) are removed: they have no visible form and would only leave
  gaps or boxes.
- Right-to-left scripts are laid out in logical order, left to right, without shaping (Arabic is
  drawn with isolated letter forms). Readable for a model trained on logical order; documented
  limitation rather than a crash.

Line breaking is hand-written rather than UAX #14 through `uniseg`: uniseg's pure-Python segmenter
costs more per page than the whole rendering budget (300 pages/s). The rules: break after a run of
spaces, between CJK characters, and nowhere else inside a word unless the word is longer than a
line (then by character). Kinsoku: a closing punctuation mark never starts a line (it is glued to
the unit before it) and an opening mark never ends one (glued to the unit after it).
"""

from __future__ import annotations

import re
import unicodedata

# zero-width characters and bidi controls: removed (a regex: str.translate is per-character Python)
_REMOVE = re.compile("[\u200b-\u200f\u2060\ufeff\u202a-\u202e\u2066-\u2069]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_text(text: str, tab_width: int = 4) -> str:
    """The text exactly as the renderer lays it out (see the module docstring for the rules)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if _REMOVE.search(text):
        text = _REMOVE.sub("", text)
    if _CONTROL.search(text):
        text = _CONTROL.sub("\ufffd", text)
    if "\t" in text:
        text = "\n".join(_expand_tabs(line, tab_width) for line in text.split("\n"))
    return text


def _expand_tabs(line: str, tab_width: int) -> str:
    if "\t" not in line:
        return line
    out: list[str] = []
    col = 0
    for ch in line:
        if ch == "\t":
            n = tab_width - col % tab_width
            out.append(" " * n)
            col += n
        else:
            out.append(ch)
            col += 1
    return "".join(out)


# CJK ideographs, kana, Hangul, CJK punctuation and full-width forms: a line may break between any two.
_CJK = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
)
# Units: a run of spaces, a run of CJK characters (breakable between any two, see layout), or a
# run of anything else that is not a space. Whole CJK runs keep the per-unit overhead per run,
# not per character.
_UNIT = re.compile(f"( +|[{_CJK}]+|[^ {_CJK}]+)")
CJK_RUN = re.compile(f"[{_CJK}]")
CLOSING = set("，。、．：；！？）］｝〕〉》」』】〙〗〟’”｠»‥…ー々ゝゞヽヾぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ.,;:!?)]}%")
OPENING = set("（［｛〔〈《「『【〘〖〝‘“｟«([{")

