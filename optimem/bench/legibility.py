"""`optimem bench legibility`: how much text survives each tier, read back by an independent OCR engine.

For pages rendered at several densities (body font size on the 1280 px master, reported as DeepSeek-OCR
text tokens per page), each tier image is derived exactly as DeepSeek-OCR's preprocessing does, then
read by tesseract 5 (eng for English and hard content, chi_sim for Chinese), upscaled first so that a
glyph is about 30 px tall (capped at 2400 px a side) (tesseract reads small glyphs poorly; DeepSeek-OCR sees the tier image
as is). Character accuracy = 1 - Levenshtein(OCR, truth) / len(truth) after collapsing whitespace
(removing it for Chinese), clipped at 0.

This is a proxy: tesseract is not DeepSeek-OCR, whose encoder was trained on exactly these
resolutions; it tells how much ink survives downscaling, not what the model will read.
"""

from __future__ import annotations

import argparse
import random
import re

KINDS = ("en", "zh", "hard")
FONTS = (44, 34, 26, 20, 16, 13)
ZH_FONTS = (44, 30, 20, 14)  # tesseract's chi_sim takes ~30 s a page on large upscaled images
TIERS = ("large", "base", "small", "tiny")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a small grid (smoke test, about 20 s)")
    p.add_argument("--plot", metavar="PNG", default=None, help="write the accuracy plot here")
    p.add_argument("--workers", type=int, default=2)


def sample(kind: str, chars: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    if kind == "en":
        from optimem.bench.render import sample_text

        words = sample_text("en", chars, seed).split()
        out, line = [], []
        for w in words:  # sentences and paragraphs, so OCR sees ordinary prose
            line.append(w)
            if rng.random() < 0.08:
                out.append(" ".join(line).capitalize() + ".")
                line = []
        return " ".join(out)
    if kind == "zh":
        from optimem.bench.render import sample_text

        return sample_text("zh", chars, seed)
    parts = []
    while sum(len(p) for p in parts) < chars:
        r = rng.random()
        if r < 0.3:
            parts.append(f"order {rng.randint(10**7, 10**9 - 1)} ref {''.join(rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ23456789') for _ in range(8))}")
        elif r < 0.55:
            parts.append(f"sha {''.join(rng.choice('0123456789abcdef') for _ in range(16))}")
        elif r < 0.8:
            parts.append(f"total = price * {rng.randint(2, 99)} + tax({rng.randint(1, 30)}.{rng.randint(0, 99):02d})")
        else:
            parts.append(f"https://example.com/r/{rng.randint(1000, 99999)}")
    return "\n".join(parts)


def _norm(text: str, kind: str) -> str:
    text = text.replace("\u2014", "-").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", "" if kind == "zh" else " ", text).strip()


def _ocr_one(job: tuple) -> dict:
    import pytesseract
    from PIL import Image
    from rapidfuzz.distance import Levenshtein

    from renderers import RenderSettings, derive_tier, render_document

    kind, font, tier = job
    page = render_document(sample(kind, 12000), RenderSettings(font_px=font))[0]
    truth = page.text
    img = derive_tier(page.image, tier).convert("L")
    glyph = font * img.size[0] / 1280
    # upscale to ~30 px glyphs, but no page past 2400 px a side (tesseract time grows with area)
    scale = min(max(1.0, 30.0 / glyph), max(1.0, 2400 / img.size[0]))
    if scale > 1.0:
        img = img.resize((int(img.size[0] * scale), int(img.size[1] * scale)), Image.Resampling.BICUBIC)
    lang = "chi_sim" if kind == "zh" else "eng"
    got = pytesseract.image_to_string(img, lang=lang, config="--psm 6")
    a, b = _norm(got, kind), _norm(truth, kind)
    acc = max(0.0, 1.0 - Levenshtein.distance(a, b) / max(len(b), 1))
    from renderers.tiers import TIERS as SPECS

    return {"kind": kind, "font_px": font, "tier": tier, "tokens_per_page": page.text_tokens,
            "chars_per_page": page.chars, "vision_tokens": SPECS[tier].vision_tokens,
            "compression": round(page.text_tokens / SPECS[tier].vision_tokens, 2), "accuracy": round(acc, 4)}


def choose_defaults(rows: list[dict], threshold: float = 0.97) -> dict:
    """The densest English page whose accuracy stays >= threshold, per tier."""
    out = {}
    for tier in TIERS:
        ok = [r for r in rows if r["kind"] == "en" and r["tier"] == tier and r["accuracy"] >= threshold]
        if ok:
            best = max(ok, key=lambda r: r["tokens_per_page"])
            out[tier] = {"font_px": best["font_px"], "tokens_per_page": best["tokens_per_page"], "accuracy": best["accuracy"]}
    return out


def run(args: argparse.Namespace) -> dict:
    from multiprocessing import get_context

    if args.quick:
        jobs = [("en", f, t) for f in (30, 16) for t in ("large", "tiny")]
    else:
        jobs = [(k, f, t) for k in KINDS for f in (ZH_FONTS if k == "zh" else FONTS) for t in TIERS]
    with get_context("spawn").Pool(max(args.workers, 1)) as pool:
        rows = list(pool.imap_unordered(_ocr_one, jobs))
    rows.sort(key=lambda r: (KINDS.index(r["kind"]), TIERS.index(r["tier"]), -r["font_px"]))
    if args.plot:
        _plot(rows, args.plot)
    return {"table": rows, "chosen_density": choose_defaults(rows), "engine": "tesseract 5 (pytesseract), psm 6",
            "proxy": "tesseract is not DeepSeek-OCR: this measures what ink survives each tier, not what the model reads"}


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for ax, kind in zip(axes, KINDS):
        for tier in TIERS:
            pts = sorted((r["tokens_per_page"], r["accuracy"]) for r in rows if r["kind"] == kind and r["tier"] == tier)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=tier)
        ax.set(title={"en": "English prose", "zh": "Chinese prose", "hard": "IDs, numbers, hashes, code"}[kind],
               xlabel="DeepSeek-OCR text tokens per page", xscale="log")
        ax.axhline(0.97, color="grey", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("character accuracy (tesseract, proxy)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
