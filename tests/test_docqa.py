"""Document QA: ingest (text, Markdown, PDF with and without a text layer), resume, retrieval, ask."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from optimem.docqa import DocumentMemory
from optimem.errors import InputError


def _manual(n: int = 30) -> str:
    return "\n\n".join(
        f"# Section {i}\n\nThe pump P-{1000 + i} flange needs a torque of {20 + i} Nm. "
        f"Inspect its seal every {i + 3} weeks. " + "Routine maintenance text follows. " * 40
        for i in range(n)
    )


def _pdf_with_text(path, pages=3):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages
    import matplotlib.pyplot as plt

    with PdfPages(path) as pdf:
        for i in range(pages):
            fig = plt.figure(figsize=(8.5, 11))
            fig.text(0.1, 0.9, f"Valve V-{500 + i} opens at {3 + i} bar.", fontsize=14)
            pdf.savefig(fig)
            plt.close(fig)


def test_ingest_markdown_resume_and_retrieve(tmp_path):
    src = tmp_path / "manual.md"
    src.write_text(_manual())
    dm = DocumentMemory("doc", f"sqlite:///{tmp_path / 'd.db'}")
    rep = dm.ingest(src)
    assert rep.pages == rep.new_pages > 5
    assert dm.ingest(src).new_pages == 0  # resumable: nothing stored twice
    ans = dm.ask("What torque does the P-1017 flange need?", budget=2000)
    top_page = ans.pages[0][0]
    (page,) = dm.store.get_pages("doc", top_page, top_page + 1, with_png=False)
    assert "P-1017" in page.text
    assert ans.tokens <= 2000 and ans.answer is None and "no model" in ans.note


def test_pdf_text_layer_and_image_only_pages(tmp_path):
    pdf = tmp_path / "valves.pdf"
    _pdf_with_text(pdf)
    scan = tmp_path / "scan.pdf"
    Image.new("RGB", (850, 1100), "white").save(scan)  # an image-only PDF: no text layer
    dm = DocumentMemory("pdf", f"sqlite:///{tmp_path / 'p.db'}")
    assert dm.ingest(pdf).pages == 3
    rep = dm.ingest(scan)
    assert rep.pages == 1 and rep.pages_without_text == 1
    pages = dm.store.get_pages("pdf")
    assert Image.open(__import__("io").BytesIO(pages[0].png)).size[1] == 1280  # rasterised at the master size
    hits = dm.retrieve("At what pressure does valve V-501 open?")
    assert hits and hits[0][0] == 1
    assert all(p != pages[-1].index for p, _ in hits)  # the page without text never ranks


def test_bad_inputs(tmp_path):
    dm = DocumentMemory("bad", f"sqlite:///{tmp_path / 'b.db'}")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        dm.ingest(empty)
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.7\n garbage")
    with pytest.raises(InputError, match="corrupt"):
        dm.ingest(corrupt)
    with pytest.raises(InputError, match="no ingested pages"):
        dm.ask("anything")
    with pytest.raises(InputError, match="cannot read"):
        dm.ingest(tmp_path / "missing.md")


def test_ask_with_a_tiny_model_splices_exactly_the_chosen_pages(tmp_path):
    from optimem.backends import DeepseekOCRBackend
    from optimem.model import DeepseekOCR, tiny_config
    from optimem.renderers.tokens import IMAGE_TOKEN_ID

    src = tmp_path / "manual.md"
    src.write_text(_manual(12))
    backend = DeepseekOCRBackend(DeepseekOCR.random(tiny_config()))
    dm = DocumentMemory("m", f"sqlite:///{tmp_path / 'm.db'}", backend=backend)
    dm.ingest(src)
    ans = dm.ask("torque of the P-1005 flange", budget=1500, max_new_tokens=3)
    assert ans.answer is not None and "[p." in ans.answer
    inputs = dm.prompt("q", ans.pages).as_inputs()
    placeholders = sum(backend.placeholder_count(t) for _, t, _ in ans.pages)
    assert torch.tensor(inputs["input_ids"]).eq(IMAGE_TOKEN_ID).sum().item() == placeholders
    assert len(inputs["image_embeds"]) == len(ans.pages)


def test_cli_ingest_and_ask(tmp_path):
    src = tmp_path / "manual.md"
    src.write_text(_manual(10))
    store = f"sqlite:///{tmp_path / 'c.db'}"
    run = lambda *a: subprocess.run([sys.executable, "-m", "optimem", *a], capture_output=True, text=True, check=True).stdout
    rep = json.loads(run("ingest", str(src), "--session", "cli", "--store", store, "--json"))
    assert rep["new_pages"] == rep["pages"]
    ans = json.loads(run("ask", "P-1003 torque", "--session", "cli", "--store", store, "--json", "--budget", "1500"))
    assert ans["pages"] and ans["tokens"] <= 1500


def test_encrypted_pdf_is_refused_clearly(tmp_path):
    pikepdf = pytest.importorskip("pikepdf")
    plain = tmp_path / "plain.pdf"
    Image.new("RGB", (200, 260), "white").save(plain)
    with pikepdf.open(plain) as pdf:
        pdf.save(tmp_path / "locked.pdf", encryption=pikepdf.Encryption(owner="o", user="secret"))
    with pytest.raises(InputError, match="encrypted"):
        DocumentMemory("enc", f"sqlite:///{tmp_path / 'e.db'}").ingest(tmp_path / "locked.pdf")


@pytest.mark.slow
def test_two_thousand_page_pdf_in_bounded_memory(tmp_path):
    """Pages stream one at a time: Python-side memory stays flat however long the document is."""
    import tracemalloc

    from PIL import ImageDraw

    pages = []
    for i in range(2000):
        im = Image.new("L", (85, 110), 255)
        ImageDraw.Draw(im).text((5, 5), f"page {i}", fill=0)
        pages.append(im)
    pdf = tmp_path / "long.pdf"
    pages[0].save(pdf, save_all=True, append_images=pages[1:])
    del pages
    tracemalloc.start()
    rep = DocumentMemory("long", f"sqlite:///{tmp_path / 'l.db'}").ingest(pdf)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rep.pages == rep.new_pages == 2000
    assert peak < 64 * 2**20  # about 18 MB measured; 2,000 stored PNGs would be far more if held
