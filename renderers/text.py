"""Text normalisation and the line-break unit pattern.

Every character of a turn's *normalised* content is laid out on some page, and page spans are
character ranges of that normalised text. Normalisation rules (each tested):

- Newlines: `\\r\\n` and `\\r` become `\\n`.
- Unicode NFC, so a base letter and its combining accent are one character and one glyph.
- Tabs expand to spaces up to the next multiple of the tab width (4 by default), per line.
- Unpaired surrogates (possible in Python strings decoded from JSON) become U+FFFD.
- NUL and the other C0/C1 control characters except `\\n` become U+FFFD, drawn visibly.
- Zero-width spaces (U+200B, U+2060, U+FEFF) and bidi controls (U+200E, U+200F, U+202A-U+202E,
  U+2066-U+2069) are removed: they have no visible form and would only leave gaps or boxes. The
  joiners U+200C (ZWNJ) and U+200D (ZWJ) stay: they decide Persian letter joining and emoji ZWJ
  sequences, and are drawn with no width.
- Right-to-left text stays in logical order here (spans count logical characters); `shaping.py`
  draws it in reading order, shaped.

Line breaking is hand-written rather than UAX #14 through `uniseg`: uniseg's pure-Python segmenter
costs more per page than the whole rendering budget (`optimem bench render`, README). The rules: break after a run of
spaces, between CJK characters, and nowhere else inside a word unless the word is longer than a
line (then by character). Kinsoku: a closing punctuation mark never starts a line (it is glued to
the unit before it) and an opening mark never ends one (glued to the unit after it).
"""

from __future__ import annotations

import re
import unicodedata

# zero-width characters and bidi controls: removed (a regex: str.translate is per-character Python)
_REMOVE = re.compile("[\u200b\u200e\u200f\u2060\ufeff\u202a-\u202e\u2066-\u2069]")
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



# --- which regional CJK face draws a paragraph ---------------------------------------------------
# Han characters have different standard shapes in Japan, Korea, mainland China, Taiwan and Hong
# Kong; Noto Sans CJK has one face per region. Kana and Hangul name the language outright; Han-only
# text is told Traditional or Simplified by frequent characters that exist in one form only.
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_SIMPLIFIED = frozenset("这个们来说时会对过还发后开关实现点体与从种应进无问题电话经样让头见书长马门车东气听写认记忆欢爱号压缩图层级语为么里边动华历帮给觉谢请读网页码机钟钱买卖飞鸟鱼龙业产总统区县场报纸节岁归药汉简冲较渲编视标与随时测选据")
_TRADITIONAL = frozenset("這個們來說時會對過還發後開關實現點體與從種應進無問題電話經樣讓頭見書長馬門車東氣聽寫認記憶歡愛號壓縮圖層級語為麼裡邊動華歷幫給覺謝請讀網頁碼機鐘錢買賣飛鳥魚龍業產總統區縣場報紙節歲歸藥漢簡衝較編視標隨測選據")
# the subsets Japanese never writes (shinjitai replaced the traditional forms; the simplified
# ones are Chinese only): enough to call a Han-only paragraph Chinese inside a Japanese turn
_TRADITIONAL_NOT_JA = frozenset("這們說會對發關實點體與從應經樣讓氣聽寫歡號壓圖麼裡邊歷幫覺讀錢賣產總區縣歲歸藥隨據")
_SIMPLIFIED_NOT_JA = _SIMPLIFIED - frozenset("会号写区点体与来")
_TRAD_RE, _SIMP_RE, _TRAD_NOT_JA_RE, _SIMP_NOT_JA_RE = (
    re.compile("[" + "".join(sorted(chars)) + "]") for chars in (_TRADITIONAL, _SIMPLIFIED, _TRADITIONAL_NOT_JA, _SIMPLIFIED_NOT_JA)
)
_LANG_FACE = {"ja": "JP", "jp": "JP", "ko": "KR", "kr": "KR", "zh": "SC", "zh-cn": "SC", "zh-sg": "SC",
              "zh-hans": "SC", "zh-tw": "TC", "zh-hant": "TC", "zh-mo": "TC", "zh-hk": "HK"}


def lang_face(lang: object) -> str | None:
    """The Noto CJK face for a language tag such as "ja", "ko", "zh-TW", "zh-Hant-HK" (None: not CJK)."""
    if not isinstance(lang, str) or not lang.strip():
        return None
    tag = lang.strip().lower().replace("_", "-")
    parts = tag.split("-")
    if parts[0] == "zh" and len(parts) > 1:
        if "hk" in parts:
            return "HK"
        if "hant" in parts or "tw" in parts or "mo" in parts:
            return "TC"
        return "SC"
    return _LANG_FACE.get(tag) or _LANG_FACE.get(parts[0])


def turn_face(content: str, metadata: object = None) -> tuple[str | None, str | None]:
    """A turn's CJK faces: (from its metadata `lang`/`language`, guessed from kana/Hangul in it)."""
    told = None
    if hasattr(metadata, "get"):
        told = lang_face(metadata.get("lang") or metadata.get("language"))  # type: ignore[union-attr]
    guess = "JP" if _KANA.search(content) else "KR" if _HANGUL.search(content) else None
    return told, guess


def paragraph_face(s: str, start: int, stop: int, turn: tuple[str | None, str | None] = (None, None)) -> str | None:
    """The CJK face for paragraph s[start:stop] (None: the settings' default face).

    In order: kana means Japanese and Hangul Korean; then the turn's metadata language; then
    Traditional or Simplified Chinese by whichever form's frequent characters the paragraph has
    more of (in a turn with kana or Hangul elsewhere, only characters Japanese never writes count,
    so a kanji-only line of a Japanese turn stays Japanese); then the turn's own kana or Hangul.
    """
    if CJK_RUN.search(s, start, stop) is None:
        return None
    if _KANA.search(s, start, stop):
        return "JP"
    if _HANGUL.search(s, start, stop):
        return "KR"
    told, guess = turn
    if told:
        return told
    end = min(stop, start + 4000)
    trad_re, simp_re = (_TRAD_NOT_JA_RE, _SIMP_NOT_JA_RE) if guess else (_TRAD_RE, _SIMP_RE)
    trad = len(trad_re.findall(s, start, end))
    simp = len(simp_re.findall(s, start, end))
    if trad != simp:
        return "TC" if trad > simp else "SC"
    return guess
