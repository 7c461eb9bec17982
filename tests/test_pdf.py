"""PDFs are read in a child process under a memory cap: a decompression bomb is a clear error, and
neither the caller's memory nor the store is touched by it."""

from __future__ import annotations

import resource
import zlib

import pytest

from optimem.docqa import DocumentMemory
from optimem.errors import InputError
from optimem.pdf import pdf_pages

pikepdf = pytest.importorskip("pikepdf")


def _bomb(path, expanded_mb: int) -> None:
    """One page whose content stream is a few hundred KB compressed and `expanded_mb` MB of drawing
    operators expanded."""
    chunk = b"0 0 m 1 1 l S\n" * 75_000  # ~1 MB of path operators
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(chunk) for _ in range(expanded_mb)) + comp.flush()
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    stream = pikepdf.Stream(pdf, b"")
    stream.write(data, filter=pikepdf.Name.FlateDecode)
    pdf.pages[0].obj.Contents = stream
    pdf.save(path)


def test_a_decompression_bomb_is_an_input_error_and_costs_the_caller_nothing(tmp_path):
    _bomb(tmp_path / "small.pdf", 1)  # the same shape, small: read fine under the same cap
    (png, text, digest, label), = pdf_pages((tmp_path / "small.pdf").read_bytes(), "small.pdf", memory_mb=400)
    assert png.startswith(b"\x89PNG") and len(digest) == 64
    _bomb(tmp_path / "bomb.pdf", 300)
    assert (tmp_path / "bomb.pdf").stat().st_size < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="page 1 took the PDF reader past its 400 MB memory cap"):
        list(pdf_pages((tmp_path / "bomb.pdf").read_bytes(), "bomb.pdf", memory_mb=400))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: the child took the hit


def test_ingest_of_a_bomb_leaves_the_store_clean(tmp_path, monkeypatch):
    import optimem.pdf

    monkeypatch.setattr(optimem.pdf, "DEFAULT_MEMORY_MB", 400)
    _bomb(tmp_path / "bomb.pdf", 300)
    dm = DocumentMemory("d", f"sqlite:///{tmp_path / 'd.db'}")
    with pytest.raises(InputError, match="memory cap"):
        dm.ingest(tmp_path / "bomb.pdf")
    assert dm.store.get_pages("d", with_png=False) == []
