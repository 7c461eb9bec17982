"""The legibility benchmark's measurement on one page (tesseract must be installed by setup --dev)."""

import shutil

import pytest

from optimem.bench.legibility import _ocr_one, choose_defaults, sample


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract not installed (bash scripts/setup.sh --dev)")
def test_a_sparse_large_page_reads_back_almost_perfectly():
    row = _ocr_one(("en", 30, "large"))
    assert row["accuracy"] > 0.95 and row["vision_tokens"] == 400 and row["tokens_per_page"] > 300


def test_samples_and_density_choice():
    assert len(sample("hard", 500)) >= 500 and any(c.isdigit() for c in sample("hard", 200))
    rows = [{"kind": "en", "tier": "small", "tokens_per_page": t, "accuracy": a, "font_px": f}
            for t, a, f in ((500, 0.99, 30), (900, 0.98, 22), (1500, 0.90, 16))]
    assert choose_defaults(rows)["small"]["tokens_per_page"] == 900
