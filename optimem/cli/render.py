"""`optimem render INPUT --tier T --out DIR [--json]`: one PNG per page at the tier's resolution."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="transcript (.jsonl, .json) or document (.txt, .md)")
    p.add_argument("--tier", default="large", choices=["large", "base", "small", "tiny"])
    p.add_argument("--out", required=True, help="directory for page PNGs (created)")
    p.add_argument("--font-px", type=int, default=None, help="body font size on the 1280 px master")
    p.add_argument("--json", action="store_true", help="print the pages as one JSON document")


def page_record(page, tier: str, path: Path) -> dict:
    from renderers import tier_spec

    spec = tier_spec(tier)
    return {
        "index": page.index,
        "tier": tier,
        "width": spec.size,
        "height": spec.size,
        "chars": page.chars,
        "text_tokens": page.text_tokens,
        "vision_tokens": spec.vision_tokens,
        "placeholder_tokens": spec.placeholder_tokens,
        "missing_glyphs": page.missing_glyphs,
        "fonts": list(page.fonts),
        "path": str(path),
        "spans": [
            {"turn": s.turn, "start": s.start, "end": s.end, "continued": s.continued, "continues": s.continues}
            for s in page.spans
        ],
    }


def run(args: argparse.Namespace) -> int:
    from renderers import RenderSettings, derive_tier, iter_pages, load_input, png_bytes, render_document

    source = load_input(args.input)
    settings = RenderSettings() if args.font_px is None else RenderSettings(font_px=args.font_px)
    pages = render_document(source, settings) if isinstance(source, str) else iter_pages(source, settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for page in pages:
        path = out / f"page-{page.index:04d}-{args.tier}.png"
        path.write_bytes(png_bytes(derive_tier(page.image, args.tier)))
        records.append(page_record(page, args.tier, path))
    if args.json:
        json.dump(records, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        total_text = sum(r["text_tokens"] for r in records)
        total_vision = sum(r["vision_tokens"] for r in records)
        ratio = f"{total_text / total_vision:.1f}x" if total_vision else "n/a"
        print(f"{len(records)} pages at {args.tier} in {out}: {total_text} text tokens -> {total_vision} vision tokens ({ratio})")
    return 0
