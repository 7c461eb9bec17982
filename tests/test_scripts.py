"""Every script on the page: emoji, right-to-left (bidi + shaping), regional CJK faces.

The multilingual transcript (tests/data/multilingual.jsonl) holds English, Simplified and
Traditional Chinese, Japanese, Korean, Arabic, Hebrew, emoji sequences and mixed-direction lines;
tesseract's reading of those scripts is in test_legibility.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optimem.renderers import Paginator, RenderSettings, Turn, load_transcript, normalize_text, render_transcript
from optimem.renderers.shaping import _visual_runs, bidi_levels, line_ink, paragraph_is_rtl
from optimem.renderers.text import lang_face, paragraph_face, turn_face

DATA = Path(__file__).parent / "data" / "multilingual.jsonl"
SMALL = RenderSettings(page_px=320, font_px=14, margin_px=8)


def _style(settings: RenderSettings | None = None):
    return Paginator(settings).style("body")


def _spans_cover(turns, pages, settings):
    contents = [normalize_text(t.content, settings.tab_width) for t in turns]
    pos = {i: 0 for i in range(len(turns))}
    for page in pages:
        for sp in page.spans:
            assert sp.start == pos[sp.turn], f"gap or overlap in turn {sp.turn} on page {page.index}"
            pos[sp.turn] = sp.end
    assert [pos[i] for i in range(len(turns))] == [len(c) for c in contents]


def test_multilingual_transcript_renders_every_glyph_with_the_right_faces():
    turns = load_transcript(DATA)
    pages = render_transcript(turns)
    assert sum(p.missing_glyphs for p in pages) == 0
    fonts = set().union(*(p.fonts for p in pages))
    assert {"Noto Emoji", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans CJK JP", "Noto Sans CJK KR",
            "Noto Sans CJK SC", "Noto Sans CJK TC", "DejaVu Sans"} <= fonts
    _spans_cover(turns, pages, RenderSettings())
    # the page text stays in logical order: what the tokenizer counts is what the user wrote
    assert "مرحبا! أريد حجز طاولة" in pages[0].text and "שלום! האם המסעדה" in pages[0].text


def test_multilingual_pages_break_restart_and_stay_exact_on_small_pages():
    turns = load_transcript(DATA)
    pages = render_transcript(turns, SMALL)
    assert len(pages) >= 4 and sum(p.missing_glyphs for p in pages) == 0
    _spans_cover(turns, pages, SMALL)
    for k in (1, len(pages) // 2, len(pages) - 1):
        first = pages[k].spans[0]
        tail = render_transcript(turns, SMALL, start=(first.turn, first.start), first_index=k)
        assert [p.content_hash for p in tail] == [p.content_hash for p in pages[k:]]


def test_multilingual_pages_are_byte_identical_across_processes():
    turns = load_transcript(DATA)
    (page,) = render_transcript(turns)
    code = (
        "import sys; from optimem.renderers import load_transcript, render_transcript;"
        f"sys.stdout.write(render_transcript(load_transcript({str(DATA)!r}))[0].content_hash)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == page.content_hash


@pytest.mark.parametrize("emoji", ["🍜", "🌸", "😀", "👍", "🎉", "❤️", "✅", "🙏", "🔥", "🚀", "☀️", "🇯🇵", "🇫🇷",
                                   "👨‍👩‍👧", "👩🏽‍💻", "👍🏽", "1️⃣", "#️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🏳️‍🌈"])
def test_common_emoji_and_sequences_have_glyphs(emoji):
    (page,) = render_transcript([{"role": "user", "content": f"ok {emoji} ok"}])
    (blank,) = render_transcript([{"role": "user", "content": "ok  ok"}])
    assert page.missing_glyphs == 0 and "Noto Emoji" in page.fonts
    assert page.content_hash != blank.content_hash


def test_emoji_sequences_draw_as_one_glyph():
    style = _style()
    one = line_ink(style, "👨", False)[0].shape[0]
    family = line_ink(style, "👨\u200d👩\u200d👧", False)[0].shape[0]
    flag = line_ink(style, "🇯🇵", False)[0].shape[0]
    assert family <= one * 1.5  # a ligature, not three people side by side
    assert flag <= one * 1.5  # a flag, not two letters


def test_joiners_survive_normalisation_and_zero_width_spaces_do_not():
    assert normalize_text("a\u200db\u200cc\u200bd") == "a\u200db\u200ccd"


def test_hebrew_reads_right_to_left():
    style = _style()
    alef, bet = (line_ink(style, c, True)[0] for c in "אב")
    pair = line_ink(style, "אב", True)[0]
    # logical alef-bet: bet is drawn first from the left, alef at the right end
    assert pair.shape[0] == alef.shape[0] + bet.shape[0]
    assert np.array_equal(pair[: bet.shape[0]], bet) and np.array_equal(pair[bet.shape[0] :], alef)


def test_arabic_letters_join():
    style = _style()
    word = "بيت"
    isolated = [line_ink(style, c, True)[0] for c in word]
    joined = line_ink(style, word, True)[0]
    # joining forms: not the isolated letters reversed side by side
    stacked = np.concatenate(isolated[::-1], axis=0)
    assert joined.shape != stacked.shape or not np.array_equal(joined, stacked)


def test_mixed_direction_runs_come_out_in_reader_order():
    text = "قال: I love Tokyo 2024"
    levels = bidi_levels(text, True)
    runs = _visual_runs(levels)
    ltr = text.index("I")
    # the English words (with the number) form one left-to-right run, placed left of the Arabic
    (a, b, lev), *_ = runs
    assert lev == 2 and a == ltr and text[a:b].rstrip() == "I love Tokyo 2024"
    assert runs[-1][0] == 0 and runs[-1][2] == 1  # the Arabic start of the line is at the right end
    assert bidi_levels("abc \u05d0\u05d1 def", False) == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]


def test_brackets_mirror_in_right_to_left_text():
    style = _style()
    a = line_ink(style, "(א)", True)[0]
    b = line_ink(style, ")א(", True)[0]
    assert not np.array_equal(a, b)
    # "(א)" in an RTL line looks like "(א)" in print: its leftmost glyph is an opening parenthesis
    paren = line_ink(style, "(", False)[0]
    assert np.array_equal(a[: paren.shape[0]], paren)


def test_rtl_paragraphs_are_right_aligned_and_ltr_ones_left_aligned():
    for content, rtl in (("שלום עולם", True), ("hello שלום", False), ("123 مرحبا", True)):
        assert paragraph_is_rtl(content, 0, len(content)) is rtl
        (page,) = render_transcript([{"role": "user", "content": content}])
        ink = 255 - np.asarray(page.image)
        row = ink[60:90]  # the content line under the header
        cols = np.nonzero(row.sum(axis=0))[0]
        s = RenderSettings()
        if rtl:
            assert cols.max() >= s.page_px - s.margin_px - 4 and cols.min() > s.page_px // 2
        else:
            assert cols.min() <= s.margin_px + 4 and cols.max() < s.page_px // 2


def test_long_rtl_paragraph_wraps_without_losing_characters():
    content = "هذا نص عربي طويل جدا يلتف على عدة أسطر في الصفحة الصغيرة. " * 30
    turns = [Turn("user", content)]
    pg = Paginator(SMALL)
    pages = render_transcript(turns, SMALL)
    _spans_cover(turns, pages, SMALL)
    for lines, _, _ in pg.iter_page_lines(turns):
        for line in lines[1:]:
            assert line.rtl
            assert line_ink(pg.style("body"), line.text, True)[0].shape[0] <= pg.width


def test_cjk_face_per_language():
    assert lang_face("ja") == "JP" and lang_face("ko-KR") == "KR" and lang_face("zh-TW") == "TC"
    assert lang_face("zh-Hant-HK") == "HK" and lang_face("zh-CN") == "SC" and lang_face("en") is None
    assert lang_face(None) is None and lang_face(5) is None
    s = "日本語のテキスト"
    assert paragraph_face(s, 0, len(s)) == "JP"
    s = "한국어 텍스트"
    assert paragraph_face(s, 0, len(s)) == "KR"
    s = "這個頁面的記憶"
    assert paragraph_face(s, 0, len(s)) == "TC"
    s = "这个页面的记忆"
    assert paragraph_face(s, 0, len(s)) == "SC"
    s = "東京"  # Han only: the turn decides
    assert paragraph_face(s, 0, len(s), turn_face("東京\nひらがな")) == "JP"
    assert paragraph_face(s, 0, len(s), turn_face(s, {"lang": "ko"})) == "KR"
    assert paragraph_face("plain", 0, 5, ("JP", None)) is None


def test_cjk_face_from_turn_metadata_changes_the_glyphs():
    han = "化次述誤"  # characters whose four regional forms all differ
    pages = {lang: render_transcript([{"role": "user", "content": han, "metadata": {"lang": lang}}])[0]
             for lang in ("ja", "ko", "zh-CN", "zh-TW")}
    assert pages["ja"].fonts == ("DejaVu Sans", "Noto Sans CJK JP")
    assert pages["zh-TW"].fonts == ("DejaVu Sans", "Noto Sans CJK TC")
    assert len({p.content_hash for p in pages.values()}) == 4


def test_latin_and_cjk_lines_never_take_the_shaping_path(monkeypatch):
    from optimem.renderers import layout

    def refuse(*args):
        raise AssertionError(f"shaped: {args[1:]}")

    monkeypatch.setattr(layout, "line_ink", refuse)
    (page,) = render_transcript([{"role": "user", "content": "plain English text 🍜, no scripts.\n光学记忆。ひらがな"}])
    assert page.missing_glyphs == 0


def test_script_fonts_can_be_left_out():
    from optimem.renderers import FontFiles

    bare = FontFiles.default()
    bare = FontFiles(bare.sans, bare.bold, bare.mono, bare.cjk, arabic="", hebrew="", emoji="", symbols="")
    (page,) = render_transcript([{"role": "user", "content": "ramen 🍜 שלום"}], RenderSettings(fonts=bare))
    assert page.missing_glyphs == 1  # the emoji; DejaVu still has Hebrew letters
    assert "Noto Emoji" not in page.fonts
