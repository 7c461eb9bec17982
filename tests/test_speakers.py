"""Speaker names: a turn's optional name is drawn in its header instead of the role."""

from __future__ import annotations

import pytest

from optimem.renderers import RenderSettings, Turn, paginate, render_transcript
from optimem.renderers.records import RenderError

SMALL = RenderSettings(page_px=320, font_px=14, margin_px=8)


def test_the_header_says_who_spoke():
    turns = [{"role": "user", "content": "I adopted a puppy.", "name": "Caroline"},
             {"role": "assistant", "content": "What is its name?", "name": "  Melanie \n Ortiz "},
             {"role": "user", "content": "Biscuit."}]
    page = render_transcript(turns, SMALL)[0]
    lines = page.text.split("\n")
    assert "Caroline:" in lines and "Melanie Ortiz:" in lines and "User:" in lines
    assert "User:" not in lines[0]
    unnamed = render_transcript([{**t, "name": None} for t in turns], SMALL)[0]
    assert unnamed.content_hash != page.content_hash and "Caroline:" not in unnamed.text


def test_a_named_turn_that_runs_on_says_so_on_the_next_page():
    layouts = paginate([Turn("user", "word " * 400, name="Caroline")], SMALL)
    assert len(layouts) > 1
    assert layouts[1].text.split("\n")[0] == "Caroline (continued):"


def test_names_are_checked_and_kept_to_one_short_line():
    with pytest.raises(RenderError, match="name"):
        render_transcript([{"role": "user", "content": "x", "name": 5}], SMALL)
    long = "A" * 100
    text = render_transcript([{"role": "user", "content": "x", "name": long}], SMALL)[0].text
    header = text.split("\n")[0]
    assert header.endswith("\u2026:") and len(header) <= 41
    assert render_transcript([{"role": "user", "content": "x", "name": "   "}], SMALL)[0].text.startswith("User:")


def test_memory_keeps_names_and_draws_them(tmp_path):
    from optimem.errors import InputError
    from optimem.memory import OpticalMemory

    mem = OpticalMemory("s", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL)
    mem.add("user", "I adopted a puppy called Biscuit. " * 20, name="Caroline")
    mem.add_many([{"role": "assistant", "content": "Lovely! " * 40, "name": "Melanie"},
                  Turn("user", "More news soon. " * 40, name="Caroline")])
    assert [t.metadata.get("name") for t in mem.turns()] == ["Caroline", "Melanie", "Caroline"]
    mem.sync()
    texts = [p.text for p in mem.store.get_pages("s", with_png=False)]
    assert texts and texts[0].startswith("Caroline:") and any("Melanie:" in t for t in texts)
    with pytest.raises(InputError, match="name"):
        mem.add("user", "x", name=["not", "a", "name"])  # type: ignore[arg-type]


def test_the_native_prompt_says_who_spoke_and_stays_within_budget(tmp_path):
    from optimem.backends import NoModelBackend
    from optimem.memory import OpticalMemory

    mem = OpticalMemory("s", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL)
    for i in range(40):
        mem.add(["user", "assistant"][i % 2], f"Turn {i}: " + "we talked about the garden. " * 6,
                name=["Caroline", "Melanie"][i % 2])
    ctx = mem.context(900)
    texts = [t for t in ctx.turns]
    assert texts and all(t.name in ("Caroline", "Melanie") for t in texts)
    pieces = [v for k, v in ctx.pieces() if k == "text"]
    assert any(p.startswith("<|User|>: Caroline: Turn") for p in pieces)
    assert any(p.startswith("<|Assistant|>: Melanie: Turn") for p in pieces)
    prompt = NoModelBackend().prompts()
    ids = []
    for kind, val in ctx.pieces():  # count the real prompt (pages as their placeholders)
        if kind == "text":
            ids += prompt.tokenizer.encode(val, add_special_tokens=False).ids
        elif kind == "page":
            ids += [0] * val.tokens
        else:
            ids.append(1)
    assert len(ids) + 1 <= 900
