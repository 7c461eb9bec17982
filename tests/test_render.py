"""Renderer: layout, spans, pagination, CJK, tiers, determinism, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from optimem.renderers import (
    FontError,
    FontFiles,
    Paginator,
    RenderError,
    RenderSettings,
    Turn,
    iter_pages,
    load_input,
    normalize_text,
    render_document,
    render_transcript,
)
from optimem.renderers.text import CLOSING

SMALL = RenderSettings(page_px=320, font_px=14, margin_px=8)  # small pages: many page breaks, fast


def _content_of(turns, settings=SMALL):
    return [normalize_text(Turn.coerce(t).content, settings.tab_width) for t in turns]


def assert_spans_cover(turns, pages, settings=SMALL):
    """Concatenating each turn's span ranges over the pages gives back its whole normalised content."""
    contents = _content_of(turns, settings)
    pos = {i: 0 for i in range(len(turns))}
    for page in pages:
        for sp in page.spans:
            assert sp.start == pos[sp.turn], f"gap or overlap in turn {sp.turn} on page {page.index}"
            assert sp.continued == (sp.start > 0)
            pos[sp.turn] = sp.end
            assert sp.continues == (sp.end < len(contents[sp.turn]))
    for i, c in enumerate(contents):
        assert pos[i] == len(c), f"turn {i}: {len(c) - pos[i]} characters lost"


TEXT = st.text(
    alphabet=st.sampled_from(list("abc xyz 1234567890.,;:!?()-_/") + list("光学记忆。，、」「") + ["\n", "\t"]),
    max_size=400,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system", "tool"]), TEXT), max_size=6))
def test_spans_match_text_exactly_and_nothing_is_lost(raw):
    turns = [{"role": r, "content": c} for r, c in raw]
    pages = render_transcript(turns, SMALL)
    assert_spans_cover(turns, pages)
    if pages:
        assert all(p.full for p in pages[:-1]) and not pages[-1].full


def test_lines_fit_and_no_line_starts_with_closing_punctuation():
    text = ("光学上下文压缩把较早的对话渲染成页面图像，由编码器压缩为少量视觉标记。「引用」还有（括号）。" * 20
            + " https://example.com/" + "x" * 500 + " end")
    pg = Paginator(SMALL)
    turns = [Turn("user", text)]
    for lines, _, contents in pg.iter_page_lines(turns):
        for line in lines:
            if line.style == "header":
                continue
            width = sum(map(pg.styles[line.style].widths.__getitem__, line.text))
            # a closing mark may hang one glyph past the edge
            assert width <= pg.width + pg.settings.font_px * 2, line.text
            if line.start > 0 and line.text:
                assert line.text[0] not in CLOSING, line.text
    assert_spans_cover(turns, list(iter_pages(turns, SMALL)))


def test_restarting_from_a_page_start_gives_the_same_pages():
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}. " + "word " * (37 * i % 150)}
             for i in range(12)]
    full = render_transcript(turns, SMALL)
    assert len(full) > 4
    for k in (1, 3, len(full) - 1):
        first = full[k].spans[0]
        tail = render_transcript(turns, SMALL, start=(first.turn, first.start), first_index=k)
        assert [p.content_hash for p in tail] == [p.content_hash for p in full[k:]]
        assert [p.spans for p in tail] == [p.spans for p in full[k:]]


