"""The decode engine (optimem.model.engine) against the plain transformers loop (`generate_eager`):
exact token ids over 64 steps on prompts with spliced pages (exact-length and bucketed/masked
forms, chunked prefill), the no-repeat n-gram ban, stop tokens, KV reuse between calls (ids and
image identity), bounded sessions, capacity growth past the window, streaming, bad input, and
concurrent callers. A CUDA test checks the captured graphs against the same step run eagerly."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from optimem.errors import ModelError
from optimem.model import DeepseekOCR, tiny_config

NO_EOS = -1  # an id no step can produce: every run takes all its steps


@pytest.fixture(scope="module")
def model():
    return DeepseekOCR.random(tiny_config(), seed=1)


@pytest.fixture(scope="module")
def pages(model):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (320, 320, 3), dtype=np.uint8)) for _ in range(2)]
    return list(model.encode_pages(imgs, "tiny"))


def _prompt(model, pages, seed=0, tail=(5, 6, 7)):
    rng = np.random.default_rng(seed)
    img = model.config.image_token_id
    return ([0] + rng.integers(2, 1000, 30).tolist() + [img] * 73 + rng.integers(2, 1000, 20).tolist()
            + [img] * 73 + list(tail))


@pytest.fixture(scope="module")
def eager_runs(model, pages):
    """The plain loop's 64 steps on the spliced-page prompt, per n-gram size (computed once)."""
    ids = _prompt(model, pages)
    return ids, {n: model.generate_eager(ids, pages, max_new_tokens=64, no_repeat_ngram_size=n, eos_token_id=NO_EOS)
                 for n in (20, 3)}


@pytest.mark.parametrize("form", [{}, {"bucketed": True, "prefill_chunk": 48}, {"bucketed": True, "fused": True}])
def test_engine_matches_eager_for_64_steps_on_spliced_pages(model, pages, eager_runs, form):
    model.configure_engine(**form)
    ids, refs = eager_runs
    for n, ref in refs.items():
        new = model.generate(ids, pages, max_new_tokens=64, no_repeat_ngram_size=n, eos_token_id=NO_EOS, reuse=False)
        assert len(ref) == 64
        assert new == ref, f"n={n}: first divergence at step {next(i for i, (a, b) in enumerate(zip(new, ref)) if a != b)}"
    stats = model.last_generation
    assert stats.new_tokens == 64 and stats.prompt_tokens == len(ids) and stats.prefill_tokens == len(ids)


@pytest.mark.parametrize("n,window,white", [(3, None, None), (2, None, None), (4, 12, None), (3, None, (1, 2))])
def test_device_ngram_table_matches_the_python_rule(model, n, window, white):
    """The engine's choice step on synthetic logits over a 5-token alphabet (bans nearly every step)
    against `_banned_ngrams` (with the window and whitelist applied the vLLM way), for 200 steps."""
    from optimem.model.decoding import _banned_ngrams

    eng = model.configure_engine(bucketed=True)
    rng = np.random.default_rng(n)
    seq = rng.integers(0, 5, 30).tolist()
    eng._setup_ngram(n, window, white)
    banned_steps = 0
    with torch.inference_mode():
        eng.seq[: len(seq)] = torch.tensor(seq)
        eng._fill_keys(len(seq))
        eng.pos.fill_(len(seq))
    for _ in range(200):
        logits = torch.full((eng.vocab,), -1e9)
        logits[:5] = torch.from_numpy(rng.standard_normal(5)).float()
        scan = seq[-window:] if window else seq
        banned = [t for t in _banned_ngrams(scan, n) if not white or t not in white]
        scores = logits.clone()
        scores[banned] = float("-inf")
        expect = int(scores.argmax())
        with torch.inference_mode():
            eng._select(logits, eng._bucket(len(seq)))
        assert int(eng.out_tok) == expect, f"step {len(seq)}: banned {sorted(set(banned))}"
        banned_steps += bool(banned)
        seq.append(expect)
    assert banned_steps > 5


