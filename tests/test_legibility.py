"""The legibility benchmark's measurement on one page (tesseract must be installed by setup --dev)."""

import shutil

import pytest

from optimem.bench.legibility import _ocr_one, choose_defaults, sample


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract not installed (bash scripts/setup.sh --dev)")
def test_a_sparse_large_page_reads_back_almost_perfectly():
    row = _ocr_one(("en", 30, "large"))
    assert row["accuracy"] > 0.95 and row["vision_tokens"] == 400 and row["tokens_per_page"] > 300


def _langs() -> set[str]:
    import subprocess

    if shutil.which("tesseract") is None:
        return set()
    out = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.parametrize("kind,lang", [("ar", "ara"), ("he", "heb"), ("ja", "jpn"), ("ko", "kor")])
def test_every_script_reads_back_at_base(kind, lang):
    """Arabic joined and right to left, Hebrew right to left, Japanese and Korean in their own faces:
    tesseract reads the first lines of a default-density (20 px) page at the base tier at >= 0.95.
    A page drawn mirrored or with unjoined letters reads back near 0."""
    if lang not in _langs():
        pytest.skip(f"tesseract language data '{lang}' not installed (bash scripts/setup.sh --dev)")
    row = _ocr_one((kind, 20, "base", 6))
    assert row["accuracy"] >= 0.95, row


def test_samples_and_density_choice():
    assert len(sample("hard", 500)) >= 500 and any(c.isdigit() for c in sample("hard", 200))
    rows = [{"kind": "en", "tier": "small", "tokens_per_page": t, "accuracy": a, "font_px": f}
            for t, a, f in ((500, 0.99, 30), (900, 0.98, 22), (1500, 0.90, 16))]
    assert choose_defaults(rows)["small"]["tokens_per_page"] == 900
    assert choose_defaults(rows, 0.97, "ar") == {}
    for kind in ("ar", "he", "ja", "ko"):
        text = sample(kind, 400)
        assert len(text) >= 400 and text == sample(kind, 400)  # deterministic
