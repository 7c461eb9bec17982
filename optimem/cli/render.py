"""`optimem render INPUT --tier T --out DIR [--json]`: one PNG per page at the tier's resolution."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from optimem.cli import common


# the files this command writes; a re-run into the same folder removes these first (and nothing else)
PAGE_FILES = (r"page-\d{4,}-(large|base|small|tiny)\.png",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="transcript (.jsonl: one {\"role\", \"content\"} per line; .json: a list of them) "
                                 "or document (.txt, .md)")
    p.add_argument("--tier", default="large", choices=["large", "base", "small", "tiny"], help="resolution of the PNGs")
    p.add_argument("--out", required=True, help="folder for the page PNGs (created if missing; pages of an earlier "
                                                "render there are replaced, other files are left alone)")
    p.add_argument("--font-px", type=common.int_at_least(4, "--font-px"), default=None,
                   help="body font size on the 1280 px master (default: 20, the renderer's default density)")
    p.add_argument("--json", action="store_true", help="print the pages as one JSON document")


def page_record(page, tier: str, path: Path) -> dict:
    from optimem.ladders import DEEPSEEK_OCR_V1

    spec = DEEPSEEK_OCR_V1.spec(tier)
    grid = spec.size // 64  # v1: 16 px patches, then 4x compression per side
    return {
        "index": page.index,
        "tier": tier,
        "width": spec.size,
        "height": spec.size,
        "chars": page.chars,
        "text_tokens": page.text_tokens,
        "vision_tokens": grid * grid,
        "placeholder_tokens": spec.tokens,
        "missing_glyphs": page.missing_glyphs,
        "fonts": list(page.fonts),
        "path": str(path),
        "spans": [
            {"turn": s.turn, "start": s.start, "end": s.end, "continued": s.continued, "continues": s.continues}
            for s in page.spans
        ],
    }


def run(args: argparse.Namespace) -> int:
    from optimem.progress import progress_bar, stderr_console
    from optimem.ladders import DEEPSEEK_OCR_V1
    from optimem.renderers import DOCUMENT_ROLE, RenderSettings, Turn, iter_pages, load_input, png_bytes

    if Path(args.out).exists() and not Path(args.out).is_dir():  # before any work
        common.output_dir(args.out, PAGE_FILES)
    source = load_input(args.input)
    settings = RenderSettings() if args.font_px is None else RenderSettings(font_px=args.font_px)
    turns = [Turn(DOCUMENT_ROLE, source)] if isinstance(source, str) else source
    out, removed = common.output_dir(args.out, PAGE_FILES)
    console = stderr_console()
    if removed:
        console.print(f"removed {len(removed)} page(s) of an earlier render from {out}", highlight=False)
    total_chars = sum(len(t.content) for t in turns)  # the bar follows characters; the count is pages
    records = []
    with progress_bar(console=console) as bar:
        task = bar.add_task(f"render {Path(args.input).name}", total=max(total_chars, 1), unit="pages", items=0)
        for page in iter_pages(turns, settings):
            path = out / f"page-{page.index:04d}-{args.tier}.png"
            path.write_bytes(png_bytes(DEEPSEEK_OCR_V1.view(page.image, args.tier)))
            records.append(page_record(page, args.tier, path))
            bar.update(task, advance=page.chars, items=len(records))
        bar.update(task, completed=max(total_chars, 1))
    if args.json:
        json.dump(records, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        total_text = sum(r["text_tokens"] for r in records)
        total_vision = sum(r["vision_tokens"] for r in records)
        ratio = common.ratio(total_text, total_vision)
        print(f"{len(records)} pages at {args.tier} in {out}: {total_text} text tokens -> {total_vision} vision tokens ({ratio})")
    return 0