def test_stop_tokens_end_the_reply_like_eos(model, pages):
    model.configure_engine()
    ids = _prompt(model, pages, seed=1)
    free = model.generate_eager(ids, pages, max_new_tokens=12, eos_token_id=NO_EOS)
    stop = free[7]
    expect = free[: free.index(stop)]
    assert model.generate_eager(ids, pages, max_new_tokens=12, eos_token_id=stop) == expect
    assert model.generate(ids, pages, max_new_tokens=12, eos_token_id=stop) == expect
    assert model.generate(ids, pages, max_new_tokens=12, stop_token_ids=[NO_EOS, stop]) == expect
    # decode time per token counts the steps taken: reading the stop token took one
    st = model.last_generation
    assert st.new_tokens == len(expect) and st.decode_steps == len(expect)
    model.generate(ids, pages, max_new_tokens=12, eos_token_id=NO_EOS)
    assert model.last_generation.new_tokens == 12 and model.last_generation.decode_steps == 11
    assert model.generate(ids, pages, max_new_tokens=0) == []


def test_kv_reuse_prefills_only_what_changed(model, pages):
    model.configure_engine(prefill_chunk=40)
    ids = _prompt(model, pages, seed=2)
    first = model.generate(ids, pages, max_new_tokens=8, eos_token_id=NO_EOS, session="s")
    assert model.last_generation.reused_tokens == 0
    # next turn: the same prompt, the reply, then new text
    ids2 = ids + first + [1, 9, 10, 11]
    second = model.generate(ids2, pages, max_new_tokens=16, eos_token_id=NO_EOS, session="s")
    assert model.last_generation.reused_tokens == len(ids) + len(first) - 1  # the last reply token's KV was never computed
    assert second == model.generate_eager(ids2, pages, max_new_tokens=16, eos_token_id=NO_EOS)
    # an equal-valued but different page tensor is a different page: reuse stops where it starts
    swapped = [pages[0], pages[1].clone()]
    model.generate(ids2, swapped, max_new_tokens=4, eos_token_id=NO_EOS, session="s")
    assert model.last_generation.reused_tokens == ids2.index(model.config.image_token_id) + 73 + 20  # page 2
    # with caller keys, equal keys are the same page
    model.generate(ids2, pages, max_new_tokens=4, eos_token_id=NO_EOS, session="s", image_keys=["a", "b"])
    model.generate(ids2, swapped, max_new_tokens=4, eos_token_id=NO_EOS, session="s", image_keys=["a", "b"])
    assert model.last_generation.reused_tokens == len(ids2) - 1
    # a changed token early on
    ids3 = list(ids2)
    ids3[5] += 1
    out3 = model.generate(ids3, pages, max_new_tokens=8, eos_token_id=NO_EOS, session="s")
    assert model.last_generation.reused_tokens == 5
    assert out3 == model.generate_eager(ids3, pages, max_new_tokens=8, eos_token_id=NO_EOS)


def test_sessions_are_parked_and_bounded(model, pages):
    eng = model.configure_engine(max_sessions=1)
    prompts = {s: _prompt(model, pages, seed=10 + i) for i, s in enumerate("abc")}
    for s, ids in prompts.items():
        model.generate(ids, pages, max_new_tokens=4, eos_token_id=NO_EOS, session=s)
    assert len(eng._parked) == 1  # "b" parked, "a" released, "c" in the working cache
    model.generate(prompts["b"], pages, max_new_tokens=4, eos_token_id=NO_EOS, session="b")
    assert model.last_generation.reused_tokens == len(prompts["b"]) - 1
    out = model.generate(prompts["a"], pages, max_new_tokens=4, eos_token_id=NO_EOS, session="a")
    assert model.last_generation.reused_tokens == 0
    assert out == model.generate_eager(prompts["a"], pages, max_new_tokens=4, eos_token_id=NO_EOS)
    mem = eng.memory()
    assert mem["owner"] == "a" and list(mem["parked_bytes"]) == ["b"]  # "c" was the least recently used
    assert mem["parked_bytes"]["b"] == (len(prompts["b"]) + 3) * eng.kv_bytes_per_token  # its KV only, not the window
    eng.release("b")
    assert eng.memory()["parked_bytes"] == {}


