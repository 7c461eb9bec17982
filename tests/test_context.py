"""The native path end to end with a tiny random DeepSeek-OCR: the decoder receives exactly the plan."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from optimem.backends import DeepseekOCRBackend
from optimem.memory import ContextPage, OpticalMemory
from optimem.model import DeepseekOCR, tiny_config
from optimem.renderers import RenderSettings
from optimem.renderers.tokens import EOS_ID, IMAGE_TOKEN_ID, encode

SMALL = RenderSettings(page_px=320, font_px=14, margin_px=8)


@pytest.fixture(scope="module")
def backend():
    return DeepseekOCRBackend(DeepseekOCR.random(tiny_config(), seed=3))


def _mem(tmp_path, backend, n=40):
    mem = OpticalMemory("native", f"sqlite:///{tmp_path / 'n.db'}", render=SMALL, backend=backend)
    mem.add_many([{"role": ["user", "assistant"][i % 2],
                   "content": f"Turn {i}: " + " ".join(f"fact{(i * 13 + j) % 101}" for j in range(30 + i % 9))}
                  for i in range(n)])
    return mem


def test_prompt_layout_token_by_token(tmp_path, backend):
    mem = _mem(tmp_path, backend)
    ctx = mem.context(2500, new_message="What was fact7?")
    inputs = backend.prompts().chat(ctx).as_inputs()
    expected = [0]
    embeds = []
    for item in ctx.items:
        if isinstance(item, ContextPage):
            expected += [IMAGE_TOKEN_ID] * backend.placeholder_count(item.tier) + encode("\n")
            embeds.append(item.embeds)
        elif item.role == "assistant":
            expected += encode(f"<|Assistant|>: {item.content}") + [EOS_ID]
        else:
            expected += encode(f"<|User|>: {item.content}\n\n")
    expected += encode("<|User|>: What was fact7?\n\n") + encode("<|Assistant|>:")
    assert inputs["input_ids"] == expected
    assert len(inputs["image_embeds"]) == len(ctx.pages) > 0
    # the decoder's input rows at the placeholders are exactly the cached page embeddings, in plan order
    emb = backend.model.build_inputs_embeds(inputs["input_ids"], inputs["image_embeds"])
    ids = torch.tensor(inputs["input_ids"])
    rows = emb[0, ids == IMAGE_TOKEN_ID]
    assert torch.equal(rows, torch.cat([e.reshape(-1, e.shape[-1]) for e in embeds]))
    tiers = [p.tier for p in ctx.pages]
    assert sum(backend.placeholder_count(t) for t in tiers) == int((ids == IMAGE_TOKEN_ID).sum())


def test_chat_records_both_turns_and_recall_reads_a_page(tmp_path, backend):
    mem = _mem(tmp_path, backend, n=30)
    reply = mem.chat("Summarise.", budget=3000, max_new_tokens=4)
    turns = mem.turns()
    assert turns[-2].content == "Summarise." and turns[-1].role == "assistant" and turns[-1].content == reply
    text = mem.recall(0, max_new_tokens=6)
    assert isinstance(text, str)


def test_chat_cli_with_a_tiny_checkpoint(tmp_path, backend):
    import subprocess
    import sys

    backend.model.save_pretrained(tmp_path / "ckpt")
    out = subprocess.run(
        [sys.executable, "-m", "optimem", "chat", "--model", str(tmp_path / "ckpt"), "--store", f"sqlite:///{tmp_path / 'c.db'}",
         "--device", "cpu", "--max-new-tokens", "3"],
        input="hello\n\n", capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    from optimem.store import open_store

    turns = open_store(f"sqlite:///{tmp_path / 'c.db'}").get_turns("chat")
    assert [t.role for t in turns] == ["user", "assistant"] and turns[0].content == "hello"


def test_compiled_backend_pads_every_forward_to_one_batch_size(backend):
    pages = [Image.new("RGB", (200 + 10 * i, 260), (255 - 20 * i, 255, 255)) for i in range(5)]
    eager = DeepseekOCRBackend(backend.model, batch_size=2).encode(pages, "tiny")
    # the same weights in a model of its own (a used model holds decode state that cannot be deep-copied)
    compiled = DeepseekOCRBackend(DeepseekOCR.random(tiny_config(), seed=3), batch_size=2)
    seen = []
    encode_pages = compiled.model.encode_pages
    compiled.model.encode_pages = lambda imgs, tier: seen.append(len(imgs)) or encode_pages(imgs, tier)
    assert compiled.compile(backend="eager") is compiled and compiled.compiled
    got = compiled.encode(pages, "tiny")
    assert seen == [2, 2, 2]  # 5 pages: the last forward padded, so one compiled shape per tier
    assert len(got) == 5 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, eager))
    with pytest.raises(ValueError, match="batch_size"):
        DeepseekOCRBackend(backend.model, batch_size=0)
