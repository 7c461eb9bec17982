"""DeepSeek-OCR v1 model: shapes per mode, preprocessing, loading from official-layout checkpoints,
loader errors, the full-size parameter count, generation, and the memory's native path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optimem.errors import CheckpointError, ConfigError, DeviceError, InputError, ModelError
from optimem.model import DeepseekOCR, DeepseekOCRConfig, gundam_placeholders, placeholder_count, tiny_config
from optimem.model.loading import internal_to_official
from optimem.model.preprocess import best_grid, preprocess, to_rgb

DATA = Path(__file__).parent / "data" / "model"


@pytest.fixture(scope="module")
def tiny():
    return DeepseekOCR.random(tiny_config(), seed=1)


def test_placeholder_counts():
    assert [placeholder_count(t) for t in ("tiny", "small", "base", "large")] == [73, 111, 273, 421]
    assert gundam_placeholders(2, 1) == 273 + 21 * 10
    with pytest.raises(ConfigError, match="large, base, small, tiny"):
        placeholder_count("huge")


@pytest.mark.parametrize("tier,count", [("tiny", 73), ("small", 111), ("base", 273), ("large", 421)])
def test_encode_pages_shapes(tiny, tier, count):
    imgs = [Image.new("RGB", (700, 500), "white"), Image.new("RGB", (300, 900), "black")]
    out = tiny.encode_pages(imgs, tier)
    assert tuple(out.shape) == (2, count, tiny.config.text.hidden_size)
    assert torch.isfinite(out).all()
    # the batch gives what one-at-a-time gives
    one = tiny.encode_pages(imgs[1:], tier)
    assert torch.allclose(out[1], one[0], atol=1e-5)
    # the last row is the view separator, every grid row ends with the newline vector
    g = int((count - 1) ** 0.5)
    assert torch.equal(out[0, -1], tiny.module.view_seperator)
    assert torch.equal(out[0, g], tiny.module.image_newline)


def test_gundam_layout(tiny):
    wide = Image.new("RGB", (1500, 700), "white")
    assert best_grid(1500, 700) == (2, 1)
    out = tiny.encode_pages([wide], "gundam")[0]
    assert out.shape[0] == gundam_placeholders(2, 1)
    small = tiny.encode_pages([Image.new("RGB", (600, 400))], "gundam")[0]
    assert small.shape[0] == 273  # no tiles when both sides are <= 640


def test_preprocessing_matches_the_reference_recipe():
    img = Image.new("RGB", (1280, 640), (255, 0, 0))
    base = preprocess(img, "base")
    assert base.shape == (3, 1024, 1024)
    assert np.allclose(base[:, 0, 0], (127 / 255 - 0.5) / 0.5)  # padded grey, normalised
    assert np.allclose(base[:, 512, 512], [1.0, -1.0, -1.0])
    tiny_px = preprocess(img, "tiny")
    assert tiny_px.shape == (3, 512, 512) and np.allclose(tiny_px[:, 0, 0], [1.0, -1.0, -1.0])  # resized, no pad


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1", "CMYK"])
def test_non_rgb_images_are_converted(mode):
    img = Image.new(mode, (40, 30))
    assert to_rgb(img).mode == "RGB"
    assert preprocess(img, "tiny").shape == (3, 512, 512)


def test_sixteen_bit_is_scaled_not_clipped():
    img = Image.fromarray(np.full((10, 10), 65535, np.uint16))
    assert np.asarray(to_rgb(img)).max() == 255


def test_bad_images_are_refused_clearly():
    with pytest.raises(InputError, match="too large"):
        to_rgb(Image.new("L", (20_000, 20_000)))
    with pytest.raises(InputError, match="PIL image"):
        to_rgb(np.zeros((3, 3)))  # type: ignore[arg-type]
    assert preprocess(Image.new("RGB", (1, 1)), "small").shape == (3, 640, 640)  # tiny images upscale
    assert preprocess(Image.new("RGB", (20_000, 100)), "tiny").shape == (3, 512, 512)


def test_cuda_request_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA"):
        DeepseekOCR.random(tiny_config(), device="cuda")


def test_save_and_load_official_layout_round_trip(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    loaded = DeepseekOCR.from_pretrained(tmp_path / "ckpt", dtype="float32", device="cpu")
    for (k, a), (_, b) in zip(tiny.module.state_dict().items(), loaded.module.state_dict().items()):
        assert torch.equal(a, b), k
    img = Image.new("RGB", (640, 640), "white")
    assert torch.allclose(tiny.encode_pages([img], "small"), loaded.encode_pages([img], "small"))


def test_sharded_checkpoint_and_loader_errors(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    tiny.save_pretrained(ckpt)
    tensors = load_file(str(ckpt / "model.safetensors"))
    keys = sorted(tensors)
    half = len(keys) // 2
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((ckpt / "config.json").read_text())
    save_file({k: tensors[k] for k in keys[:half]}, str(sharded / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in keys[half:]}, str(sharded / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    DeepseekOCR.from_pretrained(sharded, device="cpu")

    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weight shards: model-00002"):
        DeepseekOCR.from_pretrained(sharded, device="cpu")

    def write(mutate, name):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((ckpt / "config.json").read_text())
        t = dict(tensors)
        mutate(t)
        save_file(t, str(d / "model.safetensors"))
        return d

    with pytest.raises(CheckpointError, match="missing keys.*model.view_seperator|missing keys.*view_seperator"):
        DeepseekOCR.from_pretrained(write(lambda t: t.pop("model.view_seperator"), "missing"), device="cpu")
    with pytest.raises(CheckpointError, match="unexpected keys.*model.extra"):
        DeepseekOCR.from_pretrained(write(lambda t: t.__setitem__("model.extra", torch.zeros(1)), "extra"), device="cpu")
    with pytest.raises(CheckpointError, match=r"shape mismatch for image_newline: checkpoint \(7,\), model \(64,\)"):
        DeepseekOCR.from_pretrained(write(lambda t: t.__setitem__("model.image_newline", torch.zeros(7)), "shape"), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        DeepseekOCR.from_pretrained(empty, device="cpu")
    (empty / "config.json").write_text((ckpt / "config.json").read_text())
    (empty / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="safetensors only"):
        DeepseekOCR.from_pretrained(empty, device="cpu")


def test_full_size_matches_the_official_key_list_on_meta():
    """Full-size shapes and parameter count against the official index, without allocating weights."""
    from optimem.model.modeling import DeepseekOCRModel

    with torch.device("meta"):
        model = DeepseekOCRModel(DeepseekOCRConfig())
    official = internal_to_official(dict(model.state_dict()))
    index = json.loads((DATA / "official_index_keys.json").read_text())
    assert sorted(official) == sorted(index["keys"])
    for k, shape in index["shapes"].items():
        assert list(official[k].shape) == shape, k
    n = sum(p.numel() for p in model.parameters())
    assert n == 3_336_106_240
    assert 2 * n == index["total_size_bytes_bf16"]  # the official single bf16 shard holds exactly these


def test_inputs_embeds_and_generation(tiny):
    img = Image.new("RGB", (640, 640), "white")
    emb = tiny.encode_pages([img], "tiny")[0]
    ids = [0] + [tiny.config.image_token_id] * 73 + [5, 6, 7]
    embeds = tiny.build_inputs_embeds(ids, [emb])
    assert torch.equal(embeds[0, 1:74], emb)
    with pytest.raises(ModelError, match="73 image placeholders but the images bring 146"):
        tiny.build_inputs_embeds(ids, [emb, emb])
    out = tiny.generate(ids, [emb], max_new_tokens=6)
    assert len(out) <= 6
    # greedy with cache equals greedy recomputed from scratch
    full = ids + out[:2]
    logits = tiny.logits(tiny.build_inputs_embeds(full, [emb]))
    assert int(logits[0, len(ids) - 1].argmax()) == out[0]
    assert int(logits[0, len(ids)].argmax()) == out[1]


def test_no_repeat_ngram_rule():
    from optimem.model import _banned_ngrams

    assert _banned_ngrams([1, 2, 3, 1, 2], 3) == [3]
    assert _banned_ngrams([1, 2, 3], 5) == []
