"""Long-document QA on compressed pages: ingest a document as pages, ask questions over them.

    from optimem.docqa import DocumentMemory
    docs = DocumentMemory("manual", "sqlite:///docs.db")
    docs.ingest("manual.pdf")                          # or .txt / .md (rendered by optimem's renderer)
    ans = docs.ask("What torque for the pump flange?", budget=4096)   # with model=... it also answers
    ans.pages                                          # [(page, tier, bm25 score), ...]

Ingest: text and Markdown go through `renderers.render_document`; PDF pages are rasterised directly by
pdfium at the 1280 px master size (the document's own typesetting), and the PDF's text layer is kept
beside each page (a page without one is still ingested, flagged `has_text: false`). Pages stream one
at a time (bounded memory) and are stored in small batches as they are made.

Documents are records (`Store.put_doc`): a document id (the file name unless given), its content hash
and the page ranges it owns. Each batch takes fresh page indices from the store (`allocate_pages`, so
two ingests into one session never write the same page) and is written together with the record
that lists it as *pending*; re-running an interrupted ingest resumes after the last batch. When the
document is complete, one transaction makes the new pages the document's and deletes the pages of
its previous version, so re-ingesting an edited document replaces it and questions never see both.
`forget(doc_id)` deletes a document (record, pages, cached vision tokens); `forget()` the session.

Ask: BM25 (`bm25s`, `optimem.search`: built once per set of pages and kept in the store) over the
kept page texts picks the top-k pages; the policies then choose tiers so
they fit the budget, treating relevance like recency (the most relevant page is the "newest", so the
least relevant pages blur or drop first); the pages are spliced before the question in the native
DeepSeek-OCR prompt and the answer cites them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimem.backends import Backend, NoModelBackend
from optimem.context import ContextPage
from optimem.errors import InputError
from optimem.pages import PageEncoder, PageViews
from optimem.prompt import NativePrompt
from optimem.search import PageIndex
from optimem.store import Store, StoredPage, open_store

log = logging.getLogger(__name__)
INGEST_BATCH = 8  # pages per store write (and per page-range allocation) while ingesting


def default_doc_id(path: Path) -> str:
    """A document id from a file name: characters outside A-Z a-z 0-9 . _ - become `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:128] or "document"


@dataclass
class IngestReport:
    source: str
    doc_hash: str
    pages: int
    new_pages: int
    pages_without_text: int
    seconds: float
    doc_id: str = ""
    replaced_pages: int = 0


@dataclass
class Answer:
    question: str
    answer: str | None
    pages: list[tuple[int, str, float]]  # (page index, tier, bm25 score), most relevant first
    tokens: int
    dropped: list[int] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "tokens": self.tokens, "note": self.note,
                "pages": [{"page": p, "tier": t, "score": round(s, 4)} for p, t, s in self.pages], "dropped": self.dropped}


class DocumentMemory:
    def __init__(self, session: str, store: Store | str | None = None, *, backend: Backend | None = None) -> None:
        from optimem.store import check_session

        self.session = check_session(session)
        self.store = store if isinstance(store, Store) else open_store(store)
        self.backend = backend or NoModelBackend()
        self.views = PageViews(self.backend.ladder, store=self.store, session=self.session)
        self._encoder: PageEncoder | None = None
        self._page_index: PageIndex | None = None

    # -- ingest -------------------------------------------------------------------------------------
    def ingest(self, path: str | Path, *, progress: bool = False, doc_id: str | None = None) -> IngestReport:
        """Store a document's pages under `doc_id` (default: the file name, characters outside
        A-Z a-z 0-9 . _ - replaced by `_`). The same content again is a no-op; changed content replaces
        the document's pages once the new version is complete; an interrupted ingest resumes."""
        import time

        from optimem.store.base import check_doc_id, doc_pages

        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not data.strip():
            raise InputError(f"{path} is empty: nothing to ingest")
        doc_hash = hashlib.sha256(data).hexdigest()[:16]
        doc_id = check_doc_id(doc_id if doc_id is not None else default_doc_id(path))
        if self.store.count_turns(self.session):
            raise InputError(f"session {self.session!r} holds a chat (OpticalMemory turns); ingest documents into "
                             "a session of their own")
        t0 = time.perf_counter()
        current = self.store.get_docs(self.session).get(doc_id)  # every write below is conditional on it
        rec = current or self._legacy_record(doc_hash, path.name)
        if rec is not None and rec.get("sha") == doc_hash and not rec.get("pending"):
            return IngestReport(str(path), doc_hash, int(rec.get("pages", 0)), 0, int(rec.get("pages_without_text", 0)),
                                round(time.perf_counter() - t0, 3), doc_id)
        base = {k: v for k, v in (rec or {}).items() if k != "pending"}
        base.setdefault("ranges", [])
        pending = (rec or {}).get("pending") or {}
        stale: list[int] = []
        if pending.get("sha") != doc_hash:  # an unfinished ingest of another version: its pages go
            stale = doc_pages({"ranges": pending.get("ranges") or []})
            pending = {"sha": doc_hash, "source": path.name, "ranges": [], "done": 0, "pages_without_text": 0}
        total = new = 0
        batch: list[StoredPage] = []

        def flush() -> None:
            nonlocal pending, new, current
            first = self.store.allocate_pages(self.session, len(batch))
            stored = [dataclasses.replace(p, index=first + j) for j, p in enumerate(batch)]
            pending = {**pending, "ranges": [*pending["ranges"], [first, len(stored)]], "done": pending["done"] + len(stored),
                       "pages_without_text": pending["pages_without_text"] + sum(not p.meta["has_text"] for p in stored)}
            record = {**base, "pending": pending}
            self.store.put_doc(self.session, doc_id, record, pages=stored, if_record=current)
            current = record
            new += len(stored)
            batch.clear()

        from optimem.pdf import pdf_pages
        from optimem.progress import progress_bar
        from optimem.renderers.tokens import count_tokens

        # pages with a count and a rate; a PDF's page count is known once it is open, a text's is not
        with progress_bar(disable=not progress) as bar:
            task = bar.add_task(f"ingest {path.name}", total=None, unit="pages")
            pages_iter = (pdf_pages(data, str(path), on_open=lambda n: bar.update(task, total=n))
                          if path.suffix.lower() == ".pdf" else self._text_pages(path, data))
            for i, (png, text, content_hash, label) in enumerate(pages_iter):
                total += 1
                bar.update(task, advance=1)
                if i < pending["done"]:
                    continue  # stored by the interrupted run this one resumes
                page_meta = {"doc": doc_hash, "doc_id": doc_id, "page": i, "source": path.name,
                             "has_text": bool(text.strip())}
                if label:
                    page_meta["label"] = label  # the page number printed on it (PDF page labels: "iv", "A-3")
                batch.append(StoredPage(0, [{"turn": 0, "start": 0, "end": 0, "continued": False, "continues": False}],
                                        text, count_tokens(text), content_hash, png=png, meta=page_meta))
                if len(batch) >= INGEST_BATCH:
                    flush()
            if batch:
                flush()
        old = doc_pages({"ranges": base["ranges"]}) + stale
        before = self._visible_digest()
        final = {**base, "sha": doc_hash, "source": path.name, "ranges": pending["ranges"], "pages": total,
                 "pages_without_text": pending["pages_without_text"]}
        self.store.put_doc(self.session, doc_id, final, drop_pages=old, if_record=current)  # the swap: one transaction
        if old and before is not None:
            self.store.delete_cache(self.session, f"bm25|{before}")  # the index still holding the old text
        return IngestReport(str(path), doc_hash, total, new, pending["pages_without_text"],
                            round(time.perf_counter() - t0, 3), doc_id, len(old))

    def _legacy_record(self, doc_hash: str, source: str) -> dict[str, Any] | None:
        """A document ingested before documents were records (listed in the session metadata)."""
        entry = (self.store.get_meta(self.session).get("docs") or {}).get(doc_hash)
        if not isinstance(entry, dict) or not isinstance(entry.get("first_page"), int):
            return None
        return {"sha": doc_hash, "source": entry.get("source", source), "ranges": [[entry["first_page"], entry.get("pages", 0)]],
                "pages": entry.get("pages", 0), "pending": {"sha": doc_hash, "source": source, "done": 0,
                                                            "ranges": [], "pages_without_text": 0}}

    def documents(self) -> dict[str, dict[str, Any]]:
        """The session's documents: id -> record (source, content hash, page ranges, page count)."""
        return self.store.get_docs(self.session)

    def forget(self, doc_id: str | None = None) -> bool:
        """Delete one document (its record, pages and cached vision tokens), or with no id the whole
        session (every document, page, cache entry and the metadata). False if there was no such document."""
        before = self._visible_digest()
        if doc_id is None:
            self.store.delete_session(self.session)
            gone = True
        else:
            gone = self.store.delete_doc(self.session, doc_id)
            if gone and before is not None:
                self.store.delete_cache(self.session, f"bm25|{before}")
        self._page_index = None
        return gone

    def _visible_digest(self) -> str | None:
        from optimem.search import pages_digest

        pages = self._visible_pages()
        return pages_digest(pages) if pages else None

    def _text_pages(self, path: Path, data: bytes):
        from optimem.renderers import DOCUMENT_ROLE, Turn, iter_pages

        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text") from None
        for page in iter_pages([Turn(DOCUMENT_ROLE, text)]):
            yield page.png_bytes(), page.text, page.content_hash, None

    # -- ask ----------------------------------------------------------------------------------------
    def _index(self, pages: list[StoredPage]) -> PageIndex:
        """BM25 over these pages: kept in this object, else loaded from the store, else built and saved."""
        from optimem.search import PageIndex, pages_digest

        digest = pages_digest(pages)
        if self._page_index is not None and self._page_index.digest == digest:
            return self._page_index
        key = f"bm25|{digest}"
        blob = self.store.get_cache_blob(self.session, key)
        index = PageIndex.from_bytes(blob, digest) if blob is not None else None
        if index is None:
            index = PageIndex.build(pages)
            self.store.put_cache(self.session, key, index.to_bytes())
            if self._page_index is not None:  # the previous set's index is stale now
                self.store.delete_cache(self.session, f"bm25|{self._page_index.digest}")
        self._page_index = index
        return index

    def _visible_pages(self) -> list[StoredPage]:
        """The pages questions see: those of complete documents, and pages from before documents were
        records. Pages of an unfinished (re-)ingest stay out until it completes."""
        from optimem.store.base import doc_pages

        docs = self.store.get_docs(self.session)
        owned = {i for rec in docs.values() for i in doc_pages({"ranges": rec.get("ranges") or []})}
        return [p for p in self.store.get_pages(self.session, with_png=False)
                if p.index in owned or "doc_id" not in p.meta]

    def _pages(self) -> list[StoredPage]:
        pages = self._visible_pages()
        if not pages:
            raise InputError(f"session {self.session!r} has no ingested pages: run ingest first")
        return pages

    def retrieve(self, question: str, k: int = 8) -> list[tuple[int, float]]:
        """The k best pages for `question` by BM25, [(page index, score)], best first; pages with no
        matching word (or no text layer) are left out."""
        if k < 1:
            raise InputError(f"k must be at least 1, not {k}")
        return self._index(self._pages()).search(question, k)

    def ask(self, question: str, *, budget: int = 4096, k: int = 8, max_new_tokens: int = 256) -> Answer:
        from optimem.policies import PageInfo, Planner, Policy, Schedule, TurnInfo
        from optimem.renderers.tokens import count_tokens

        if not question.strip():
            raise InputError("the question is empty")
        if k < 1:
            raise InputError(f"k must be at least 1, not {k}")
        need = max_new_tokens + count_tokens(question) + 16
        if budget < need:
            from optimem.errors import ConfigError

            raise ConfigError(f"budget {budget} is below the {max_new_tokens} tokens the answer reserves plus "
                              f"{need - max_new_tokens} for the question; use at least {need}")
        all_pages = self._pages()  # read once per question
        hits = self._index(all_pages).search(question, k)
        if not hits:
            return Answer(question, None, [], 0, note="no page matches the question's words")
        stored = {p.index: p for p in all_pages}
        # least relevant first ("oldest"), the question last ("newest", kept as text)
        order = list(reversed(hits))
        turns = [TurnInfo(i, stored[p].text_tokens) for i, (p, _) in enumerate(order)]
        turns.append(TurnInfo(len(order), count_tokens(question) + 16))
        pages = [PageInfo(i, i, i, stored[p].text_tokens) for i, (p, _) in enumerate(order)]
        # fill_budget=False: these "turns" stand for pages, whose text the prompt never carries as text
        planner = Planner(self.backend.ladder.costs,
                          Policy(recent_turns=1, schedule=Schedule("turns", ()), fill_budget=False))
        planner.extend(turns, pages)
        plan = planner.plan(budget - max_new_tokens)
        tiers = plan.tiers()
        chosen = [(order[i][0], tiers[i], order[i][1]) for i in range(len(order)) if tiers.get(i, "dropped") != "dropped"]
        chosen.reverse()
        dropped = [order[i][0] for i in range(len(order)) if tiers.get(i) == "dropped"]
        answer = None
        note = "no model: retrieval and plan only"
        if self.backend.has_model:
            answer = self.backend.generate(self.prompt(question, chosen, stored), max_new_tokens=max_new_tokens)
            cites = ", ".join(f"p.{stored[p].meta.get('label') or stored[p].meta.get('page', p) + 1}" for p, _, _ in chosen)
            answer = f"{answer} [{cites}]" if cites else answer
            note = ""
        return Answer(question, answer, chosen, plan.total_tokens, dropped, note)

    def context_pages(self, chosen: list[tuple[int, str, float]],
                      stored: dict[int, StoredPage] | None = None) -> list[ContextPage]:
        """The chosen (page, tier, score) triples as context pages in document order, with their tier
        images (`.image()`) and, with a model backend, their vision tokens (through the shared caches)."""
        if stored is None:
            stored = {p.index: p for p in self._pages()}
        pages = [ContextPage(p, tier, range(0), self.backend.placeholder_count(tier), stored[p].text_tokens,
                             stored[p].content_hash, self.views) for p, tier, _ in sorted(chosen)]
        if self.backend.has_model:
            self.encoder.encode(pages)
        return pages

    def prompt(self, question: str, chosen: list[tuple[int, str, float]],
               stored: dict[int, StoredPage] | None = None) -> NativePrompt:
        """BOS, each chosen page's placeholders + "\\n" (document order), then the question as a user turn."""
        pages = self.context_pages(chosen, stored)
        return self.backend.prompts().pages_then_question([(f"page {p.index}", p.embeds) for p in pages], question)

    @property
    def encoder(self) -> PageEncoder:
        if self._encoder is None:
            self._encoder = PageEncoder.for_session(self.backend, self.store, self.session)
        return self._encoder

