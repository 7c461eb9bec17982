"""PDF pages as page masters, read in a child process under a memory cap.

A PDF is untrusted input: a few hundred kilobytes of compressed content can expand into gigabytes
inside pdfium, and a damaged file can abort the process that parses it. So pages are rasterised (at
the 1280 px master size) and their text layers read in a separate process whose address space is
capped (`RLIMIT_AS`); the parent receives one page at a time (PNG, text, pixel hash, printed label),
so its own memory stays bounded, and a child that runs out of memory or dies becomes an `InputError`
naming the page, never a crash of the caller.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

from optimem.errors import InputError

MASTER = 1280
DEFAULT_MEMORY_MB = int(os.environ.get("OPTIMEM_PDF_MEMORY_MB", "2048"))


def pdf_pages(data: bytes, name: str, *, on_open: Callable[[int], None] | None = None,
              memory_mb: int | None = None) -> Iterator[tuple[bytes, str, str, str | None]]:
    """(png, text, pixel hash, page label) per page of the PDF in `data`, read in a child whose
    address space is capped at `memory_mb` (default `DEFAULT_MEMORY_MB`, env OPTIMEM_PDF_MEMORY_MB)."""
    memory_mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read_pdf, args=(data, send, memory_mb), daemon=True, name="optimem-pdf")
    child.start()
    send.close()
    page = 0
    try:
        while True:
            try:
                kind, *rest = receive.recv()
            except EOFError:
                child.join(5)
                raise InputError(f"cannot read {name}: page {page + 1} took the PDF reader past its {memory_mb} MB "
                                 "memory cap or crashed it (a decompression bomb or a damaged file); raise "
                                 "OPTIMEM_PDF_MEMORY_MB if the document is trusted") from None
            if kind == "open":
                if on_open is not None:
                    on_open(rest[0])
            elif kind == "page":
                page += 1
                yield tuple(rest)  # type: ignore[misc]
            elif kind == "error":
                raise InputError(f"cannot {'open' if page == 0 else 'read'} {name}: {rest[0]}")
            else:  # "done"
                return
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)


def _read_pdf(data: bytes, send: Any, memory_mb: int) -> None:
    """The child: cap the address space, then send the pages one by one."""
    import resource

    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import pypdfium2 as pdfium

        from optimem.renderers.records import pixels_hash, png_bytes

        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            msg = str(exc)
            hint = ("it is encrypted (password protected); decrypt it first" if "password" in msg.lower()
                    else "it is corrupt or not a PDF")
            send.send(("error", f"{hint} ({msg})"))
            return
        send.send(("open", len(pdf)))
        for i in range(len(pdf)):
            page = pdf[i]
            w, h = page.get_size()
            image = page.render(scale=MASTER / max(w, h, 1)).to_pil().convert("L")
            text = page.get_textpage().get_text_range()
            send.send(("page", png_bytes(image), text, pixels_hash(image), pdf.get_page_label(i) or None))
            page.close()
        pdf.close()
        send.send(("done",))
    except MemoryError:
        return  # the parent sees the pipe close and names the page
    finally:
        send.close()
