"""The page pipeline: tier tables, views, view and vision-token caches, the page encoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from optimem.errors import ConfigError
from optimem.ladders import DEEPSEEK_OCR2, DEEPSEEK_OCR_V1
from optimem.pages import PageEncoder, PageViews, VisionCache
from optimem.store import open_store
from optimem.renderers import RenderSettings, render_transcript


@pytest.fixture(scope="module")
def master():
    (page,) = render_transcript([{"role": "user", "content": "Optical memory: " + "pages fade with age. " * 40}])
    return page


@pytest.mark.parametrize("tier", DEEPSEEK_OCR_V1.names)
def test_v1_views_follow_deepseek_ocr_preprocessing(tier):
    spec = DEEPSEEK_OCR_V1.spec(tier)
    assert spec.tokens == {"large": 421, "base": 273, "small": 111, "tiny": 73}[tier]
    assert spec.vision_tokens == (spec.size // 64) ** 2
    # a non-square image: pad tiers keep the aspect and fill with grey 127; resize tiers stretch
    wide = Image.new("RGB", (1280, 640), (255, 255, 255))
    out = DEEPSEEK_OCR_V1.view(wide, tier)
    assert out.size == (spec.size, spec.size)
    assert out.getpixel((0, 0)) == ((127, 127, 127) if spec.mode == "pad" else (255, 255, 255))


@pytest.mark.parametrize("tier", DEEPSEEK_OCR_V1.names)
def test_grey_views_are_bit_identical_to_the_rgb_path(master, tier):
    """Resampling the grey master's one channel gives exactly the pixels of the RGB path the model's
    own preprocessing takes (and that the parity fixtures were made with)."""
    from optimem.model.preprocess import preprocess

    grey = DEEPSEEK_OCR_V1.view(master.image, tier)
    assert grey.mode == "L"
    rgb = DEEPSEEK_OCR_V1.view(master.image.convert("RGB"), tier)
    assert np.array_equal(np.asarray(grey.convert("RGB")), np.asarray(rgb))
    assert np.array_equal(preprocess(grey, tier), preprocess(master.image, tier))


def test_unknown_tier_names_the_valid_ones():
    with pytest.raises(ConfigError, match="large, base, small, tiny"):
        DEEPSEEK_OCR_V1.view(Image.new("L", (10, 10)), "huge")
    assert DEEPSEEK_OCR2.names == ("tiles", "base", "small")
    img = Image.new("L", (1280, 1280), 255)
    assert DEEPSEEK_OCR2.view(img, "tiles") is img  # OCR-2's processor resamples the master itself


def test_views_are_derived_once_and_masters_read_only_when_a_view_is_missing(master):
    reads = []

    def load(i):
        reads.append(i)
        return master.png_bytes()

    views = PageViews(DEEPSEEK_OCR_V1, load, max_views=3, max_masters=1)
    a = views.view(0, "h0", "tiny")
    assert views.view(0, "h0", "tiny") is a and reads == [0]
    views.view(0, "h0", "small")
    assert reads == [0]  # the decoded master is kept for the next tier
    for i in range(1, 4):
        views.view(i, f"h{i}", "tiny")
    assert len(views._views) == 3  # bounded
    views.view(0, "h0", "tiny")  # evicted: derived again from the master, read again
    assert reads.count(0) == 2
    # many() derives a page's tiers in one worker: each master read (and decoded) once
    reads.clear()

    def slow_load(i):  # a slow read: two workers on one page would both miss the master
        time.sleep(0.05)
        return load(i)

    fresh = PageViews(DEEPSEEK_OCR_V1, slow_load, max_masters=4)
    fresh.many([(p, f"h{p}", t) for p in range(2) for t in ("tiny", "small", "base")])
    assert sorted(reads) == [0, 1]


class _Backend:
    model_id = "fake"

    def __init__(self):
        self.calls = []

    def encode(self, images, tier):
        self.calls.append((tier, len(images)))
        n = DEEPSEEK_OCR_V1.placeholder_count(tier)
        return [np.full((n, 4), float(np.asarray(img).mean()), dtype=np.float32) for img in images]


class _Page:
    def __init__(self, h, tier, image):
        self.content_hash, self.tier, self._image, self.embeds = h, tier, image, None

    def image(self):
        return self._image


def test_encoder_batches_per_tier_encodes_duplicates_once_and_keeps_hot_tokens_bounded(master):
    store = open_store("sqlite://")
    backend = _Backend()
    cache = VisionCache(store, "s", backend.model_id, hot_bytes=2 * 273 * 4 * 4)
    enc = PageEncoder(backend, cache)
    img = DEEPSEEK_OCR_V1.view(master.image, "tiny")
    pages = [_Page("a", "base", img), _Page("a", "base", img), _Page("b", "base", img), _Page("c", "tiny", img)]
    enc.encode(pages)
    assert sorted(backend.calls) == [("base", 2), ("tiny", 1)]
    assert pages[0].embeds is pages[1].embeds and all(p.embeds is not None for p in pages)
    assert cache._hot_size <= cache.hot_bytes
    again = [_Page(h, t, img) for h, t in (("a", "base"), ("b", "base"), ("c", "tiny"))]
    PageEncoder(backend, VisionCache(store, "s", backend.model_id)).encode(again)  # a new process: the store's cache
    assert len(backend.calls) == 2
    assert np.array_equal(np.asarray(again[0].embeds), pages[0].embeds)


def test_views_are_kept_in_the_store_for_other_processes_and_corrupt_ones_are_rederived(master):
    store = open_store("sqlite://")
    reads = []

    def load(i):
        reads.append(i)
        return master.png_bytes()

    first = PageViews(DEEPSEEK_OCR_V1, load, store=store, session="s")
    made = first.many([(0, "h0", "tiny"), (0, "h0", "small"), (0, "h0", "tiny")])
    assert made[0] is made[2] and made[1].size == (640, 640)
    first.flush()  # views are saved in the background
    other = PageViews(DEEPSEEK_OCR_V1, load, store=store, session="s")  # another process
    n = len(reads)
    again = other.view(0, "h0", "tiny")
    assert len(reads) == n  # read from the stored view, the master untouched
    assert np.array_equal(np.asarray(again), np.asarray(made[0]))  # lossless
    key = other._stored_key("h0", "small")
    store.put_cache("s", key, store.get_cache_blob("s", key)[:100])  # truncated
    third = PageViews(DEEPSEEK_OCR_V1, load, store=store, session="s")
    assert np.array_equal(np.asarray(third.view(0, "h0", "small")), np.asarray(made[1]))
    assert len(reads) == n + 1  # derived again from the master
