"""DeepSeek-OCR-2 as the second backend: transformers' native model behind optimem's page API.

A tiny random OCR-2 runs on CPU. The reference here is transformers' own path (its image processor
and `DeepseekOcr2ForConditionalGeneration.forward` / `.generate` with pixel values): optimem's
encode + splice + decode must give exactly what that path gives. optimem swaps OCR-2's SAM attention
for its fused one in place (so that path runs it too); the last test checks the swap against
transformers' own attention.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from optimem.backends import DeepseekOCR2Backend, DeepseekOCRBackend
from optimem.errors import CheckpointError, ConfigError, InputError
from optimem.memory import OpticalMemory
from optimem.model import DeepseekOCR2, load_model
from optimem.renderers import RenderSettings
from optimem.renderers.tokens import IMAGE_TOKEN_ID

SMALL = RenderSettings(page_px=320, font_px=14, margin_px=8)


@pytest.fixture(scope="module")
def model():
    return DeepseekOCR2.random(seed=5)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ocr2") / "ckpt"
    model.save_pretrained(path)
    return path


def _page(text: str, size=(1000, 1300)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i in range(20):
        draw.text((20, 20 + 40 * i), f"{text} line {i}", fill="black")
    return img


def test_ladder_and_placeholder_counts(model):
    assert model.ladder.names == ("tiles", "base", "small")
    assert [model.placeholder_count(t) for t in ("tiles", "base", "small")] == [833, 257, 145]
    pages = [_page("alpha"), _page("beta", (1400, 900))]
    for tier in ("tiles", "base", "small"):
        emb = model.encode_pages(pages, tier)
        assert tuple(emb.shape) == (2, model.placeholder_count(tier), model.config.text_config.hidden_size)
    # a page no larger than one tile is scaled up for the tiles tier, so its cost stays 833
    assert model.encode_pages([_page("x", (300, 200))], "tiles").shape[1] == 833
    with pytest.raises(ConfigError, match="tiles, base, small"):
        model.encode_pages(pages, "tiny")


def test_batched_encoding_equals_one_at_a_time(model):
    a, b = _page("alpha"), _page("beta", (1400, 900))
    for tier in ("tiles", "small"):
        both = model.encode_pages([a, b], tier)
        one = torch.cat([model.encode_pages([a], tier), model.encode_pages([b], tier)])
        assert torch.allclose(both, one, atol=1e-5), tier


def test_splice_and_decode_match_transformers_own_path(model):
    page = _page("the invoice number is 4711")
    for tier in ("tiles", "base", "small"):
        n = model.placeholder_count(tier)
        ids = [model.bos_token_id] + [model.image_token_id] * n + \
            model.tokenizer.encode("\nFree OCR.", add_special_tokens=False).ids
        emb = model.encode_pages([page], tier)[0]
        ours = model.logits(model.build_inputs_embeds(ids, [emb]))
        with torch.inference_mode():
            native = model.hf(input_ids=torch.tensor([ids]), **model.pixels([page], tier)).logits
        assert torch.allclose(ours, native, atol=1e-5, rtol=0), (tier, (ours - native).abs().max().item())
        other = model.logits(model.build_inputs_embeds(ids, [model.encode_pages([_page("different")], tier)[0]]))
        assert not torch.allclose(ours, other)  # the image reaches the decoder
    with torch.inference_mode():
        native_ids = model.hf.generate(input_ids=torch.tensor([ids]), **model.pixels([page], "small"), max_new_tokens=8,
                                       do_sample=False, no_repeat_ngram_size=20, eos_token_id=model.eos_token_id,
                                       pad_token_id=model.eos_token_id)[0, len(ids):].tolist()
    assert model.generate(ids, [emb], max_new_tokens=8) == native_ids


def test_checkpoint_roundtrip_and_dispatch(model, checkpoint):
    page = _page("roundtrip")
    loaded = load_model(checkpoint, device="cpu")
    assert isinstance(loaded, DeepseekOCR2)
    assert torch.equal(loaded.encode_pages([page], "base"), model.encode_pages([page], "base"))
    backend = DeepseekOCRBackend.from_pretrained(str(checkpoint), device="cpu")
    assert backend.ladder.names == ("tiles", "base", "small") and isinstance(backend.model, DeepseekOCR2)
    assert isinstance(DeepseekOCR2Backend.from_pretrained(str(checkpoint)).model, DeepseekOCR2)


def _copy_ckpt(src, dst, *, drop=None, reshape=None, config=None):
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    tensors = load_file(str(src / "model.safetensors"))
    if drop:
        tensors.pop(drop)
    if reshape:
        tensors[reshape] = torch.zeros(3, 3)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config or {})
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_checkpoint_errors_name_the_problem(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        DeepseekOCR2.from_pretrained(tmp_path)
    key = "model.view_seperator"  # transformers writes (and reads) the original repository's key names
    with pytest.raises(CheckpointError, match="missing keys.*view_separator"):
        DeepseekOCR2.from_pretrained(_copy_ckpt(checkpoint, tmp_path / "missing", drop=key))
    with pytest.raises(CheckpointError, match=r"view_separator \(checkpoint \(3, 3\), model \(64,\)\)"):
        DeepseekOCR2.from_pretrained(_copy_ckpt(checkpoint, tmp_path / "shape", reshape=key))
    remote_code_config = _copy_ckpt(checkpoint, tmp_path / "v1", config={"model_type": "deepseek_vl_v2"})
    with pytest.raises(CheckpointError, match="not 'deepseek_ocr2'"):
        DeepseekOCR2.from_pretrained(remote_code_config)
    with pytest.raises(CheckpointError, match="DeepSeek-OCR-2 weights.*config format"):
        load_model(remote_code_config)
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text((checkpoint / "config.json").read_text())
    (pickle_only / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="safetensors only"):
        DeepseekOCR2.from_pretrained(pickle_only)
    # an index that points at pickle shards is refused before anything opens them
    (pickle_only / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "pytorch_model-00001-of-00001.bin"}}))
    with pytest.raises(CheckpointError, match="non-safetensors shards.*pytorch_model-00001-of-00001.bin"):
        load_model(pickle_only)


def test_odd_images_are_converted_or_refused(model):
    rgb = np.asarray(_page("modes"))
    odd = [
        Image.fromarray(rgb).convert("L"),
        Image.fromarray(rgb).convert("RGBA"),
        Image.fromarray(rgb).convert("P"),
        Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).convert("I;16"),
        Image.new("RGB", (1, 1), "white"),
    ]
    emb = model.encode_pages(odd, "small")
    assert emb.shape[0] == len(odd) and torch.isfinite(emb).all()
    with pytest.raises(InputError, match="too large"):
        model.encode_pages([Image.new("L", (20_000, 20_000))], "small")
    with pytest.raises(InputError, match="at least one image"):
        model.encode_pages([], "small")


def test_memory_runs_on_ocr2(model, tmp_path):
    backend = DeepseekOCRBackend(model, batch_size=4)
    mem = OpticalMemory("ocr2", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL, backend=backend)
    mem.add_many([{"role": ["user", "assistant"][i % 2],
                   "content": f"Turn {i}: " + " ".join(f"fact{(i * 13 + j) % 101}" for j in range(30 + i % 9))}
                  for i in range(40)])
    ctx = mem.context(3000, new_message="What was fact7?")
    assert ctx.pages and {p.tier for p in ctx.pages} <= {"tiles", "base", "small"}
    inputs = backend.prompts().chat(ctx).as_inputs()
    assert ctx.pages[0].image().size == ctx.pages[0].master().size  # OCR-2 resamples the master itself
    ids = torch.tensor(inputs["input_ids"])
    assert int((ids == IMAGE_TOKEN_ID).sum()) == sum(model.placeholder_count(p.tier) for p in ctx.pages)
    assert len(ids) <= 3000 + 64  # the plan's budget holds for OCR-2's costs (plus the prompt scaffolding)
    reply = mem.chat("Summarise.", budget=3000, max_new_tokens=3)
    assert mem.turns()[-1].content == reply


def test_a_session_planned_for_v1_keeps_forgetting_monotone_on_ocr2(model, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    conv = [{"role": ["user", "assistant"][i % 2], "content": f"Turn {i}: " + "words " * 60} for i in range(80)]
    v1 = OpticalMemory("switch", url, render=SMALL)
    v1.add_many(conv)
    v1_plan = v1.plan(1500)
    assert "tiny" in {t for _, t in v1_plan.page_tiers}
    ocr2 = OpticalMemory("switch", url, render=SMALL, backend=DeepseekOCRBackend(model))
    tiny_page = next(p for p, t in v1_plan.page_tiers if t == "tiny")
    assert isinstance(ocr2.recall(tiny_page, max_new_tokens=2), str)  # read at OCR-2's "small", not v1's "tiny"
    plan = ocr2.plan(1500)
    order = ("tiles", "base", "small", "dropped")
    before = v1_plan.floors()  # what v1 persisted: age floors only
    for page, tier in plan.page_tiers:
        assert tier in order
        if before.get(page) in ("tiny", "dropped"):  # a v1 floor unknown to OCR-2 maps to its coarsest tier
            assert order.index(tier) >= order.index("small" if before[page] == "tiny" else "dropped")


def test_chat_cli_loads_an_ocr2_checkpoint(checkpoint, tmp_path):
    import subprocess
    import sys

    from optimem.store import open_store

    out = subprocess.run(
        [sys.executable, "-m", "optimem", "chat", "--model", str(checkpoint), "--store", f"sqlite:///{tmp_path / 'c.db'}",
         "--device", "cpu", "--max-new-tokens", "3"],
        input="hello\n\n", capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    turns = open_store(f"sqlite:///{tmp_path / 'c.db'}").get_turns("chat")
    assert [t.role for t in turns] == ["user", "assistant"] and turns[0].content == "hello"


def test_bfloat16_tracks_float32(model):
    bf16 = DeepseekOCR2.random(seed=5, dtype="bfloat16")
    page = _page("precision")
    for tier in ("tiles", "small"):
        ref, low = model.encode_pages([page], tier), bf16.encode_pages([page], tier)
        assert low.dtype == torch.bfloat16
        assert (ref - low.float()).abs().max() < 0.02 * ref.abs().max(), tier


def test_ocr2_encode_benchmark_runs_tiny_on_cpu():
    import argparse

    from optimem.bench import ocr2 as bench

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    result = bench.run(p.parse_args(["--tiny", "--device", "cpu", "--tiers", "small", "tiles", "--batches", "2",
                                     "--min-seconds", "0.05"]))
    assert [(r["tier"], r["placeholders"]) for r in result["rows"]] == [("small", 145), ("tiles", 833)]
    assert all(r["pages_per_s"] > 0 and r["gflop_per_page"] > 0 for r in result["rows"])
    tiles, small = result["rows"][1], result["rows"][0]
    assert tiles["gflop_per_page"] > 4 * small["gflop_per_page"]  # 4 tiles + a larger global view


def test_fused_sam_attention_matches_transformers_attention(model):
    stock = DeepseekOCR2.random(seed=5, fused_attention=False)
    page = _page("fused")
    for tier in ("tiles", "base", "small"):
        assert torch.allclose(model.encode_pages([page], tier), stock.encode_pages([page], tier), atol=1e-5), tier


def test_compile_wires_the_vision_tower(model):
    # backend="eager": dynamo captures the whole vision tower (the fused SAM attention, the matmul patch
    # embedding, the Qwen2-style encoder's hybrid mask) without inductor, fast enough for CPU CI
    import copy

    compiled = copy.deepcopy(model)
    torch._dynamo.reset()
    assert compiled.compile(backend="eager") is compiled
    assert type(compiled.vision_encoder.sam_encoder.patch_embed).__name__ == "MatmulSamPatchEmbeddings"
    page = _page("compiled")
    for tier in ("small", "tiles"):
        assert torch.allclose(compiled.encode_pages([page], tier), model.encode_pages([page], tier), atol=1e-5), tier