def test_determinism_byte_identical_png():
    turns = [{"role": "user", "content": "Hello 世界 " * 50}, {"role": "assistant", "content": "```\ncode  x\n```"}]
    a = render_transcript(turns)
    b = render_transcript(turns)
    assert [p.png_bytes() for p in a] == [p.png_bytes() for p in b]
    # a fresh process (cold caches) draws the same bytes
    code = (
        "import sys,json; from optimem.renderers import render_transcript;"
        f"p=render_transcript({turns!r}); sys.stdout.write(p[0].content_hash)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == a[0].content_hash


def test_layout_styles_markdown_code_tables_and_headers():
    content = "# Title\n\n- item\n\n```python\ndef f():\n\treturn  1\n```\n| a | b |\n|---|---|\nplain"
    pg = Paginator()
    (lines, _, _), = list(pg.iter_page_lines([Turn("assistant", content)]))
    styles = {line.text: line.style for line in lines}
    assert styles["Assistant:"] == "header"
    assert styles["# Title"] == "bold"
    assert styles["    return  1"] == "mono"  # tab expanded, double space kept
    assert styles["| a | b |"] == "mono"
    assert styles["plain"] == "body"


def test_continued_turn_gets_a_continuation_header():
    pages = render_transcript([{"role": "user", "content": "lorem ipsum " * 400}], SMALL)
    assert len(pages) >= 2
    assert pages[1].text.startswith("User (continued):")
    assert pages[0].spans[0].continues and pages[1].spans[0].continued


def test_cjk_renders_with_noto_and_records_fonts():
    turns = [
        {"role": "user", "content": "简体中文：光学记忆。繁體中文：光學記憶。日本語：ひらがなとカタカナ。한국어: 광학 기억."},
    ]
    (page,) = render_transcript(turns)
    assert page.missing_glyphs == 0
    # one paragraph with kana: the Japanese face draws all of it (tests/test_scripts.py: per language)
    assert "Noto Sans CJK JP" in page.fonts and "DejaVu Sans" in page.fonts
    (han,) = render_transcript([{"role": "user", "content": "光"}])
    (tc,) = render_transcript([{"role": "user", "content": "光"}], RenderSettings(cjk_face="TC"))
    assert "Noto Sans CJK SC" in han.fonts and "Noto Sans CJK TC" in tc.fonts


def test_missing_glyphs_are_counted_and_drawn_as_boxes():
    (with_emoji,) = render_transcript([{"role": "user", "content": "ok \ue000\U000f0001 ok"}])
    (without,) = render_transcript([{"role": "user", "content": "ok    ok"}])
    assert with_emoji.missing_glyphs == 2
    assert with_emoji.content_hash != without.content_hash  # the boxes are visible ink


def test_text_tokens_and_chars():
    (page,) = render_transcript([{"role": "user", "content": "Optical memory keeps old turns as pages."}])
    assert page.chars == len("Optical memory keeps old turns as pages.")
    assert 5 < page.text_tokens < 20


# --- bad input -------------------------------------------------------------------------------------


def test_empty_inputs():
    assert render_transcript([]) == []
    (page,) = render_transcript([{"role": "user", "content": ""}])
    assert page.spans[0].start == page.spans[0].end == 0
    (doc,) = render_document("")
    assert doc.chars == 0


def test_normalisation_of_control_surrogate_zero_width_and_bidi():
    raw = "a\x00b\x07c\r\nd\ud800e\u200bf\u202eg\u2066h\tx"
    norm = normalize_text(raw)
    assert norm == "a\ufffdb\ufffdc\nd\ufffdefgh  x"  # tab to column 8
    turns = [{"role": "user", "content": raw}]
    pages = render_transcript(turns)
    assert_spans_cover(turns, pages, RenderSettings())


def test_rtl_and_emoji_do_not_crash():
    turns = [{"role": "user", "content": "שלום עולם مرحبا بالعالم 🎉👍 mixed"}]
    pages = render_transcript(turns)
    assert len(pages) == 1


def test_five_megabyte_turn_paginates_lazily_in_bounded_time_and_memory():
    huge = ("word " * 200 + "\n") * 5200  # about 5.2 MB in one turn
    assert len(huge) > 5_000_000
    tracemalloc.start()
    t = time.perf_counter()
    it = iter_pages([{"role": "user", "content": huge}], RenderSettings())
    first = [next(it) for _ in range(3)]
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 10
    assert peak < 120 * 2**20  # the 5 MB text, its normalised copy and three pages
    assert first[2].spans[0].continued


def test_one_five_megabyte_line_without_newlines():
    huge = "x" * 5_000_000
    it = iter_pages([{"role": "user", "content": huge}], RenderSettings())
    page = next(it)
    assert page.chars > 1000 and page.spans[0].continues


def test_missing_font_file_is_a_clear_error(tmp_path):
    files = FontFiles.default()
    bad = FontFiles(sans=str(tmp_path / "nope.ttf"), bold=files.bold, mono=files.mono, cjk=files.cjk)
    with pytest.raises(FontError, match="nope.ttf"):
        render_transcript([{"role": "user", "content": "x"}], RenderSettings(fonts=bad))


def test_unreadable_and_malformed_inputs(tmp_path):
    with pytest.raises(RenderError, match="not found"):
        load_input(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "user", "content": "ok"}\n{"role": "user", "content": \n')
    with pytest.raises(RenderError, match="line 2"):
        load_input(bad)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"role": "user", "content": 5}\n')
    with pytest.raises(RenderError, match="line 1"):
        load_input(wrong)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(RenderError, match="UTF-8"):
        load_input(binary)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("x")
        locked.chmod(0)
        with pytest.raises(RenderError, match="permission"):
            load_input(locked)
    with pytest.raises(RenderError, match="unsupported"):
        load_input(tmp_path / "x.pdf")


def test_cli_render_json(tmp_path):
    src = tmp_path / "chat.jsonl"
    src.write_text("\n".join(json.dumps({"role": r, "content": f"{r} says hello " * 80}) for r in ["user", "assistant"] * 4))
    out = subprocess.run(
        [sys.executable, "-m", "optimem", "render", str(src), "--tier", "small", "--out", str(tmp_path / "o"), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    pages = json.loads(out)
    assert pages and {"index", "tier", "width", "height", "chars", "text_tokens", "vision_tokens", "path", "spans"} <= set(pages[0])
    assert pages[0]["width"] == 640 and pages[0]["vision_tokens"] == 100
    assert Image.open(pages[0]["path"]).size == (640, 640)
    bad = subprocess.run([sys.executable, "-m", "optimem", "render", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_turn_breaks_pages_break_between_turns_and_stay_restartable():
    """`turn_breaks`: a turn that does not fit in the rest of a page starts on the next when at most
    a quarter of the page is left; pages stay restartable from any page's first span. The default
    layout fills pages."""
    import random

    from optimem.renderers import RenderSettings, Turn, paginate

    rng = random.Random(1)
    turns = [Turn(rng.choice(["user", "assistant", "tool"]),
                  " ".join(f"w{rng.randint(0, 999)}" for _ in range(rng.randint(5, 700)))) for _ in range(40)]
    one_page = {i for i, t in enumerate(turns)
                if len(paginate([t], RenderSettings(turn_breaks=True))) == 1}
    broken = paginate(turns, RenderSettings(turn_breaks=True))
    filled = paginate(turns, RenderSettings())
    assert len(broken) > len(filled)
    def inside(pages):
        return sum(p.spans[-1].continues and p.spans[-1].turn in one_page for p in pages[:-1])

    assert inside(broken) * 2 < inside(filled)
    for p in broken[:-1]:
        last = p.spans[-1]
        if last.continues and not last.continued and len(p.spans) > 1:  # a turn began low on this page
            rest = paginate(turns, RenderSettings(turn_breaks=True), start=(last.turn, 0))[0]
            assert rest.spans[0].end - rest.spans[0].start > last.end - last.start  # ... and goes on
    for p in broken[1:]:  # restartable from any page's first (turn, offset)
        s = p.spans[0]
        again = paginate(turns, RenderSettings(turn_breaks=True), start=(s.turn, s.start))
        assert [q.spans for q in again] == [q.spans for q in broken[p.index:]]
