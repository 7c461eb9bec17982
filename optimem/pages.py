"""The page pipeline between the store and a model: page views and vision tokens.

- `PageViews`: a session's page masters and tier views, derived once and kept in small LRU caches,
  so a page shown at the same tier on the next turn costs nothing and a master PNG is read from the
  store and decoded only when one of its views is missing.
- `PageEncoder`: vision tokens of pages at their tiers, looked up hot (an LRU in this process under
  a byte budget: tensors the model encoded stay where it put them, those read back from the store
  are on the CPU and copied to the device by whoever uses them), then in the store's cache (codec
  bytes keyed by page hash, model and tier), and only then encoded: batched per tier, identical
  pages once, written back to both caches.

Chat memory, document QA and the native LangChain chat model all go through these two classes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from optimem.errors import CacheCorruptError, InputError
from optimem.ladders import ModelLadder

log = logging.getLogger(__name__)


def _nbytes(embeds: Any) -> int:
    nbytes = getattr(embeds, "nbytes", None)  # numpy, and torch >= 2.1
    return int(nbytes) if nbytes is not None else int(embeds.numel()) * int(embeds.element_size())


class _LRU(OrderedDict):
    def __init__(self, max_items: int) -> None:
        super().__init__()
        self.max_items = max_items

    def get_fresh(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.max_items:
            self.popitem(last=False)


class PageViews:
    """Masters and tier views of one session's pages. `load_png(index)` reads a master PNG (default:
    from `store`, the page rows of `session`).

    A view is derived from its master once: kept in this process (LRU) and, with a store, saved there
    as a lossless PNG beside the vision-token cache, so another process (or this one after eviction)
    reads a small PNG instead of decoding and resampling the master again. `many()` derives the views
    a context is missing in parallel (Pillow releases the GIL while it decodes and resamples)."""

    def __init__(self, ladder: ModelLadder, load_png: Callable[[int], bytes] | None = None, *, store: Any = None,
                 session: str | None = None, max_views: int = 512, max_masters: int = 4) -> None:
        self.ladder = ladder
        self._load_png = load_png or self._stored_png
        self._store, self._session = store, session
        self.max_masters = max_masters
        self._lock = threading.Lock()
        self._saving: list[Any] = []  # pending store writes of derived views
        self._views = _LRU(max_views)  # (content hash, tier) -> image
        self._masters = _LRU(max_masters)  # content hash -> decoded master

    def png(self, index: int) -> bytes:
        return self._load_png(index)

    def _stored_png(self, index: int) -> bytes:
        """A page's master PNG from the session's store (the loader unless one is given)."""
        (page,) = self._store.get_pages(self._session, index, index + 1) or [None]
        if page is None or not page.png:
            raise InputError(f"session {self._session!r} has no page {index}")
        return page.png

    def remember(self, content_hash: str, master) -> None:
        """A master just drawn (a page being sealed): its first views need no PNG read and decode."""
        with self._lock:
            self._masters.put(content_hash, master)

    def master(self, index: int, content_hash: str):
        with self._lock:
            image = self._masters.get_fresh(content_hash)
        if image is None:
            image = _decode_png(self._load_png(index))
            with self._lock:
                self._masters.put(content_hash, image)
        return image

    def view(self, index: int, content_hash: str, tier: str):
        key = (content_hash, tier)
        with self._lock:
            image = self._views.get_fresh(key)
        if image is None:
            image = self._load_view(index, content_hash, tier)
            with self._lock:
                self._views.put(key, image)
        return image

    def many(self, refs: Sequence[tuple[int, str, str]]) -> list[Any]:
        """The views of (page index, content hash, tier) triples, the missing ones derived in parallel."""
        with self._lock:
            missing = list({(i, h, t) for i, h, t in refs if (h, t) not in self._views})
        # one worker per page: a page's tiers one after the other, so its master is decoded once
        by_page: dict[str, list[tuple[int, str, str]]] = {}
        for r in missing:
            by_page.setdefault(r[1], []).append(r)
        if len(by_page) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(by_page), max(2, os.cpu_count() or 2))) as pool:
                list(pool.map(lambda rs: [self.view(*r) for r in rs], by_page.values()))
        return [self.view(*r) for r in refs]

    def _stored_key(self, content_hash: str, tier: str) -> str | None:
        if self._store is None:
            return None
        from optimem.store import cache_key

        return cache_key(content_hash, f"view:{self.ladder.model}", tier)

    def _load_view(self, index: int, content_hash: str, tier: str):
        spec = self.ladder.spec(tier)
        if spec.mode == "native":  # the model's own processor resamples the master
            return self.master(index, content_hash)
        key = self._stored_key(content_hash, tier)
        if key is not None:
            blob = self._store.get_cache_blob(self._session, key)
            if blob is not None:
                try:
                    image = _decode_png(blob)
                    if image.size == (spec.size, spec.size):
                        return image
                    raise ValueError(f"a {image.size} image where {spec.size} px was expected")
                except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of refusing bad bytes
                    log.warning("discarding the stored %s view of page %s: %s", tier, content_hash[:12], exc)
                    self._store.delete_cache(self._session, key)
        image = self.ladder.view(self.master(index, content_hash), tier)
        if key is not None:  # saved off the caller's path: a lost write only costs a later derivation
            with self._lock:
                self._saving = [f for f in self._saving if not f.done()]
                self._saving.append(_writer().submit(self._save_view, key, image))
        return image

    def _save_view(self, key: str, image: Any) -> None:
        from optimem.renderers import png_bytes

        try:
            self._store.put_cache(self._session, key, png_bytes(image))
        except Exception as exc:  # noqa: BLE001 - a view is a cache entry; the page is still shown
            log.warning("could not keep a page view in the store: %s", exc)

    def flush(self) -> None:
        """Wait until the views derived so far are in the store."""
        with self._lock:
            pending, self._saving = self._saving, []
        for future in pending:
            future.result()


_WRITER: Any = None
_WRITER_LOCK = threading.Lock()


def _writer():
    """One background thread per process that saves derived views (PNG encode + store write)."""
    global _WRITER
    if _WRITER is None:
        with _WRITER_LOCK:  # two first calls at once would start two executors
            if _WRITER is None:
                from concurrent.futures import ThreadPoolExecutor

                _WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optimem-views")
    return _WRITER


def _decode_png(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


class VisionCache:
    """Vision tokens by (page hash, model, tier): hot in this process under `hot_bytes`, then the store."""

    def __init__(self, store: Any, session: str, model_id: str, *, hot_bytes: int = 1 << 30) -> None:
        self.store = store
        self.session = session
        self.model_id = model_id
        self.hot_bytes = hot_bytes
        self._hot: OrderedDict[str, Any] = OrderedDict()
        self._hot_size = 0

    def key(self, content_hash: str, tier: str) -> str:
        from optimem.store import cache_key

        return cache_key(content_hash, self.model_id, tier)

    def get(self, content_hash: str, tier: str) -> Any:
        key = self.key(content_hash, tier)
        if key in self._hot:
            self._hot.move_to_end(key)
            return self._hot[key]
        blob = self.store.get_cache_blob(self.session, key)
        if blob is None:
            return None
        from optimem.store import codec

        try:
            dtype, arr = codec.decode(blob, model=self.model_id, tier=tier, content_hash=content_hash)
        except CacheCorruptError as exc:
            log.warning("discarding the cached vision tokens of page %s at %s: %s", content_hash[:12], tier, exc)
            self.store.delete_cache(self.session, key)
            return None
        embeds = codec.to_torch(dtype, arr)
        self._keep_hot(key, embeds)
        return embeds

    def put(self, content_hash: str, tier: str, embeds: Any) -> None:
        from optimem.store import codec

        key = self.key(content_hash, tier)
        self.store.put_cache(self.session, key, codec.encode(embeds, model=self.model_id, tier=tier,
                                                             content_hash=content_hash))
        self._keep_hot(key, embeds)

    def _keep_hot(self, key: str, embeds: Any) -> None:
        size = _nbytes(embeds)
        if size > self.hot_bytes:
            return
        old = self._hot.pop(key, None)
        if old is not None:
            self._hot_size -= _nbytes(old)
        self._hot[key] = embeds
        self._hot_size += size
        while self._hot_size > self.hot_bytes:
            _, dropped = self._hot.popitem(last=False)
            self._hot_size -= _nbytes(dropped)


class PageEncoder:
    """Fills `embeds` of context pages through the caches; encodes what they miss, batched per tier.

    Calls are serialised by `lock` (a caller and a background worker encoding ahead share the caches),
    taken after the backend's `device_lock` (`held()`: the one order every encode takes them in, so an
    encode never runs during a generation or graph capture on the device); `encoded` counts the pages
    this encoder sent through the model."""

    def __init__(self, backend: Any, cache: VisionCache) -> None:
        self.backend = backend
        self.cache = cache
        self.lock = threading.RLock()
        # a backend written before `Backend.device_lock` shares no device with anything of ours
        self._device_lock = getattr(backend, "device_lock", None) or contextlib.nullcontext()
        self.encoded = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The device, then this encoder's caches: hold both across several `encode` calls, or to
        time how long a call waits for work in flight."""
        with self._device_lock, self.lock:
            yield

    @classmethod
    def for_session(cls, backend: Any, store: Any, session: str) -> "PageEncoder":
        """Hot vision tokens in this process, then the session's cache in the store, then the model."""
        return cls(backend, VisionCache(store, session, backend.model_id))

    def is_hot(self, content_hash: str, tier: str) -> bool:
        """Whether the page's vision tokens at `tier` are in the hot (device) cache: a lookup, no I/O."""
        return self.cache.key(content_hash, tier) in self.cache._hot

    def encode(self, pages: Sequence[Any]) -> None:
        with self.held():
            missing: dict[str, dict[str, list[Any]]] = {}
            for page in pages:
                embeds = self.cache.get(page.content_hash, page.tier)
                if embeds is not None:
                    page.embeds = embeds
                else:  # identical page images are encoded once
                    missing.setdefault(page.tier, {}).setdefault(page.content_hash, []).append(page)
            for tier, by_hash in missing.items():
                firsts = [group[0] for group in by_hash.values()]
                embeds = self.backend.encode([p.image() for p in firsts], tier)
                self.encoded += len(firsts)
                for h, emb in zip(by_hash, embeds):
                    self.cache.put(h, tier, emb)
                    for page in by_hash[h]:
                        page.embeds = emb
