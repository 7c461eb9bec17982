"""OpticalMemory under concurrency and hostile sizes, against SQLite files and a real redis-server:
several processes interleaving add/context on one session never move the session backwards, a
retried add with the same key stores once, concurrent acontext calls on one instance do not race."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
import uuid

import pytest

from optimem import OpticalMemory
from optimem.errors import InputError
from optimem.store import open_store
from optimem.store.base import tier_rank
from optimem.policies import Policy, Schedule

WORDS = ("booking reference flight seat window aisle invoice total refund policy meeting agenda notes "
         "server restart deploy rollback latency budget quarterly forecast").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _worker(url: str, seed: int, seconds: float, out) -> None:
    rng = random.Random(seed)
    # a short decay so that pages reach every tier, dropped included, within seconds
    mem = OpticalMemory("shared", url, policy=Policy(schedule=Schedule("turns", (3, 6, 10, 16))))
    ladder = mem.backend.ladder.names
    seen_pages, seen_floor = 0, {}
    stats = {"adds": 0, "contexts": 0, "page_regress": 0, "floor_regress": 0, "shown_dropped": 0, "errors": [],
             "acked": []}
    warm = OpticalMemory(f"warm-{seed}", url)  # tokenizer, fonts: loaded before the clock starts
    warm.add("user", _text(rng, 50))
    warm.context(3000)
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            key = f"{seed}-{stats['adds']}"
            mem.add(rng.choice(["user", "assistant"]), f"[{key}] " + _text(rng, rng.randint(20, 160)), key=key)
            stats["adds"] += 1
            stats["acked"].append(key)
            before = mem.store.snapshot("shared", turns_from=1 << 62)
            ctx = mem.context(budget=1500)
            stats["contexts"] += 1
            for page in ctx.pages:  # a page the store already had as dropped never comes back
                if before.floors.get(page.index) == "dropped":
                    stats["shown_dropped"] += 1
            after = mem.store.snapshot("shared", turns_from=1 << 62)
            if after.next_page < seen_pages:
                stats["page_regress"] += 1
            seen_pages = max(seen_pages, after.next_page)
            for i, f in after.floors.items():
                r = tier_rank(f, ladder)
                if r < seen_floor.get(i, -1):
                    stats["floor_regress"] += 1
                seen_floor[i] = max(seen_floor.get(i, -1), r)
        except Exception as exc:  # noqa: BLE001 - counted: the test wants none
            stats["errors"].append(f"{type(exc).__name__}: {exc}")
    out.put(stats)


@pytest.mark.parametrize("kind,procs,seconds", [
    ("sqlite", 3, 5.0), ("redis", 3, 5.0),
    # the target run, in the default suite (about 50 s each on 2 cores)
    pytest.param("sqlite", 8, 40.0, marks=pytest.mark.slow),
    pytest.param("redis", 8, 40.0, marks=pytest.mark.slow),
])
def test_processes_interleaving_add_and_context_never_go_backwards(kind, procs, seconds, tmp_path, request):
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'mem.db'}"
    else:
        url = request.getfixturevalue("redis_server").url + f"?prefix=m{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(url, w, seconds, out)) for w in range(procs)]
    for p in workers:
        p.start()
    results = [out.get(timeout=seconds + 240) for _ in workers]
    for p in workers:
        p.join(30)
    errors = [e for r in results for e in r["errors"]]
    assert errors == [], errors[:3]
    for k in ("page_regress", "floor_regress", "shown_dropped"):
        assert sum(r[k] for r in results) == 0, k
    st = open_store(url)
    acked = sorted(k for r in results for k in r["acked"])
    stored = sorted(t.content.split("]")[0][1:] for t in st.get_turns("shared"))
    assert stored == acked  # every acknowledged turn, once
    pages = st.get_pages("shared", with_png=False)
    assert [p.index for p in pages] == list(range(len(pages))) and pages
    # pages tile the transcript in order: each starts where the previous one ended
    for a, b in zip(pages, pages[1:]):
        assert (b.spans[0]["turn"], b.spans[0]["start"]) >= (a.spans[-1]["turn"], a.spans[-1]["end"])
    assert sum(r["contexts"] for r in results) >= procs


def test_retried_add_with_the_same_key_stores_once(tmp_path):
    mem = OpticalMemory("k", f"sqlite:///{tmp_path / 'k.db'}")
    assert mem.add("user", "hello", key="msg-1") == 0
    assert mem.add("user", "hello", key="msg-1") == 0
    assert mem.add("user", "next") == 1
    assert [t.content for t in mem.turns()] == ["hello", "next"]


def test_lone_surrogate_in_a_turn_is_an_input_error(tmp_path):
    mem = OpticalMemory("u", f"sqlite:///{tmp_path / 'u.db'}")
    with pytest.raises(InputError, match="surrogate"):
        mem.add("user", "broken \udc80 bytes")
    assert mem.turns() == []


def test_concurrent_acontext_on_one_instance(tmp_path):
    mem = OpticalMemory("a", f"sqlite:///{tmp_path / 'a.db'}")
    rng = random.Random(5)
    for i in range(40):
        mem.add("user" if i % 2 == 0 else "assistant", _text(rng, 120))

    async def main() -> list:
        async def one(i: int):
            await mem.aadd("user", f"question {i} " + _text(rng, 30))
            return await mem.acontext(3000)

        return await asyncio.gather(*(one(i) for i in range(8)))

    ctxs = asyncio.run(main())
    assert len(ctxs) == 8 and all(c.plan.total_tokens <= 3000 for c in ctxs)
    assert mem.store.next_page("a") > 0


def test_pasted_log_then_questions_never_refuse(tmp_path):
    """A ~40k-character log in one turn: its full pages and its tail are sealed at once. While it is the
    newest turn (and while it is among the recent ones) its tail is raw text and its earlier part is
    on pages, instead of the whole log counting as text no 4096-token budget could hold."""
    rng = random.Random(9)
    words = "error warning info debug request response timeout retry".split()
    log = "\n".join(f"2026-11-30 12:{i // 60 % 60:02d}:{i % 60:02d} {rng.choice(words)} worker-{i % 7} "
                    + " ".join(rng.choice(words) for _ in range(8)) for i in range(440))
    assert len(log) > 40_000
    mem = OpticalMemory("log", f"sqlite:///{tmp_path / 'log.db'}")
    mem.add("user", "hi")
    mem.add("assistant", "hello")
    content = "here is my log:\n" + log
    mem.add("user", content)
    for q in range(11):
        if q:
            mem.add("assistant" if q % 2 else "user", f"question {q} about the log: " + _text(rng, 25))
        ctx = mem.context(4096)  # no PolicyError on any turn
        assert ctx.plan.total_tokens <= 4096
        loc = ctx.plan.where(2)
        shown = [p for p in ctx.pages if 2 in p.turns]
        assert shown and shown[0].index == 0, "the log's earlier part is on pages"
        if q < mem.policy.recent_turns:  # the log is among the recent turns: its tail is text
            assert loc.kind == "text"
            (tail,) = [t for t in ctx.turns if t.id == 2]
            assert 0 < tail.start < len(content) and content.endswith(tail.content)
            assert len(tail.content) > 1000 and content[:100] not in tail.content
            assert max(p.index for p in shown) < ctx.plan.segments[loc.segment].tail_from
            assert ctx.items.index(tail) == ctx.items.index(shown[-1]) + 1, "the tail follows its pages"
        else:
            assert loc.kind == "page"
    assert mem.store.get_meta("log")["open"] == [3, 0]  # the log lies wholly on sealed pages


def test_a_pinned_huge_turn_still_refuses_clearly(tmp_path):
    """A pin means "this turn whole, as text": a pinned turn no budget holds is an impossible setting,
    refused with a message that says so (a pin is never cut)."""
    from optimem.policies import PolicyError

    mem = OpticalMemory("pin", f"sqlite:///{tmp_path / 'pin.db'}")
    mem.add("user", "a note")
    big = mem.add("user", _text(random.Random(4), 6000), pinned=True)
    with pytest.raises(PolicyError, match="pinned.*never cut"):
        mem.context(4096)
    mem.unpin(big)
    assert mem.context(4096).plan.where(big).kind == "text"  # unpinned: its tail as text, the rest on pages


def _seal_big_turn(url: str, chars: int, out) -> None:
    import resource

    mem = OpticalMemory("big", url)
    mem.add("user", "warm up")
    mem.context(4096)  # fonts, tokenizer, first page drawn
    rng = random.Random(3)
    text = "\n".join(_text(rng, 12) for _ in range(chars // 80))
    mem.add("user", text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sealed = mem.sync()
    out.put((sealed, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024))


def test_a_large_turn_is_sealed_in_bounded_memory(tmp_path):
    """Pages are drawn and written in batches: sealing a turn of ~90 pages (each master is a 1.6 MB
    image) grows the process by far less than holding them all would."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_seal_big_turn, args=(f"sqlite:///{tmp_path / 'big.db'}", 300_000, out))
    p.start()
    sealed, grown_mb = out.get(timeout=300)
    p.join(30)
    assert sealed >= 60
    assert grown_mb < 30, f"sealing {sealed} pages grew the process by {grown_mb:.0f} MB"


def test_forget_the_session_and_chat_and_documents_stay_apart(tmp_path):
    from optimem.docqa import DocumentMemory

    url = f"sqlite:///{tmp_path / 'f.db'}"
    mem = OpticalMemory("chat", url)
    rng = random.Random(2)
    for _ in range(30):
        mem.add("user", _text(rng, 120))
    mem.context(3000)
    assert mem.store.next_page("chat") > 0
    doc = tmp_path / "d.md"
    doc.write_text("a document line\n" * 200)
    with pytest.raises(InputError, match="chat"):
        DocumentMemory("chat", url).ingest(doc)
    DocumentMemory("docs", url).ingest(doc)
    with pytest.raises(InputError, match="documents"):
        OpticalMemory("docs", url).context(3000)
    mem.forget()
    assert mem.store.list_sessions() == ["docs"] and mem.turns() == []
    mem.add("user", "a fresh start")
    assert mem.context(3000).turns[0].content == "a fresh start"
