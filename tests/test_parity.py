"""Parity with the reference DeepSeek-OCR implementation (fp32, max abs error <= 1e-4).

The golden tensors were produced by running the reference HF remote code (transformers 4.46.3) outside
this repository on the checkpoint that `tests/model_checkpoints.write_checkpoint()` writes, with the
pixel inputs of tests/data/model/page.png and wide.png; here the same checkpoint is rebuilt
bit-identically and loaded through `from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from optimem.model import DeepseekOCR
from model_checkpoints import write_checkpoint

DATA = Path(__file__).parent / "data" / "model"
TOL = 1e-4


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    ckpt = write_checkpoint(tmp_path_factory.mktemp("parity"))
    return DeepseekOCR.from_pretrained(ckpt, dtype="float32", device="cpu"), load_file(str(DATA / "parity_golden.safetensors"))


@pytest.mark.parametrize("tier", ["tiny", "small", "base", "large"])
def test_vision_tokens_match_reference(parity, tier):
    model, golden = parity
    emb = model.encode_pages([Image.open(DATA / "page.png")], tier)[0]
    rows = golden[f"vision_{tier}_rows"]
    err = (emb[rows] - golden[f"vision_{tier}"]).abs().max().item()
    assert err <= TOL, f"{tier}: max abs error {err}"


def test_gundam_vision_tokens_match_reference(parity):
    model, golden = parity
    emb = model.encode_pages([Image.open(DATA / "wide.png")], "gundam")[0]
    assert emb.shape[0] == 483
    err = (emb[golden["vision_gundam_rows"]] - golden["vision_gundam"]).abs().max().item()
    assert err <= TOL, f"gundam: max abs error {err}"


def test_decoder_logits_with_spliced_image_match_reference(parity):
    model, golden = parity
    emb = model.encode_pages([Image.open(DATA / "page.png")], "tiny")[0]
    ids = [0] + [model.config.image_token_id] * 73 + list(range(5, 15))
    logits = model.logits(model.build_inputs_embeds(ids, [emb]))[0, -16:]
    err = (logits - golden["logits_tiny_prompt"]).abs().max().item()
    assert err <= TOL, f"logits: max abs error {err}"
