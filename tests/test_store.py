"""Stores against SQLite and a real redis-server: atomicity, concurrency, isolation, cache integrity."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import tracemalloc

import numpy as np
import pytest

from optimem.bench.redis_local import LocalRedis
from optimem.errors import CacheCorruptError, ConfigError, SessionError, StoreError
from optimem.store import StoredPage, cache_key, open_store
from optimem.store import codec


def _page(i: int, text: str = "page") -> StoredPage:
    return StoredPage(i, [{"turn": i, "start": 0, "end": 4, "continued": False, "continues": False}], text, 3,
                      f"hash{i}", png=b"\x89PNG" + bytes([i % 256]) * 10)


def test_turns_pages_meta_round_trip(store_url):
    st = open_store(store_url)
    assert st.append_turns("s1", [{"role": "user", "content": "hello"}]) == [0]
    assert st.append_turns("s1", [{"role": "assistant", "content": "hi", "metadata": {"k": 1}},
                                  {"role": "user", "content": "光学"}]) == [1, 2]
    turns = st.get_turns("s1")
    assert [t.id for t in turns] == [0, 1, 2] and turns[1].metadata == {"k": 1} and turns[2].content == "光学"
    assert [t.id for t in st.get_turns("s1", 1, 2)] == [1]
    st.set_pinned("s1", 1, True)
    assert st.get_turns("s1", 1, 2)[0].pinned
    with pytest.raises(StoreError):
        st.set_pinned("s1", 99, True)
    st.put_pages("s1", [_page(0), _page(1)], meta={"open": [2, 0]})
    assert st.get_meta("s1") == {"open": [2, 0]}
    pages = st.get_pages("s1")
    assert [p.index for p in pages] == [0, 1] and pages[1].png.startswith(b"\x89PNG")
    assert st.get_pages("s1", with_png=False)[0].png is None
    st.set_floors("s1", {0: "small"})
    assert st.get_pages("s1", 0, 1)[0].floor == "small"
    assert "s1" in st.list_sessions()
    stats = st.stats("s1")
    assert stats["turns"] == 3 and stats["pages"] == 2 and stats["pages_by_floor"]["small"] == 1
    st.delete_session("s1")
    assert st.count_turns("s1") == 0 and st.get_meta("s1") == {}


def _writer(url: str, session: str, writer: int, n: int) -> None:
    st = open_store(url)
    for i in range(n):
        st.append_turns(session, [{"role": "user", "content": f"w{writer}-{i}"}])


def _check_concurrent(st, session: str, writers: int, n: int) -> None:
    turns = st.get_turns(session)
    assert len(turns) == writers * n, "a turn was lost"
    assert [t.id for t in turns] == list(range(writers * n)), "ids are not unique and dense"
    for w in range(writers):
        mine = [int(t.content.split("-")[1]) for t in turns if t.content.startswith(f"w{w}-")]
        assert mine == list(range(n)), f"writer {w}'s order was not preserved"


def test_sixteen_concurrent_threads(store_url):
    st = open_store(store_url)
    threads = [threading.Thread(target=_writer, args=(store_url, "conc", w, 25)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_concurrent(st, "conc", 16, 25)


def test_sixteen_concurrent_processes(store_url):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store_url, "procs", w, 10)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    _check_concurrent(open_store(store_url), "procs", 16, 10)


@pytest.mark.parametrize("bad", ["a:b", "*", "{x}", "x\ny", "", "x" * 129, "a b", "../etc"])
def test_session_ids_are_validated(store_url, bad):
    st = open_store(store_url)
    with pytest.raises(SessionError):
        st.append_turns(bad, [{"role": "user", "content": "x"}])
    with pytest.raises(SessionError):
        st.get_turns(bad)


def test_sessions_are_isolated(store_url):
    st = open_store(store_url)
    st.append_turns("alice", [{"role": "user", "content": "secret"}])
    st.append_turns("bob", [{"role": "user", "content": "hello"}])
    st.put_cache("alice", "k", b"x")
    assert [t.content for t in st.get_turns("bob")] == ["hello"]
    assert st.get_cache_blob("bob", "k") is None
    st.delete_session("bob")
    assert st.count_turns("alice") == 1


def test_codec_round_trip_and_corruption(store_url):
    st = open_store(store_url)
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    key = cache_key("h1", "m", "tiny")
    st.put_cache("c", key, codec.encode(arr, model="m", tier="tiny", content_hash="h1"))
    dtype, back = codec.decode(st.get_cache_blob("c", key), model="m", tier="tiny", content_hash="h1")
    assert dtype == "float32" and np.array_equal(back, arr)
    blob = st.get_cache_blob("c", key)
    with pytest.raises(CacheCorruptError, match="model"):
        codec.decode(blob, model="other", tier="tiny", content_hash="h1")
    with pytest.raises(CacheCorruptError, match="tier"):
        codec.decode(blob, model="m", tier="small", content_hash="h1")
    with pytest.raises(CacheCorruptError):
        codec.decode(blob[:-5], model="m", tier="tiny", content_hash="h1")
    flipped = bytearray(blob)
    flipped[-1] ^= 0xFF
    with pytest.raises(CacheCorruptError, match="checksum"):
        codec.decode(bytes(flipped), model="m", tier="tiny", content_hash="h1")
    with pytest.raises(CacheCorruptError):
        codec.decode(b"garbage", model="m", tier="tiny", content_hash="h1")


def test_codec_bfloat16_is_bit_exact():
    torch = pytest.importorskip("torch")
    t = torch.randn(2, 5, dtype=torch.bfloat16)
    blob = codec.encode(t, model="m", tier="base", content_hash="h")
    dtype, arr = codec.decode(blob, model="m", tier="base", content_hash="h")
    assert dtype == "bfloat16" and torch.equal(codec.to_torch(dtype, arr), t)


def test_huge_turn_and_ten_thousand_turns(store_url):
    st = open_store(store_url)
    huge = "x" * 5_000_000
    st.append_turns("big", [{"role": "user", "content": huge}])
    assert st.get_turns("big")[0].content == huge
    batch = [{"role": "user", "content": f"t{i}"} for i in range(10_000)]
    st.append_turns("many", batch[:5000])
    st.append_turns("many", batch[5000:])
    assert st.count_turns("many") == 10_000
    tracemalloc.start()
    window = st.get_turns("many", 9_990, 10_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [t.content for t in window] == [f"t{i}" for i in range(9_990, 10_000)]
    assert peak < 5 * 2**20  # a range read does not load the whole session


def test_unknown_store_url():
    with pytest.raises(ConfigError, match="sqlite"):
        open_store("mongodb://x")


def test_redis_stops_mid_write_and_recovers(tmp_path):
    server = LocalRedis(persistence="always").start()
    try:
        st = open_store(server.url + "?prefix=crash")
        st.append_turns("s", [{"role": "user", "content": f"before {i}"} for i in range(5)])
        errors: list[Exception] = []

        def loop() -> None:
            for i in range(100_000):
                try:
                    st.append_turns("s", [{"role": "user", "content": f"during {i}"},
                                          {"role": "assistant", "content": f"reply {i}"}])
                    st.put_pages("s", [_page(i % 50)], meta={"written": i})
                except StoreError as exc:
                    errors.append(exc)
                    return

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(0.3)
        server.stop()  # kill -9 while the writer is busy
        t.join(30)
        assert errors and "Redis" in str(errors[0])
        server.start()  # same port, same append-only file
        st2 = open_store(server.url + "?prefix=crash")
        turns = st2.get_turns("s")
        # every batch was atomic: turns come in (user, assistant) pairs after the first five
        assert len(turns) >= 5 and (len(turns) - 5) % 2 == 0
        assert [t.id for t in turns] == list(range(len(turns)))
        assert st2.append_turns("s", [{"role": "user", "content": "after"}]) == [len(turns)]
    finally:
        server.cleanup()


def test_redis_keys_are_namespaced_hash_tagged_and_expire(redis_server):
    st = open_store(redis_server.url + "?prefix=app1&ttl=120")
    st.append_turns("sess-1", [{"role": "user", "content": "x"}])
    st.put_cache("sess-1", "k", b"v")
    keys = sorted(k.decode() for k in st.client.keys("app1:*"))
    assert keys and all(k.startswith("app1:{sess-1}:") for k in keys)
    assert all(0 < st.client.ttl(k) <= 120 for k in keys)
    other = open_store(redis_server.url + "?prefix=app2")
    assert other.count_turns("sess-1") == 0  # another application prefix sees nothing
