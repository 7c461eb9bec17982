"""Reliability of the stores against a real redis-server and SQLite files: idempotent appends after
ambiguous failures, writers that cannot go backwards, pins that keep turn bytes, isolation of
prefixes, documents and sessions deleted without a trace, hostile inputs, hardened cache decoding."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import random
import sqlite3
import threading
import time
import uuid

import numpy as np
import pytest

from optimem.bench.redis_local import LocalRedis
from optimem.errors import CacheCorruptError, ConfigError, InputError, StoreError
from optimem.store import StoredPage, cache_key, codec, open_store
from optimem.store.base import tier_rank

LADDER = ["large", "base", "small", "tiny"]


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=r{uuid.uuid4().hex[:12]}"


def _page(i: int, text: str = "page", h: str | None = None) -> StoredPage:
    return StoredPage(i, [{"turn": i, "start": 0, "end": 4, "continued": False, "continues": False}], text, 3,
                      h or f"hash{i}", png=b"\x89PNG" + bytes([i % 256]) * 10)


# -- idempotent appends ------------------------------------------------------------------------------
def test_keyed_append_is_a_no_op_on_retry(url):
    st = open_store(url)
    assert st.append_turns("s", [{"role": "user", "content": "a", "key": "k1"}]) == [0]
    assert st.append_turns("s", [{"role": "user", "content": "a", "key": "k1"}]) == [0]
    # a batch mixing a retried turn with new ones appends only the new ones, ids stay dense
    assert st.append_turns("s", [{"role": "user", "content": "a", "key": "k1"},
                                 {"role": "assistant", "content": "b", "key": "k2"},
                                 {"role": "user", "content": "c"}]) == [0, 1, 2]
    assert [t.content for t in st.get_turns("s")] == ["a", "b", "c"]
    assert st.append_turns("other", [{"role": "user", "content": "x", "key": "k1"}]) == [0]  # keys are per session
    with pytest.raises(InputError, match="key"):
        st.append_turns("s", [{"role": "user", "content": "x", "key": ""}])


def test_sigstop_past_the_timeout_then_retry_with_the_same_key_stores_once(tmp_path):
    """The request reaches a stalled Redis, the client times out, Redis later applies it: the error
    says it may have been applied, and the retry with the same key is a no-op."""
    server = LocalRedis(persistence="none").start()
    try:
        st = open_store(server.url + "?prefix=amb&timeout=0.5")
        st.append_turns("s", [{"role": "user", "content": "warm-up"}])  # a pooled, open connection
        turn = {"role": "user", "content": "exactly once", "key": "req-42"}
        server.pause()
        try:
            with pytest.raises(StoreError, match="may have been applied"):
                st.append_turns("s", [turn])
        finally:
            server.resume()
        deadline = time.time() + 10
        while True:  # the retry loop a caller would run
            try:
                ids = st.append_turns("s", [turn])
                break
            except StoreError:
                assert time.time() < deadline
                time.sleep(0.1)
        contents = [t.content for t in st.get_turns("s")]
        assert contents.count("exactly once") == 1 and ids == [1]
        # a failure before anything was sent says nothing was written
        server.stop()
        with pytest.raises(StoreError, match="nothing was written"):
            st.append_turns("s", [{"role": "user", "content": "x"}])
    finally:
        server.cleanup()


# -- pins keep turn bytes -----------------------------------------------------------------------------
def test_pin_and_unpin_keep_the_turn_as_written(url):
    st = open_store(url)
    meta = {"big": 1234567890123456789, "empty": [], "obj": {}, "f": 0.1 + 0.2, "s": "光学\u2028"}
    created = 1764500000.1234567
    st.append_turns("p", [{"role": "user", "content": "keep me", "metadata": meta, "created": created}])
    before = st.get_turns("p")[0]
    st.set_pinned("p", 0, True)
    pinned = st.get_turns("p")[0]
    st.set_pinned("p", 0, False)
    after = st.get_turns("p")[0]
    assert pinned.pinned and not after.pinned
    for t in (pinned, after):
        assert t.metadata == meta and type(t.metadata["empty"]) is list and t.created == created
        assert t.content == before.content
    assert st.snapshot("p").pinned == frozenset()
    st.set_pinned("p", 0, True)
    assert st.snapshot("p").pinned == {0}


# -- Redis prefix, listing, persistence ---------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["tenant?", "a*", "[ab]", "x\\y", "a{b}", "a:b", "", "x" * 65, "a b"])
def test_redis_prefix_with_glob_or_tag_characters_is_refused(redis_server, prefix):
    from urllib.parse import quote

    with pytest.raises(ConfigError, match="prefix"):
        open_store(f"{redis_server.url}?prefix={quote(prefix)}")


def test_redis_list_sessions_sees_only_its_own_prefix(redis_server):
    a = open_store(redis_server.url + "?prefix=tenantA")
    b = open_store(redis_server.url + "?prefix=tenantAB")
    a.append_turns("one", [{"role": "user", "content": "x"}])
    b.append_turns("two", [{"role": "user", "content": "y"}])
    # a key that looks like a session of the prefix but is not one (bad id) is not listed either
    a.client.set("tenantA:{bad id}:meta", "{}")
    assert a.list_sessions() == ["one"] and b.list_sessions() == ["two"]


def test_redis_warns_when_nothing_is_persisted(redis_server, caplog):
    st = open_store(redis_server.url + "?prefix=persist")  # the fixture runs without AOF and RDB
    with caplog.at_level(logging.WARNING, logger="optimem.store.redis"):
        st.count_turns("s")
    assert st.persistence() == {"aof": False, "rdb": False}
    assert any("appendonly" in r.getMessage() for r in caplog.records)
    durable = LocalRedis(persistence="always").start()
    try:
        caplog.clear()
        st2 = open_store(durable.url + "?prefix=persist")
        with caplog.at_level(logging.WARNING, logger="optimem.store.redis"):
            st2.count_turns("s")
        assert st2.persistence()["aof"] is True and not caplog.records
    finally:
        durable.cleanup()


# -- writers that cannot go backwards -------------------------------------------------------------------
def test_seal_pages_is_compare_and_set(url):
    st = open_store(url)
    assert st.next_page("s") == 0
    assert st.seal_pages("s", [_page(0), _page(1)], expect=0, meta={"open": [2, 0]})
    # a writer that read the counter before that seal renders the same pages: refused, nothing written
    assert not st.seal_pages("s", [_page(0, "stale")], expect=0, meta={"open": [1, 0]})
    assert st.next_page("s") == 2 and st.get_meta("s") == {"open": [2, 0]}
    assert [p.text for p in st.get_pages("s")] == ["page", "page"]
    with pytest.raises(InputError):
        st.seal_pages("s", [_page(5)], expect=2)
    assert st.allocate_pages("s", 3) == 2 and st.next_page("s") == 5
    assert not st.seal_pages("s", [_page(2)], expect=2)


def test_floors_only_coarsen_with_a_ladder(url):
    st = open_store(url)
    st.seal_pages("f", [_page(i) for i in range(4)], expect=0)
    assert st.set_floors("f", {0: "small", 1: "base", 9: "tiny"}, ladder=LADDER) == {0: "small", 1: "base"}
    # an older plan (sharper tiers, or none) changes nothing; a coarser one applies
    assert st.set_floors("f", {0: "base", 1: None, 2: "large"}, ladder=LADDER) == {0: "small", 1: "base", 2: "large"}
    assert st.set_floors("f", {0: "dropped", 1: "tiny"}, ladder=LADDER) == {0: "dropped", 1: "tiny"}
    assert st.set_floors("f", {0: "large"}, ladder=LADDER) == {0: "dropped"}
    # a tier from another model's ladder counts as the coarsest tier of this one
    st.set_floors("f", {3: "gundam"})
    assert st.set_floors("f", {3: "small"}, ladder=LADDER) == {3: "gundam"}
    assert st.set_floors("f", {3: "dropped"}, ladder=LADDER) == {3: "dropped"}
    # without a ladder (an explicit restore) floors are set as given
    assert st.set_floors("f", {0: None}) == {0: None}
    assert st.get_floors("f") == {1: "tiny", 2: "large", 3: "dropped"}
    # rewriting a page (put_pages) keeps its floor
    st.put_pages("f", [_page(1, "again")])
    assert st.get_pages("f", 1, 2)[0].floor == "tiny"
    with pytest.raises(ConfigError):
        st.set_floors("f", {0: "tiny"}, ladder=["a", "a"])


def test_update_meta_merges_and_set_meta_replaces(url):
    st = open_store(url)
    st.update_meta("m", {"a": 1})
    st.update_meta("m", {"b": [1, 2]})
    assert st.get_meta("m") == {"a": 1, "b": [1, 2]}
    assert st.update_meta("m", {"a": None}) == {"b": [1, 2]}
    st.set_meta("m", {"c": 3})
    assert st.get_meta("m") == {"c": 3}


def _interleaver(url: str, session: str, seed: int, seconds: float, out) -> None:
    """One writer of a shared session: appends keyed turns, seals pages by compare-and-set, lets
    random pages fade, and checks that what it reads never goes backwards."""
    rng = random.Random(seed)
    st = open_store(url)
    seen_pages = 0
    seen_floor: dict[int, int] = {}
    regress_pages = regress_floors = errors = 0
    acked: list[str] = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            key = f"{seed}-{len(acked)}"
            st.append_turns(session, [{"role": "user", "content": key, "key": key}])
            acked.append(key)
            snap = st.snapshot(session)
            if snap.next_page < seen_pages:
                regress_pages += 1
            seen_pages = max(seen_pages, snap.next_page)
            for i, f in snap.floors.items():
                r = tier_rank(f, LADDER)
                if r < seen_floor.get(i, -1):
                    regress_floors += 1
                seen_floor[i] = max(seen_floor.get(i, -1), r)
            n = snap.next_page
            if rng.random() < 0.5:
                st.seal_pages(session, [_page(n, f"w{seed}")], expect=n, meta={"open": [n + 1, 0], f"w{seed}": n})
            if n:
                pick = {rng.randrange(n): rng.choice([None, *LADDER, "dropped"]) for _ in range(3)}
                st.set_floors(session, pick, ladder=LADDER)
        except Exception:  # noqa: BLE001 - counted: the test wants none
            errors += 1
    out.put((seed, regress_pages, regress_floors, errors, acked))


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_interleaved_writers_never_go_backwards(kind, tmp_path, request):
    if kind == "sqlite":
        u = f"sqlite:///{tmp_path / 'i.db'}"
    else:
        u = request.getfixturevalue("redis_server").url + f"?prefix=i{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_interleaver, args=(u, "shared", w, 4.0, out)) for w in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(r[1] for r in results) == 0, "page count went backwards"
    assert sum(r[2] for r in results) == 0, "a floor went back to a sharper tier"
    assert sum(r[3] for r in results) == 0, "a writer got an error"
    st = open_store(u)
    acked = [k for r in results for k in r[4]]
    contents = [t.content for t in st.get_turns("shared")]
    assert sorted(contents) == sorted(acked) and len(set(contents)) == len(contents)
    pages = st.get_pages("shared", with_png=False)
    assert [p.index for p in pages] == list(range(st.next_page("shared"))) and len(pages) > 0


# -- documents and sessions deleted without a trace -----------------------------------------------------
def _leftovers(st, session: str) -> int:
    if hasattr(st, "client"):
        return len(list(st.client.scan_iter(match=f"{st.prefix}:{{{session}}}:*")))
    conn = sqlite3.connect(st._target)
    n = 0
    for table, col in (("turns", "session"), ("turn_keys", "session"), ("pages", "session"), ("page_png", "session"),
                       ("page_counter", "session"), ("docs", "session"), ("cache", "session"), ("sessions", "id")):
        n += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {col} = ?", (session,)).fetchone()[0]
    return n


def test_documents_replace_and_delete(url):
    st = open_store(url)
    first = st.allocate_pages("d", 3)
    st.put_pages("d", [_page(first + i, "A", f"ha{i}") for i in range(3)])
    st.put_doc("d", "manual", {"first_page": first, "pages": 3, "sha": "v1"})
    other = st.allocate_pages("d", 2)
    st.put_pages("d", [_page(other + i, "B", f"hb{i}") for i in range(2)])
    st.put_doc("d", "notes", {"first_page": other, "pages": 2})
    for i in range(3):
        st.put_cache("d", cache_key(f"ha{i}", "m", "tiny"), b"blob")
    st.put_cache("d", cache_key("hb0", "m", "tiny"), b"blob")
    # re-ingest of a changed document: new pages first, then the record swaps and the old pages go
    new = st.allocate_pages("d", 2)
    st.put_pages("d", [_page(new + i, "A2", f"hc{i}") for i in range(2)])
    st.put_doc("d", "manual", {"first_page": new, "pages": 2, "sha": "v2"}, drop_pages=range(first, first + 3))
    assert [p.text for p in st.get_pages("d", with_png=False)] == ["B", "B", "A2", "A2"]
    assert st.get_docs("d")["manual"]["sha"] == "v2"
    assert st.get_cache_blob("d", cache_key("ha0", "m", "tiny")) is None
    assert st.get_cache_blob("d", cache_key("hb0", "m", "tiny")) == b"blob"
    assert st.delete_doc("d", "notes") and not st.delete_doc("d", "notes")
    assert [p.text for p in st.get_pages("d", with_png=False)] == ["A2", "A2"]
    assert st.get_cache_blob("d", cache_key("hb0", "m", "tiny")) is None and list(st.get_docs("d")) == ["manual"]
    with pytest.raises(InputError):
        st.put_doc("d", "bad id!", {"first_page": 0, "pages": 1})


def test_delete_session_leaves_nothing(url):
    st = open_store(url)
    st.append_turns("gone", [{"role": "user", "content": "x", "key": "k", "pinned": True}])
    st.seal_pages("gone", [_page(0)], expect=0, meta={"open": [1, 0]})
    st.set_floors("gone", {0: "tiny"}, ladder=LADDER)
    st.put_doc("gone", "doc", {"first_page": 0, "pages": 1})
    st.put_cache("gone", cache_key("hash0", "m", "tiny"), b"x")
    st.append_turns("kept", [{"role": "user", "content": "y"}])
    assert _leftovers(st, "gone") > 0
    st.delete_session("gone")
    assert _leftovers(st, "gone") == 0
    assert "gone" not in st.list_sessions() and st.count_turns("kept") == 1
    assert st.append_turns("gone", [{"role": "user", "content": "new", "key": "k"}]) == [0]  # keys went too


# -- hostile inputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("turn,match", [
    ({"role": "user", "content": "bad \ud800 text"}, "surrogate"),
    ({"role": "user", "content": "ok", "metadata": {"k": "\udfff"}}, "surrogate"),
    ({"role": "user", "content": "ok", "metadata": {"n": float("nan")}}, "JSON"),
    ({"role": "user", "content": 5}, "string"),
    ({"role": "user", "content": "ok", "metadata": []}, "mapping"),
    ({"role": "user", "content": "ok", "created": "yesterday"}, "created"),
])
def test_bad_turns_are_refused_and_nothing_is_stored(url, turn, match):
    st = open_store(url)
    with pytest.raises(InputError, match=match):
        st.append_turns("h", [{"role": "user", "content": "first"}, turn])
    assert st.count_turns("h") == 0


def test_json_nested_thousands_deep_is_refused(url):
    st = open_store(url)
    deep: dict = {}
    cur = deep
    for _ in range(5000):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(InputError, match="nests deeper"):
        st.append_turns("h", [{"role": "user", "content": "x", "metadata": deep}])
    with pytest.raises(InputError, match="nests deeper"):
        st.update_meta("h", {"deep": deep})
    assert st.count_turns("h") == 0


# -- cache decoding ---------------------------------------------------------------------------------------
def test_cache_decode_fuzz_only_ever_raises_cache_corrupt():
    rng = random.Random(1234)
    arr = np.arange(48, dtype=np.float32).reshape(4, 12)
    blob = codec.encode(arr, model="m", tier="tiny", content_hash="h")
    head_end = codec.decode_header(blob)["_offset"]
    crashes, corrupt, intact = [], 0, 0
    for trial in range(3000):
        b = bytearray(blob)
        kind = trial % 3
        if kind == 0:  # one bit flip, mostly in the header where parsing happens
            pos = rng.randrange(head_end) if rng.random() < 0.8 else rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncation
            b = b[: rng.randrange(len(b))]
        else:  # several flips
            for _ in range(rng.randint(2, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        try:
            dtype, back = codec.decode(bytes(b), model="m", tier="tiny", content_hash="h")
        except CacheCorruptError:
            corrupt += 1
            continue
        except Exception as exc:  # noqa: BLE001 - what the test counts
            crashes.append(f"{type(exc).__name__}: {exc}")
            continue
        assert dtype == "float32" and np.array_equal(back, arr)  # a flip that changed nothing of meaning
        intact += 1
    assert crashes == [], crashes[:5]
    assert corrupt > 2900


def test_cache_header_oddities():
    arr = np.zeros((2, 2), dtype=np.float32)
    good = codec.encode(arr, model="m", tier="tiny", content_hash="h")
    n = codec.decode_header(good)["_offset"] - len(codec.MAGIC) - 4

    def with_header(h) -> bytes:
        head = json.dumps(h).encode()
        return codec.MAGIC + len(head).to_bytes(4, "big") + head + good[len(codec.MAGIC) + 4 + n:]

    base = json.loads(good[len(codec.MAGIC) + 4: len(codec.MAGIC) + 4 + n])
    for bad in ([1, 2], {**base, "dtype": "V8"}, {**base, "dtype": "object"}, {**base, "shape": [-1, 4]},
                {**base, "shape": "22"}, {**base, "shape": [2.0, 2]}, {**base, "model": None}, "x"):
        with pytest.raises(CacheCorruptError):
            codec.decode(with_header(bad), model="m", tier="tiny", content_hash="h")
    with pytest.raises(CacheCorruptError, match="implausible"):
        codec.decode(codec.MAGIC + (2**31).to_bytes(4, "big") + b"{}", model="m", tier="tiny", content_hash="h")


# -- SQLite specifics ------------------------------------------------------------------------------------
def test_in_memory_sqlite_under_concurrency():
    st = open_store("sqlite://")
    errors: list[Exception] = []

    def work(w: int) -> None:
        for i in range(25):
            try:
                st.append_turns("m", [{"role": "user", "content": f"{w}-{i}"}])
                st.get_turns("m", 0, 5)
                st.put_cache("m", f"k{w}", b"x")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and st.count_turns("m") == 200
    assert [t.id for t in st.get_turns("m")] == list(range(200))


def _opener(path: str, w: int) -> None:
    st = open_store(f"sqlite:///{path}")
    st.append_turns("open", [{"role": "user", "content": str(w)}])


def test_many_processes_opening_a_new_sqlite_file(tmp_path):
    path = str(tmp_path / "new.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_opener, args=(path, w)) for w in range(12)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 12
    assert open_store(f"sqlite:///{path}").count_turns("open") == 12


def _p50_append_ms(st, session: str, n: int = 150) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        st.append_turns(session, [{"role": "user", "content": f"probe {i}"}])
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2] * 1000


def test_sqlite_append_cost_does_not_grow_with_the_session(tmp_path):
    st = open_store(f"sqlite:///{tmp_path / 'grow.db'}")
    for session, n in (("small", 1_000), ("large", 100_000)):
        for start in range(0, n, 20_000):
            st.append_turns(session, [{"role": "user", "content": f"t{i}"} for i in range(start, min(n, start + 20_000))])
    # interleave the measurements so machine load hits both alike; best of three rounds
    small = min(_p50_append_ms(st, "small") for _ in range(3))
    large = min(_p50_append_ms(st, "large") for _ in range(3))
    assert large < 1.5 * small + 0.05, f"p50 append: {small:.3f} ms at 1k turns, {large:.3f} ms at 100k"
    st.set_pinned("large", 7, True)

    def snap_ms(session: str) -> float:  # what every sync and plan reads first
        times = []
        for _ in range(60):
            t = time.perf_counter()
            st.snapshot(session, turns_from=1 << 62, pages_from=1 << 62)
            times.append(time.perf_counter() - t)
        return sorted(times)[30] * 1000

    small, large = min(snap_ms("small") for _ in range(3)), min(snap_ms("large") for _ in range(3))
    assert large < 1.5 * small + 0.05, f"p50 snapshot: {small:.3f} ms at 1k turns, {large:.3f} ms at 100k"


def test_langchain_history_reads_back_after_a_pin(url):
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage, HumanMessage

    from optimem.langchain import OpticalChatMessageHistory

    h = OpticalChatMessageHistory("lc", url)
    sent = [HumanMessage("hi", additional_kwargs={"big": 1234567890123456789, "tools": []}, id="m1"),
            AIMessage("hello", response_metadata={"created": 1764500000.123456789, "empty": {}})]
    h.add_messages(sent)
    h.store.set_pinned("lc", 0, True)
    assert h.messages == sent


def test_corrupt_cache_entries_are_discarded_and_re_encoded(tmp_path):
    """3,000 bit flips and truncations of stored entries through the memory's vision-token cache:
    no exception, each corrupt entry deleted, and the page's tokens written again."""
    torch = pytest.importorskip("torch")
    from optimem.pages import VisionCache

    st = open_store(f"sqlite:///{tmp_path / 'vc.db'}")
    embeds = torch.arange(64, dtype=torch.float32).reshape(4, 16)
    good = codec.encode(embeds, model="m", tier="tiny", content_hash="h")
    key = cache_key("h", "m", "tiny")
    rng = random.Random(77)
    discarded = 0
    for trial in range(3000):
        b = bytearray(good)
        if trial % 2:
            b = b[: rng.randrange(len(b))]
        else:
            b[rng.randrange(min(len(b), 200))] ^= 1 << rng.randrange(8)
        st.put_cache("s", key, bytes(b))
        cache = VisionCache(st, "s", "m")
        got = cache.get("h", "tiny")
        if got is None:
            discarded += 1
            assert st.get_cache_blob("s", key) is None
            cache.put("h", "tiny", embeds)  # what the page encoder does next
            assert st.get_cache_blob("s", key) == good
        else:
            assert torch.equal(got, embeds)
    assert discarded > 2900


