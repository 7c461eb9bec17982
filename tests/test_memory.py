"""OpticalMemory: packing, planning, floors, cache, concurrency, the demo."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from optimem.backends import LayoutBackend
from optimem.errors import InputError, ModelError
from optimem.memory import ContextPage, ContextTurn, OpticalMemory
from optimem.store import cache_key, open_store
from optimem.renderers import RenderSettings, render_transcript

SMALL = RenderSettings(page_px=320, font_px=14, margin_px=8)


def _conv(n: int, words: int = 40):
    return [{"role": "user" if i % 2 == 0 else "assistant",
             "content": f"Turn {i}: " + " ".join(f"memory{(i * 7 + j) % 97} fades" for j in range(words + i % 17))}
            for i in range(n)]


class CountingBackend(LayoutBackend):
    """The v1 ladder with a fake encoder that records every call (no model weights needed)."""

    model_id = "fake-encoder"
    has_model = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def encode(self, images, tier):
        self.calls.append((tier, len(images)))
        n = self.placeholder_count(tier)
        return [np.full((n, 4), float(np.asarray(img).mean()), dtype=np.float32) for img in images]


def test_pages_sealed_incrementally_match_a_full_render(tmp_path):
    conv = _conv(40)
    mem = OpticalMemory("s", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL)
    for t in conv:
        mem.add(t["role"], t["content"])
        mem.sync()
    full = [p for p in render_transcript(conv, SMALL) if p.full]
    stored = mem.store.get_pages("s")
    assert [p.content_hash for p in stored] == [p.content_hash for p in full]
    assert [[(s["turn"], s["start"], s["end"]) for s in p.spans] for p in stored] == \
        [[(s.turn, s.start, s.end) for s in p.spans] for p in full]
    assert mem.sync() == 0  # nothing new: no page rendered twice


def test_add_is_fast_and_does_not_render(tmp_path):
    mem = OpticalMemory("s", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL)
    ids = mem.add_many(_conv(30))
    assert ids == list(range(30))
    assert mem.store.count_pages("s") == 0  # rendering waits for sync/context
    with pytest.raises(InputError, match="role"):
        mem.add("robot", "x")
    with pytest.raises(InputError, match="string"):
        mem.add("user", 5)  # type: ignore[arg-type]


def test_context_fits_budget_and_floors_are_persisted(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    mem = OpticalMemory("s", url, render=SMALL)
    mem.add_many(_conv(120))
    ctx = mem.context(3000)
    assert ctx.plan.total_tokens <= 3000
    assert any(isinstance(i, ContextPage) for i in ctx.items) and isinstance(ctx.items[-1], ContextTurn)
    assert ctx.items[-1].id == 119
    floors = {p.index: p.floor for p in mem.store.get_pages("s", with_png=False)}
    # only age floors are persisted; this call's budget squeeze leaves no trace
    assert {i: f for i, f in floors.items() if f} == ctx.plan.floors()
    # a new process (fresh memory object) with strict decay never plans those pages sharper
    from optimem.policies import Policy

    again = OpticalMemory("s", url, render=SMALL, policy=Policy(fill_budget=False))
    order = {"large": 0, "base": 1, "small": 2, "tiny": 3, "dropped": 4}
    for p in again.context(100_000).pages:
        assert order[p.tier] >= order[floors[p.index] or "large"]
    img = ctx.pages[0].image()
    assert img.size[0] in (512, 640, 1024, 1280)


def test_pins_keep_turns_as_text(tmp_path):
    mem = OpticalMemory("s", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL)
    mem.add_many(_conv(80))
    mem.pin(3)
    ctx = mem.context(4000)
    assert 3 in {t.id for t in ctx.turns}
    mem.unpin(3)
    ctx = mem.context(4000)
    assert 3 not in {t.id for t in ctx.turns}


def test_encoding_is_cached_per_tier_and_corruption_is_recovered(tmp_path):
    backend = CountingBackend()
    mem = OpticalMemory("s", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL, backend=backend)
    mem.add_many(_conv(60))
    ctx = mem.context(6000)
    first_calls = list(backend.calls)
    assert first_calls and all(p.embeds is not None for p in ctx.pages)
    assert sum(n for _, n in first_calls) == len({(p.content_hash, p.tier) for p in ctx.pages})  # batched, once each
    ctx2 = mem.context(6000)
    assert backend.calls == first_calls  # warm cache: nothing encoded again
    assert all(np.array_equal(np.asarray(a.embeds), np.asarray(b.embeds)) for a, b in zip(ctx.pages, ctx2.pages))
    victim = ctx.pages[0]
    key = cache_key(victim.content_hash, backend.model_id, victim.tier)
    blob = mem.store.get_cache_blob("s", key)
    mem.store.put_cache("s", key, blob[:-7])  # truncated entry
    mem.context(6000)
    assert backend.calls == first_calls  # this process holds the page's vision tokens hot
    mem = OpticalMemory("s", mem.store, render=SMALL, backend=backend)  # another process meets the entry
    mem.context(6000)
    assert backend.calls[-1] == (victim.tier, 1)  # discarded and re-encoded, only that page


def test_layout_backend_has_no_model(tmp_path):
    mem = OpticalMemory("s", "sqlite://", render=SMALL)
    mem.add_many(_conv(5))
    with pytest.raises(ModelError):
        mem.chat("hi")


def test_concurrent_adds_through_memories_lose_nothing(redis_server):
    url = redis_server.url + "?prefix=memconc"

    def writer(w: int) -> None:
        m = OpticalMemory("shared", url, render=SMALL)
        for i in range(20):
            m.add("user", f"w{w}-{i}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mem = OpticalMemory("shared", url, render=SMALL)
    turns = mem.turns()
    assert len(turns) == 320 and [t.id for t in turns] == list(range(320))
    ctx = mem.context(4000)
    assert ctx.plan.total_tokens <= 4000


def test_async_variants(tmp_path):
    import asyncio

    async def go():
        mem = OpticalMemory("s", f"sqlite:///{tmp_path / 'm.db'}", render=SMALL)
        await mem.aadd_many(_conv(20))
        await mem.aadd("user", "last")
        return await mem.acontext(3000)

    ctx = asyncio.run(go())
    assert ctx.items[-1].content == "last"


def test_ten_thousand_turns(tmp_path):
    mem = OpticalMemory("big", f"sqlite:///{tmp_path / 'm.db'}")
    mem.add_many([{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} says a few words"} for i in range(10_000)])
    ctx = mem.context(8192)
    assert ctx.plan.total_tokens <= 8192 and ctx.items[-1].id == 9999


def test_demo_runs_and_reports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "optimem", "demo", "--out", str(tmp_path / "d"), "--limit", "120",
                          "--budget", "4096", "--json"], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert doc["turns"] == 120 and len(doc["calls"]) == 4
    assert all(c["context_tokens"] <= 4096 for c in doc["calls"])
    assert doc["calls"][-1]["history_text_tokens"] > doc["calls"][-1]["context_tokens"]
    assert (tmp_path / "d" / "contact_sheet.png").exists()
    assert "torch" not in doc  # embedded defaults: no model


def test_a_new_process_does_not_tokenize_the_history_again(tmp_path, monkeypatch):
    from optimem.renderers import tokens as renderer_tokens

    url = f"sqlite:///{tmp_path / 'm.db'}"
    mem = OpticalMemory("s", url, render=SMALL)
    mem.add_many(_conv(80))
    first = mem.context(3000)
    counted = []
    real = renderer_tokens.count_tokens_batch

    def counting(texts):
        counted.append(len(texts))
        return real(texts)

    monkeypatch.setattr(renderer_tokens, "count_tokens_batch", counting)
    again = OpticalMemory("s", url, render=SMALL).context(3000)  # another process, same session
    assert counted == [] and again.plan.to_json() == first.plan.to_json()
    mem.store.put_cache("s", "stats|turn-tokens|v2", b"[[1, 0], {\"bad\": 1}]")  # damaged: counted afresh
    damaged = OpticalMemory("s", url, render=SMALL).context(3000)
    assert sum(counted) == 80 and damaged.plan.to_json() == first.plan.to_json()
