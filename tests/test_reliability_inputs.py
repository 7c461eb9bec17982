"""Untrusted checkpoint files: paths confined to the checkpoint folder, config sizes checked against
the weight headers before anything is allocated, one clear CheckpointError for each malformed file."""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from optimem.errors import CheckpointError  # noqa: E402
from optimem.model import DeepseekOCR, DeepseekOCRConfig, tiny_config  # noqa: E402
from optimem.model.loading import read_safetensors_header, weight_files  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny") / "ckpt"
    DeepseekOCR.random(tiny_config(), seed=3).save_pretrained(d)
    return d


def _copy(ckpt: Path, tmp_path: Path, name: str = "c") -> Path:
    d = tmp_path / name
    shutil.copytree(ckpt, d)
    return d


def _config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


@pytest.mark.parametrize("shard", ["../elsewhere/x.safetensors", "/tmp/x.safetensors", "sub/../../x.safetensors"])
def test_index_paths_stay_inside_the_checkpoint(ckpt, tmp_path, shard):
    d = _copy(ckpt, tmp_path)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(d / "model.safetensors", tmp_path / "elsewhere" / "x.safetensors")
    (d / "model.safetensors").rename(d / "inside.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        weight_files(d)
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        DeepseekOCR.from_pretrained(d, device="cpu")


@pytest.mark.parametrize("index,match", [
    ({"weight_map": ["model.safetensors"]}, "weight_map"),
    ([1, 2], "weight_map"),
    ({"weight_map": {"a": 5}}, "not a file name"),
    ({"weight_map": {}}, "weight_map"),
])
def test_malformed_index(ckpt, tmp_path, index, match):
    d = _copy(ckpt, tmp_path)
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=match):
        DeepseekOCR.from_pretrained(d, device="cpu")


def test_json_nested_thousands_deep(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    (d / "model.safetensors.index.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="index"):
        weight_files(d)
    (d / "model.safetensors.index.json").unlink()
    (d / "config.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(CheckpointError, match="config.json"):
        DeepseekOCR.from_pretrained(d, device="cpu")


@pytest.mark.parametrize("mutate,match", [
    (lambda c: [1, 2, 3], "not an object"),
    (lambda c: {**c, "vision_config": {"width": {"sam_vit_b": [1], "clip-l-14-224": {}}}}, "sam_vit_b must be an object"),
    (lambda c: {**c, "language_config": {**c["language_config"], "hidden_size": "big"}}, "hidden_size"),
    (lambda c: {**c, "language_config": {**c["language_config"], "num_hidden_layers": -2}}, "num_hidden_layers"),
    (lambda c: {**c, "language_config": {**c["language_config"], "rope_theta": "fast"}}, "rope_theta"),
])
def test_config_of_the_wrong_type(ckpt, tmp_path, mutate, match):
    d = _copy(ckpt, tmp_path)
    (d / "config.json").write_text(json.dumps(mutate(_config(d))))
    with pytest.raises(CheckpointError, match=match):
        DeepseekOCR.from_pretrained(d, device="cpu")


def _set_text(d: Path, **fields) -> None:
    c = _config(d)
    c["language_config"].update(fields)
    c.update(fields)
    (d / "config.json").write_text(json.dumps(c))


def test_declared_huge_model_fails_fast_before_allocating(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    _set_text(d, vocab_size=10**9)
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match="vocab_size"):
        DeepseekOCR.from_pretrained(d, device="cpu")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - t < 5 and peak < 50 * 2**20
    # plausible on its own, but not what the weights hold: the headers say so before any allocation
    for fields, match in (({"vocab_size": 4_000_000}, r"embed_tokens.weight is \(129280, 64\)"),
                          ({"num_hidden_layers": 400}, "2 decoder layers"),
                          ({"n_routed_experts": 4096}, "4 routed experts")):
        d2 = _copy(ckpt, tmp_path, f"c{len(list(tmp_path.iterdir()))}")
        _set_text(d2, **fields)
        with pytest.raises(CheckpointError, match=match):
            DeepseekOCRConfig.from_file(d2 / "config.json")


def test_malformed_safetensors_name_the_file(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    f = d / "model.safetensors"
    data = f.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage header": (20).to_bytes(8, "little") + b"{not json at all!!!}" + data[28:],
        "huge header length": (2**60).to_bytes(8, "little") + data[8:],
        "tiny": b"abc",
    }
    for what, blob in cases.items():
        f.write_bytes(blob)
        with pytest.raises(CheckpointError, match="model.safetensors") as err:
            DeepseekOCR.from_pretrained(d, device="cpu")
        assert "\n" not in str(err.value), what
    f.write_bytes(data)
    assert "model.norm.weight" in read_safetensors_header(f)


def test_wrong_shape_in_one_expert_names_the_key(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy(ckpt, tmp_path)
    tensors = load_file(str(d / "model.safetensors"))
    key = "model.layers.1.mlp.experts.2.up_proj.weight"
    assert key in tensors
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight"):
        DeepseekOCR.from_pretrained(d, device="cpu")