def test_sqlite_open_waits_for_a_locked_new_file(tmp_path):
    """Opening a store (WAL set-up, schema) while another connection holds the database locked waits
    within the busy timeout instead of failing."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE x (a)")
    holder.execute("BEGIN EXCLUSIVE")
    opened: list = []

    def open_it() -> None:
        try:
            st = open_store(f"sqlite:///{path}")
            st.append_turns("s", [{"role": "user", "content": "x"}])
            opened.append(st.count_turns("s"))
        except Exception as exc:  # noqa: BLE001
            opened.append(exc)

    t = threading.Thread(target=open_it)
    t.start()
    time.sleep(0.5)
    holder.execute("COMMIT")
    t.join(30)
    assert opened == [1]


def test_sqlite_reads_pages_written_before_pngs_had_their_own_table(tmp_path):
    path = tmp_path / "legacy.db"
    st = open_store(f"sqlite:///{path}")
    st.put_pages("s", [_page(0)])
    conn = sqlite3.connect(path)  # what the previous schema wrote: the PNG inside the page row
    conn.execute("INSERT INTO pages (session, idx, spans, text, text_tokens, hash, png, floor, meta) "
                 "VALUES ('s', 1, '[]', 'old', 3, 'hold', ?, 'tiny', '{}')", (b"\x89PNGold",))
    conn.commit()
    pages = open_store(f"sqlite:///{path}").get_pages("s")
    assert [p.png for p in pages] == [_page(0).png, b"\x89PNGold"] and pages[1].floor == "tiny"
    assert st.stats("s")["png_bytes"] == len(_page(0).png) + len(b"\x89PNGold")