def test_capacity_grows_past_the_window():
    cfg = tiny_config()
    small = DeepseekOCR.random(replace(cfg, text=replace(cfg.text, max_position_embeddings=64)), seed=3)
    ids = [0] + list(range(10, 110))
    eng = small.engine
    assert eng.capacity == 64
    out = small.generate(ids, [], max_new_tokens=20, eos_token_id=NO_EOS)
    assert eng.capacity == 128
    assert out == small.generate_eager(ids, [], max_new_tokens=20, eos_token_id=NO_EOS)


def test_windowed_ban_through_generate(model, pages):
    model.configure_engine()
    ids = _prompt(model, pages, seed=4)
    kw = dict(max_new_tokens=16, eos_token_id=NO_EOS, no_repeat_ngram_size=3, reuse=False)
    full = model.generate(ids, pages, **kw)
    assert model.generate(ids, pages, ngram_window=10_000, **kw) == full  # a window over everything


def test_stream_pieces_join_to_the_text(model, pages):
    model.configure_engine()
    ids = _prompt(model, pages, seed=5)
    pieces = list(model.stream_text({"input_ids": ids, "image_embeds": pages}, max_new_tokens=20, eos_token_id=NO_EOS))
    text = model.generate_text({"input_ids": ids, "image_embeds": pages}, max_new_tokens=20, eos_token_id=NO_EOS)
    assert "".join(pieces) == text and len(pieces) > 1
    # a prompt dict may carry the KV session and page keys (what the backend passes)
    keyed = {"input_ids": ids, "image_embeds": pages, "session": "dict", "image_keys": ["p0", "p1"]}
    assert model.generate_text(keyed, max_new_tokens=20, eos_token_id=NO_EOS) == text
    model.generate_text(keyed, max_new_tokens=2, eos_token_id=NO_EOS)
    assert model.last_generation.session == "dict" and model.last_generation.reused_tokens == len(ids) - 1
    assert not any(p.endswith("\ufffd") for p in pieces[:-1])


def test_bad_input_is_refused(model, pages):
    ids = _prompt(model, pages)
    with pytest.raises(ModelError, match="146 image placeholders but the images bring 73"):
        model.generate(ids, pages[:1], max_new_tokens=2)
    img = model.config.image_token_id
    split = [0] + [img] * 40 + [5] + [img] * 33 + [6]
    with pytest.raises(ModelError, match="not contiguous"):
        model.generate(split, pages[:1], max_new_tokens=2)
    with pytest.raises(ModelError, match="over the engine's limit"):
        model.generate(ids, pages, max_new_tokens=2, no_repeat_ngram_size=40)
    with pytest.raises(ModelError, match="image keys"):
        model.generate(ids, pages, max_new_tokens=2, image_keys=["only one"])
    with pytest.raises(ModelError, match="at least one prompt token"):
        model.generate([], [], max_new_tokens=2)
    # a refused call leaves the engine usable
    assert len(model.generate(ids, pages, max_new_tokens=3, eos_token_id=NO_EOS)) == 3


