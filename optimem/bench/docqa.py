"""`optimem bench docqa`: document QA retrieval quality and ingest speed on this CPU.

Retrieval: the bundled manual (`optimem/data/manual.md`, written by scripts/make_manual.py) is ingested
and every question of `manual_questions.json` is asked; a hit is a retrieved page whose text contains
the question's `needle`. Reported: recall@1/3/5 (questions whose needle is split across a page break
are counted separately). Ingest: pages/s for the Markdown (rendered) and for a PDF made from the same
text with matplotlib (rasterised by pdfium, text layer kept).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources
from pathlib import Path
from optimem.progress import track


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pdf-pages", type=int, default=40, help="pages of the PDF made for the ingest timing")


def _make_pdf(text: str, path: Path, pages: int, lines_per_page: int = 48) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    lines = [w for para in text.splitlines() for w in (textwrap.wrap(para, 95) or [""])]
    with PdfPages(path) as pdf:
        for i in range(pages):
            fig = plt.figure(figsize=(8.5, 11))
            chunk = lines[i * lines_per_page : (i + 1) * lines_per_page]
            fig.text(0.06, 0.96, "\n".join(chunk), fontsize=7.5, va="top", family="DejaVu Sans")
            pdf.savefig(fig)
            plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    from optimem.docqa import DocumentMemory

    data = resources.files("optimem").joinpath("data")
    text = data.joinpath("manual.md").read_text(encoding="utf-8")
    questions = json.loads(data.joinpath("manual_questions.json").read_text(encoding="utf-8"))
    tmp = Path(tempfile.mkdtemp(prefix="optimem-docqa-"))
    src = tmp / "manual.md"
    src.write_text(text, encoding="utf-8")
    dm = DocumentMemory("manual", f"sqlite:///{tmp / 'docqa.db'}")
    t = time.perf_counter()
    rep = dm.ingest(src)
    md_s = time.perf_counter() - t
    # page texts hold the drawn lines: collapse line breaks so a needle wrapped over two lines matches
    pages = {p.index: " ".join(p.text.split()) for p in dm.store.get_pages("manual", with_png=False)}
    hits = {1: 0, 3: 0, 5: 0}
    split = 0
    for q in track(questions, total=len(questions), unit="questions"):
        needle = " ".join(q["needle"].split())
        relevant = {i for i, tx in pages.items() if needle in tx}
        if not relevant:
            split += 1
            continue
        ranked = [p for p, _ in dm.retrieve(q["question"], k=5)]
        for k in hits:
            hits[k] += bool(relevant & set(ranked[:k]))
    n = len(questions) - split
    pdf = tmp / "manual.pdf"
    _make_pdf(text, pdf, args.pdf_pages)
    pdm = DocumentMemory("manual-pdf", f"sqlite:///{tmp / 'pdf.db'}")
    t = time.perf_counter()
    prep = pdm.ingest(pdf)
    pdf_s = time.perf_counter() - t
    return {
        "table": [
            {"measure": "recall@1", "value": round(hits[1] / n, 3)},
            {"measure": "recall@3", "value": round(hits[3] / n, 3)},
            {"measure": "recall@5", "value": round(hits[5] / n, 3)},
            {"measure": "ingest Markdown, pages/s (render 1280 px + PNG + tokens)", "value": round(rep.pages / md_s, 1)},
            {"measure": "ingest PDF, pages/s (pdfium rasterise at 1280 px + text layer)", "value": round(prep.pages / pdf_s, 1)},
        ],
        "questions": len(questions), "questions_scored": n, "needle_split_across_pages": split,
        "manual_pages": rep.pages, "manual_chars": len(text), "pdf_pages": prep.pages, "retriever": "bm25s (BM25, default parameters)",
    }
