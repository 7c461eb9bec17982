"""Document QA's BM25 index: built once per set of pages, kept in the store, rebuilt when pages change;
a question reads the session's pages once."""

from __future__ import annotations

import pytest

from optimem import search
from optimem.docqa import DocumentMemory
from optimem.errors import InputError
from optimem.search import PageIndex
from optimem.store import open_store


def _doc(n: int, word: str) -> str:
    return "\n\n".join(f"## Unit {word}-{i}\n\nThe {word} unit {i} uses gasket kit K{i:04d} and a torque of {20 + i} Nm."
                       for i in range(n))


@pytest.fixture
def builds(monkeypatch):
    calls = []
    real = PageIndex.build.__func__

    def counting(cls, pages):
        calls.append(len(pages))
        return real(cls, pages)

    monkeypatch.setattr(search.PageIndex, "build", classmethod(counting))
    return calls


def test_index_is_built_once_kept_in_the_store_and_rebuilt_after_ingest(tmp_path, builds):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    (tmp_path / "a.md").write_text(_doc(40, "pump"))
    DocumentMemory("d", url).ingest(tmp_path / "a.md")
    dm = DocumentMemory("d", url)
    first = dm.ask("gasket kit of pump unit 7", budget=2000)
    dm.ask("torque of pump unit 3", budget=2000)
    assert len(builds) == 1  # one index for both questions
    other = DocumentMemory("d", url)  # another process: loads the stored index
    assert other.ask("gasket kit of pump unit 7", budget=2000).pages == first.pages
    assert len(builds) == 1
    (tmp_path / "b.md").write_text(_doc(10, "valve"))
    other.ingest(tmp_path / "b.md")
    assert other.ask("valve unit 4 gasket", budget=2000).pages  # the new pages are searchable
    assert len(builds) == 2


def test_corrupt_stored_index_is_rebuilt(tmp_path, builds):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    (tmp_path / "a.md").write_text(_doc(20, "pump"))
    dm = DocumentMemory("d", url)
    dm.ingest(tmp_path / "a.md")
    dm.ask("pump unit 2", budget=2000)
    store = open_store(url)
    key = f"bm25|{dm._page_index.digest}"
    store.put_cache("d", key, store.get_cache_blob("d", key)[:-9])
    again = DocumentMemory("d", url).ask("pump unit 2", budget=2000)
    assert again.pages and len(builds) == 2


def test_a_question_reads_the_pages_once_and_bad_k_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    (tmp_path / "a.md").write_text(_doc(30, "pump"))
    dm = DocumentMemory("d", url)
    dm.ingest(tmp_path / "a.md")
    dm.ask("pump unit 2", budget=2000)
    reads = []
    real = dm.store.get_pages
    dm.store.get_pages = lambda *a, **kw: reads.append(a) or real(*a, **kw)
    ans = dm.ask("gasket kit of pump unit 5", budget=2000)
    assert ans.pages and len(reads) == 1
    images = [p.image() for p in dm.context_pages(ans.pages)]
    assert [im.size[0] for im in images] == [dm.backend.ladder.spec(t).size for _, t, _ in sorted(ans.pages)]
    with pytest.raises(InputError, match="k must be at least 1"):
        dm.ask("pump", k=0)
    assert dm.ask("zebra xylophone", budget=2000).pages == []
