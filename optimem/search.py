"""BM25 over a session's page texts (`bm25s`), built once per set of pages and kept: in the process,
and in the store as raw arrays behind a JSON header (never pickle), so another process or the next
run loads it instead of re-indexing. The index is named by a digest of the pages it covers (index and
content hash of each), so an ingest, a re-ingest or a forgotten document makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)
_MAGIC = b"OMBM25\x01"
_ARRAYS = ("data", "indices", "indptr")


def pages_digest(pages: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for p in pages:
        h.update(f"{p.index}:{p.content_hash};".encode())
    return h.hexdigest()[:32]


def _tokens(texts: list[str]) -> Any:
    import bm25s

    return bm25s.tokenize(texts, return_ids=False, show_progress=False)


class PageIndex:
    """BM25 over page texts; `search(question, k)` -> [(page index, score)], best first, score > 0."""

    def __init__(self, retriever: Any, page_ids: list[int], digest: str) -> None:
        self.retriever = retriever
        self.page_ids = page_ids
        self.digest = digest

    @classmethod
    def build(cls, pages: Sequence[Any]) -> "PageIndex":
        import bm25s

        retriever = bm25s.BM25()
        texts = [p.text or "" for p in pages]
        retriever.index(bm25s.tokenize(texts, show_progress=False), show_progress=False)
        return cls(retriever, [p.index for p in pages], pages_digest(pages))

    def search(self, question: str, k: int) -> list[tuple[int, float]]:
        k = min(k, len(self.page_ids))
        if k < 1:
            return []
        query = _tokens([question])
        if not any(t in self.retriever.vocab_dict for t in query[0]):
            return []  # no word of the question occurs in any page
        docs, scores = self.retriever.retrieve(query, k=k, show_progress=False)
        return [(self.page_ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    # -- bytes, for the store -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        r = self.retriever
        arrays = [r.scores[name] for name in _ARRAYS]
        header = {"digest": self.digest, "pages": self.page_ids, "num_docs": int(r.scores["num_docs"]),
                  "vocab": r.vocab_dict, "k1": r.k1, "b": r.b, "delta": r.delta, "method": r.method,
                  "idf_method": r.idf_method,
                  "arrays": [{"name": n, "dtype": a.dtype.str, "n": int(a.shape[0])} for n, a in zip(_ARRAYS, arrays)]}
        head = json.dumps(header, ensure_ascii=False).encode()
        return _MAGIC + struct.pack("<I", len(head)) + head + b"".join(a.tobytes() for a in arrays)

    @classmethod
    def from_bytes(cls, blob: bytes, digest: str) -> "PageIndex | None":
        """The index stored in `blob`, or None when it is for other pages or malformed."""
        import bm25s
        import numpy as np

        try:
            if not blob.startswith(_MAGIC):
                return None
            (n,) = struct.unpack_from("<I", blob, len(_MAGIC))
            start = len(_MAGIC) + 4
            header = json.loads(blob[start:start + n])
            if header.get("digest") != digest:
                return None
            pos = start + n
            scores: dict[str, Any] = {"num_docs": int(header["num_docs"])}
            for spec in header["arrays"]:
                dtype = np.dtype(spec["dtype"])
                if dtype.kind not in "iuf":
                    return None
                size = dtype.itemsize * int(spec["n"])
                scores[spec["name"]] = np.frombuffer(blob[pos:pos + size], dtype=dtype).copy()
                if scores[spec["name"]].shape[0] != int(spec["n"]):
                    return None
                pos += size
            retriever = bm25s.BM25(k1=header["k1"], b=header["b"], delta=header["delta"], method=header["method"],
                                   idf_method=header["idf_method"])
            if retriever.method in retriever.methods_requiring_nonoccurrence:
                return None  # their extra array is not stored; the default (lucene) needs none
            retriever.nonoccurrence_array = None
            retriever.scores = scores
            retriever.vocab_dict = {str(k): int(v) for k, v in header["vocab"].items()}
            retriever.unique_token_ids_set = set(retriever.vocab_dict.values())
            return cls(retriever, [int(i) for i in header["pages"]], digest)
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            log.warning("discarding a malformed stored BM25 index: %s", exc)
            return None