def test_concurrent_callers_get_their_own_answers(model, pages):
    model.configure_engine()
    prompts = [_prompt(model, pages, seed=20 + i) for i in range(3)]
    expect = [model.generate(p, pages, max_new_tokens=6, eos_token_id=NO_EOS, reuse=False) for p in prompts]
    got: dict[int, list[int]] = {}

    def worker(i: int) -> None:
        got[i] = model.generate(prompts[i], pages, max_new_tokens=6, eos_token_id=NO_EOS, session=f"t{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(3)] == expect


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_steps_match_the_eager_step():
    m = DeepseekOCR.random(tiny_config(), seed=1, device="cuda", dtype="float32")
    ids = [0] + list(range(10, 400))
    m.configure_engine(graphs=False, bucketed=True, fused=False, expert_kernel=False)
    ref = m.generate(ids, [], max_new_tokens=64, eos_token_id=NO_EOS, no_repeat_ngram_size=3)
    # compiled elementwise chains and the Triton expert kernel (the prefill as the reference's; the
    # padded graphed prefill has its own test below)
    eng = m.configure_engine(graphs=True, graph_prefill=False)
    assert eng.fused and eng._expert_kernel
    assert m.generate(ids, [], max_new_tokens=64, eos_token_id=NO_EOS, no_repeat_ngram_size=3) == ref
    assert m.last_generation.graphs
    assert all(c.enabled for c in eng._fx.values())  # nothing fell back to the uncompiled function


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_queued_steps_stop_and_reuse_like_the_eager_step():
    """With graphs the next step is queued before a token is read: a stop token still ends the reply
    there, and the next call reuses exactly the KV the state claims."""
    m = DeepseekOCR.random(tiny_config(), seed=1, device="cuda", dtype="float32")
    ids = [0] + list(range(10, 400))
    m.configure_engine(graphs=False, bucketed=True, fused=False, expert_kernel=False)
    ref = m.generate(ids, [], max_new_tokens=40, eos_token_id=NO_EOS, reuse=False)
    stop = ref[12]
    k = ref.index(stop)
    follow = ids + ref[:k] + [5, 6, 7]
    ref2 = m.generate(follow, [], max_new_tokens=20, eos_token_id=NO_EOS, reuse=False)
    m.configure_engine(graphs=True)
    assert m.generate(ids, [], max_new_tokens=40, eos_token_id=stop, session="s") == ref[:k]
    assert m.generate(follow, [], max_new_tokens=20, eos_token_id=NO_EOS, session="s") == ref2
    assert m.last_generation.reused_tokens == len(ids) + k


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphed_padded_prefill_matches_its_eager_form():
    """The short prefill replayed as a CUDA graph computes what the same padded prefill computes
    eagerly, for a whole prompt and after a reused prefix (other starts, same graph)."""
    m = DeepseekOCR.random(tiny_config(), seed=1, device="cuda", dtype="bfloat16")
    ids = [0] + list(range(10, 400))
    more = ids + list(range(900, 1000))
    assert m.configure_engine().graph_prefill  # the default on CUDA in bf16
    out = {}
    for graphs in (False, True):
        eng = m.configure_engine(graphs=graphs, bucketed=True, graph_prefill=True, fused=False, expert_kernel=False)
        with torch.inference_mode():
            x = m.build_inputs_embeds(ids, [])
            a = eng._prefill(x, 0).clone()
            y = m.build_inputs_embeds(more, [])[:, len(ids):]
            b = eng._prefill(y, len(ids)).clone()
        out[graphs] = (a, b)
        assert not graphs or len(eng._pgraphs) == 2
    for u, v in zip(out[False], out[True]):
        torch.testing.assert_close(u, v, rtol=1e-2, atol=1e-2)
    plain = m.configure_engine(graphs=False, bucketed=True, graph_prefill=False, fused=False, expert_kernel=False)
    with torch.inference_mode():
        ref = plain._prefill(m.build_inputs_embeds(ids, []), 0)
    torch.testing.assert_close(ref.float(), out[True][0].float(), rtol=5e-2, atol=5e-2)
    m.configure_engine()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_expert_kernel_matches_the_torch_gather():
    from optimem.model import moe_kernel

    if not moe_kernel.available():
        pytest.skip("no triton")
    torch.manual_seed(0)
    w = torch.randn(16, 96, 80, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(80, device="cuda", dtype=torch.bfloat16)
    xs = torch.randn(3, 80, device="cuda", dtype=torch.bfloat16)
    idx = torch.tensor([5, 0, 15], device="cuda")
    ref = (w[idx].float() @ x.float())
    assert torch.allclose(moe_kernel.expert_gemv(w, x, idx, shared_input=True).float(), ref, rtol=1e-2, atol=1e-2)
    ref2 = torch.einsum("knj,kj->kn", w[idx].float(), xs.float())
    assert torch.allclose(moe_kernel.expert_gemv(w, xs, idx, shared_input=False).float(), ref2, rtol=1e-2, atol=1e-2)


def test_e2e_live_bench_runs_the_product_on_a_tiny_model(tmp_path):
    """`optimem bench e2e` live part on CPU: every strategy, every phase recorded, optimem's context
    within its budget, the prefix strategy reusing the previous turn's KV."""
    import argparse

    from optimem.bench import e2e

    p = argparse.ArgumentParser()
    e2e.add_arguments(p)
    args = p.parse_args(["--tiny", "--parts", "live", "--live-histories", "4096", "--turns", "1",
                         "--reply-tokens", "3", "--plots", str(tmp_path)])
    out = e2e.run(args)["live"]
    rows = [r for r in out["turns"] if r.get("measured")]
    assert {r["strategy"] for r in rows} == {"optimem", "prefix", "full", "truncate"}
    opt = next(r for r in rows if r["strategy"] == "optimem")
    assert {"seal_ms", "plan_ms", "encode_wait_ms", "encode_ms", "pages_encoded", "plan_kept", "bg_ms", "prompt_ms",
            "prefill_ms", "decode_ms"} <= set(opt)
    assert opt["context_ms"] >= opt["seal_ms"] + opt["plan_ms"] + opt["encode_ms"] - 0.05
    assert set(out["targets"][str(4096 // 16)]) >= {"context_ms_p50", "ttft_ms_p50", "total_below_prefix_x"}
    assert opt["context_tokens"] <= 4096 // 4 and opt["decode_ms_per_token"] is not None
    prefix = next(r for r in rows if r["strategy"] == "prefix")
    assert prefix["reused_tokens"] > 0 and prefix["prefill_tokens"] < prefix["context_tokens"]
    assert next(r for r in rows if r["strategy"] == "full")["reused_tokens"] == 0
    assert "| optimem |" in e2e.live_table(out["summary"])
    assert (tmp_path / "e2e_live.png").stat().st_size > 1000


def test_buckets_are_eighths_of_the_next_power_of_two():
    """A bucketed step attends over the next multiple of 1/8 of the next power of two (>= 256), so a
    6.5k-token context reads 7k cache rows, not 8k; `buckets(n)` lists every bucket up to n once."""
    from optimem.model import DeepseekOCR, tiny_config

    eng = DeepseekOCR.random(tiny_config(), seed=1).configure_engine(bucketed=True, capacity=140_000)
    assert [eng._bucket(n) for n in (1, 256, 257, 4097, 6500, 7900, 8193, 30431)] == \
        [256, 256, 512, 5120, 7168, 8192, 10240, 32768]
    bs = eng.buckets(20_000)
    assert bs == sorted(set(bs)) and bs[-1] >= 20_000 and all(eng._bucket(b) == b for b in bs)
    assert all(eng._bucket(n) in bs for n in range(1, 20_000, 97))
    assert eng._bucket(eng.capacity + 5) == eng.capacity


def test_padded_prefill_matches_the_plain_prefill():
    """The padded short prefill (what CUDA replays as a graph) gives the plain prefill's tokens, for a
    whole prompt and for a turn appended after a reused prefix."""
    from optimem.model import DeepseekOCR, tiny_config

    m = DeepseekOCR.random(tiny_config(), seed=2)
    ids = [0] + list(range(200, 500))
    more = ids + list(range(900, 1000))
    m.configure_engine()
    ref = m.generate(ids, [], max_new_tokens=12, eos_token_id=NO_EOS, reuse=False)
    ref2 = m.generate(more, [], max_new_tokens=12, eos_token_id=NO_EOS, reuse=False)
    eng = m.configure_engine(graph_prefill=True, bucketed=True)
    assert m.generate(ids, [], max_new_tokens=12, eos_token_id=NO_EOS, session="p") == ref
    assert m.generate(more, [], max_new_tokens=12, eos_token_id=NO_EOS, session="p") == ref2
    assert m.last_generation.reused_tokens == len(ids) and eng._pbuf  # the appended 100 rows went padded
    m.configure_engine()
