"""`optimem bench e2e`: what a whole conversation costs on a GPU under four strategies.

Two steps, because the GPU machine measures and this library's renderer plans:
1. `--measure-curves OUT.json` (on the GPU): cost curves of the full-size DeepSeek-OCR decoder and
   DeepEncoder, random weights, bf16: prefill time vs context length; prefill of N new tokens after a
   cached prefix of P; one decode step vs context length; KV-cache bytes per token (measured from
   allocator growth); DeepEncoder seconds per page per tier at batch 32 (fused SAM attention).
   Decoder steps are replayed as CUDA graphs where capture works (what serving engines do for
   decode; it removes transformers' per-step Python and launch overhead, which otherwise dominates a
   one-token step); the eager times are kept beside them (`*_eager`), and `timing` says which was used.
2. `--curves CURVES.json` (anywhere): replay conversations turn by turn until their history reaches
   8k, 32k and 128k text tokens (a generated agent conversation, below), 128-token replies, under:
     full      full text, re-prefilled every turn;
     prefix    full text with the unchanged prefix's KV cache reused (only new tokens prefilled);
     truncate  the most recent turns that fit the budget, re-prefilled (the prefix shifts each turn);
     optimem   the real policies + renderer (pages sealed as turns arrive, default policy) under
               budgets 2k/4k/8k, KV prefix reused where the plan's leading segments did not change,
               each page encoded once per tier (encode time counted).
   Each turn's GPU time = prefill (from the curves, linear interpolation) + 128 decode steps at the
   context length + encoding of pages first shown at a tier. Strategies whose context passes 8,192
   positions (the decoder's trained window) are measured anyway and marked not usable.
Without either flag it runs the product live (`run_live`, the default): `OpticalMemory` with a
DeepSeek-OCR backend turn by turn (`--parts`: decode, exact, live), on the GPU.
"""

from __future__ import annotations

import argparse
import bisect
import json
from pathlib import Path

REPLY_TOKENS = 128
WINDOW = 8192
PREFILL_GRID = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
PREFIX_GRID = [1024, 4096, 8192, 16384, 32768, 65536, 131072]
NEW_GRID = [128, 512, 2048]
DECODE_GRID = [1024, 4096, 8192, 16384, 32768, 65536, 131072]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", default="decode,exact,live",
                   help="what the live run measures (comma list): decode (eager loop vs engine per context), "
                        "exact (first divergence of the engine from the eager loop, bf16), live (the product turn by turn)")
    p.add_argument("--decode-contexts", nargs="+", type=int, default=[1024, 8192, 32768, 131072])
    p.add_argument("--live-histories", nargs="+", type=int, default=[32768, 131072])
    p.add_argument("--turns", type=int, default=16, help="turns measured per history and strategy (live)")
    p.add_argument("--prefix-slack", type=float, default=None,
                   help="OpticalMemory's prefix_slack (live; default: the memory's own with a model backend)")
    p.add_argument("--budget", type=int, default=8192, help="optimem's context budget (live)")
    p.add_argument("--reply-tokens", type=int, default=REPLY_TOKENS, help="tokens generated per turn (live)")
    p.add_argument("--measure-curves", metavar="OUT", help="measure GPU cost curves into OUT (JSON)")
    p.add_argument("--curves", metavar="FILE", help="projection: replay with curves measured earlier")
    p.add_argument("--histories", nargs="+", type=int, default=[8192, 32768, 131072])
    p.add_argument("--budgets", nargs="+", type=int, default=[2048, 4096, 8192])
    p.add_argument("--plots", metavar="DIR", default=None, help="write PNG plots there")
    p.add_argument("--tiny", action="store_true", help="tiny config and short grids (CPU smoke test)")


# -- 1. curves on the GPU -------------------------------------------------------------------------
def measure_curves(tiny: bool = False) -> dict:
    import torch
    from transformers import DynamicCache

    from optimem.bench.gpu import device_info, graphed_time, time_fn
    from optimem.model import DeepseekOCR, DeepseekOCRConfig, tiny_config
    from optimem.model.preprocess import MODES
    from optimem.model.sam_attention import fuse_sam_attention

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = tiny_config() if tiny else DeepseekOCRConfig()
    model = DeepseekOCR.random(cfg, dtype="bfloat16" if device.type == "cuda" else "float32", device=str(device))
    lang, d = model.module.language, cfg.text.hidden_size
    scale = 64 if tiny else 1
    pre_grid = [x // scale for x in PREFILL_GRID]
    out: dict = {"device": device_info(device), "config": "tiny" if tiny else "full size, random weights, bf16"}

    def emb(n: int):
        return torch.randn(1, n, d, device=device, dtype=model.dtype)

    with torch.inference_mode():
        out["prefill"] = []
        for n in pre_grid:
            try:
                x = emb(n)
                fn = lambda: lang(inputs_embeds=x, use_cache=False)  # noqa: E731
                s, how = graphed_time(fn, device, min_seconds=0.3, max_iters=10)
                out["prefill"].append([n, s])
                out.setdefault("timing", {}).setdefault("prefill", how)
                out.setdefault("prefill_eager", []).append([n, time_fn(fn, device, min_seconds=0.3, max_iters=10)])
            except torch.OutOfMemoryError:
                out["prefill_oom_at"] = n  # longer contexts are extrapolated from the last two points
                break
            finally:
                x = fn = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        out["prefix_prefill"] = []
        out["decode_step"] = []
        out["decode_step_eager"] = []
        out.setdefault("timing", {})
        for p in [x // scale for x in PREFIX_GRID]:
            if "prefill_oom_at" in out and p >= out["prefill_oom_at"]:
                break
            cache = DynamicCache()
            base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
            lang(inputs_embeds=emb(p), past_key_values=cache, use_cache=True)
            if device.type == "cuda" and p == PREFIX_GRID[-1] // scale:
                out["kv_bytes_per_token_measured"] = (torch.cuda.memory_allocated() - base) / p
            for n in NEW_GRID:
                x = emb(n)
                pos = torch.arange(p, p + n, device=device)[None]
                s, how = graphed_time(_cached_step(lang, cache, x, pos), device, min_seconds=0.2, max_iters=8)
                out["prefix_prefill"].append([p, n, s])
                out["timing"].setdefault("prefix_prefill", how)
            one = emb(1)
            pos1 = torch.tensor([[p]], device=device)
            step = _cached_step(lang, cache, one, pos1)
            s, how = graphed_time(step, device, min_seconds=0.2, max_iters=30)
            out["decode_step"].append([p, s])
            out["timing"].setdefault("decode_step", how)
            out["decode_step_eager"].append([p, time_fn(step, device, min_seconds=0.2, max_iters=30)])
            del cache, step
            if device.type == "cuda":
                torch.cuda.empty_cache()
        out["encode_s_per_page"] = {}
        # optimem's encode path: SAM attention fused (no dense relative-position bias), pages batched 32
        fuse_sam_attention(model.module.encoder)
        for tier, (size, _) in MODES.items():
            px = torch.randn(32 if not tiny else 2, 3, size, size, device=device, dtype=model.dtype)
            out["encode_s_per_page"][tier] = time_fn(lambda: model.module.page_embeddings(px), device, min_seconds=0.3) / px.shape[0]
            px = None
        out["encode_method"] = f"page_embeddings, fused SAM attention, batch {32 if not tiny else 2}, mean over >= 0.3 s"
    t = cfg.text
    out["kv_bytes_per_token_formula"] = 2 * t.num_hidden_layers * t.num_key_value_heads * (t.hidden_size // t.num_attention_heads) * 2
    out["weights_bytes_bf16"] = 2 * 3_336_106_240
    return out


def _cached_step(lang, cache, x, pos):
    """One forward of `x` after the cache's prefix that leaves the cache as it was (the layers'
    tensors are put back, so a CUDA graph of it replays the same step on the same prefix)."""

    def step() -> None:
        saved = [(layer.keys, layer.values) for layer in cache.layers]
        lang(inputs_embeds=x, past_key_values=cache, use_cache=True, position_ids=pos)
        for layer, (k, v) in zip(cache.layers, saved):
            layer.keys, layer.values = k, v

    return step


# -- 2. replay on the CPU ----------------------------------------------------------------------------
def _interp(points: list[list[float]], x: float) -> float:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    if x <= xs[0]:
        return ys[0] * x / xs[0]
    i = min(bisect.bisect_left(xs, x), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else y1


class Costs:
    def __init__(self, curves: dict) -> None:
        self.c = curves
        self.kv = curves.get("kv_bytes_per_token_measured") or curves["kv_bytes_per_token_formula"]
        # prefill: the faster of the CUDA-graph replay and the eager run at each point (a serving engine
        # graphs short steps and runs long prefills eagerly; both were measured)
        eager = dict((n, t) for n, t in curves.get("prefill_eager", []))
        self.prefill_points = [[n, min(t, eager.get(n, t))] for n, t in curves["prefill"]]

    def prefill(self, n: int) -> float:
        return _interp(self.prefill_points, n) if n > 0 else 0.0

    def prefill_after(self, prefix: int, new: int) -> float:
        if prefix <= 0:
            return self.prefill(new)
        if new <= 0:
            return 0.0
        by_p: dict[int, list[list[float]]] = {}
        for p, n, s in self.c["prefix_prefill"]:
            by_p.setdefault(p, []).append([n, s])
        ps = sorted(by_p)
        # interpolate over new tokens at the two neighbouring prefixes, then over the prefix; below
        # the first measured prefix, towards no prefix at all (a plain prefill), not towards zero
        vals = [[0, self.prefill(new)]] + [[p, _interp(sorted(by_p[p]), new)] for p in ps if p > 0]
        return _interp(vals, prefix)

    def decode(self, ctx: int) -> float:
        return _interp(self.c["decode_step"], max(ctx, 1))

    def encode(self, tier: str) -> float:
        return self.c["encode_s_per_page"][tier]


def make_conversation(target_tokens: int) -> list[dict]:
    """An agent session grown from the bundled example's turns (cycled, each copy renumbered so no
    two turns are identical), user turns then a 128-token assistant reply, until `target_tokens`."""
    from importlib import resources

    from optimem.renderers import load_transcript
    from optimem.renderers.tokens import count_tokens

    base = [t for t in load_transcript(str(resources.files("optimem").joinpath("data/example_chat.jsonl"))) if t.role == "user"]
    filler = ("Noted, I will keep that in mind and come back to it when we plan the next step of the migration "
              "and the trip; the numbers you gave are recorded. ")
    turns: list[dict] = []
    total = 0
    i = 0
    while total < target_tokens:
        src = base[i % len(base)]
        user = f"[{i}] {src.content}"
        reply = (filler * 6)[: 128 * 4]
        for role, content in (("user", user), ("assistant", reply)):
            turns.append({"role": role, "content": content, "tokens": count_tokens(content)})
            total += turns[-1]["tokens"]
        i += 1
    return turns


def _segment_key(seg) -> tuple:
    return (seg.kind, seg.tier, seg.pages.start, seg.pages.stop, seg.turns.start, seg.turns.stop)


def replay(turns: list[dict], costs: Costs, budgets: list[int]) -> dict:
    from optimem.ladders import DEEPSEEK_OCR_V1
    from optimem.records import page_infos
    from optimem.policies import Planner, TurnInfo
    from optimem.renderers import Turn, paginate

    layouts = paginate([Turn(t["role"], t["content"]) for t in turns])
    # page k is sealed once the next page has begun: pagination is restartable, so this equals what
    # the memory seals turn by turn
    sealed_at = [layouts[k + 1].spans[0].turn + 1 if k + 1 < len(layouts) else None for k in range(len(layouts))]
    prefix_tok = [0]
    for t in turns:
        prefix_tok.append(prefix_tok[-1] + t["tokens"])
    n_user = len(turns) // 2
    strategies: dict[str, dict] = {}

    def record(name: str, ctx: int, gpu: float, held: int, window_ok: bool) -> None:
        s = strategies.setdefault(name, {"context_tokens": [], "gpu_s": [], "held_tokens": [], "usable": True,
                                         "history_tokens": [prefix_tok[2 * u + 1] for u in range(n_user)]})
        s["context_tokens"].append(ctx)
        s["gpu_s"].append(gpu)
        s["held_tokens"].append(held)
        s["usable"] = s["usable"] and window_ok

    prev_prefix_ctx = 0
    for u in range(n_user):
        upto = 2 * u + 1  # the user turn just arrived; the reply comes next
        hist = prefix_tok[upto]
        dec = sum(costs.decode(hist + j) for j in range(0, REPLY_TOKENS, 16)) * 16
        record("full", hist, costs.prefill(hist) + dec, hist, hist + REPLY_TOKENS <= WINDOW)
        record("prefix", hist, costs.prefill_after(prev_prefix_ctx, hist - prev_prefix_ctx) + dec, hist,
               hist + REPLY_TOKENS <= WINDOW)
        prev_prefix_ctx = hist + REPLY_TOKENS
    for budget in budgets:
        planner = Planner(DEEPSEEK_OCR_V1.costs)
        planner.extend([TurnInfo(i, t["tokens"]) for i, t in enumerate(turns[:1])])
        added_pages = 0
        encoded: set[tuple[int, str]] = set()
        prev_keys: list[tuple] = []
        name = f"optimem@{budget}"
        tname = f"truncate@{budget}"
        for u in range(n_user):
            upto = 2 * u + 1
            if u > 0:
                planner.extend([TurnInfo(i, turns[i]["tokens"]) for i in range(2 * u - 1, upto)])
            new_pages = [k for k in range(added_pages, len(layouts)) if sealed_at[k] is not None and sealed_at[k] <= upto]
            if new_pages:
                planner.extend(pages=page_infos([layouts[k] for k in new_pages], first_index=added_pages))
                added_pages += len(new_pages)
            avail = budget - REPLY_TOKENS
            plan = planner.plan(avail)
            planner.set_floors(plan.floors())
            keys = [_segment_key(s) for s in plan.segments if s.kind != "dropped"]
            toks = [s.tokens for s in plan.segments if s.kind != "dropped"]
            common = 0
            for a, b, t in zip(keys, prev_keys, toks):
                if a != b:
                    break
                common += t
            enc = 0.0
            for s in plan.segments:
                if s.kind == "page":
                    for p in s.pages:
                        if (p, s.tier) not in encoded:
                            encoded.add((p, s.tier))
                            enc += costs.encode(s.tier or "tiny")
            ctx = plan.total_tokens
            dec = sum(costs.decode(ctx + j) for j in range(0, REPLY_TOKENS, 16)) * 16
            record(name, ctx, costs.prefill_after(common, ctx - common) + dec + enc, plan.text_tokens_represented,
                   ctx + REPLY_TOKENS <= WINDOW)
            prev_keys = keys
            # truncation: the most recent turns that fit
            first = upto
            while first > 0 and prefix_tok[upto] - prefix_tok[first - 1] <= avail:
                first -= 1
            used = prefix_tok[upto] - prefix_tok[first]
            record(tname, used, costs.prefill(used) + sum(costs.decode(used + j) for j in range(0, REPLY_TOKENS, 16)) * 16,
                   used, True)
    return strategies


def summarise(strategies: dict, costs: Costs, history: int) -> list[dict]:
    hbm = 80e9
    rows = []
    for name, s in strategies.items():
        ctx = s["context_tokens"][-1]
        kv = (ctx + REPLY_TOKENS) * costs.kv
        rows.append({
            "history_tokens": history, "strategy": name, "usable_in_8k_window": s["usable"],
            "final_context_tokens": ctx, "mean_context_tokens": round(sum(s["context_tokens"]) / len(s["context_tokens"])),
            "final_turn_gpu_ms": round(1000 * s["gpu_s"][-1], 1),
            "decode_tokens_per_s": round(1 / costs.decode(ctx), 1),
            "kv_mib_per_session": round(kv / 2**20, 1),
            "sessions_in_80GB": int((hbm - costs.c["weights_bytes_bf16"]) // kv),
            "cumulative_gpu_s": round(sum(s["gpu_s"]), 2),
            "history_held_pct": round(100 * min(s["held_tokens"][-1] / history, 1.0), 1),
        })
    return rows


def run(args: argparse.Namespace) -> dict:
    if not (args.curves or args.measure_curves):
        return run_live(args)
    if args.measure_curves and not args.curves:
        curves = measure_curves(args.tiny)
        Path(args.measure_curves).write_text(json.dumps(curves, indent=1))
        return {"curves": args.measure_curves, "measured": {k: v for k, v in curves.items() if k != "prefix_prefill"}}
    curves = json.loads(Path(args.curves).read_text())
    costs = Costs(curves)
    table = []
    series = {}
    for h in args.histories:
        turns = make_conversation(h)
        strategies = replay(turns, costs, args.budgets)
        table += summarise(strategies, costs, sum(t["tokens"] for t in turns))
        series[h] = {k: {"history_tokens": v["history_tokens"], "context_tokens": v["context_tokens"],
                         "cumulative_gpu_s": _cumsum(v["gpu_s"])}
                     for k, v in strategies.items()}
    if args.plots:
        _plots(series, Path(args.plots))
    return {"table": table, "targets_at_32k": targets(table, args.budgets), "curves_device": curves.get("device"),
            "curves_timing": curves.get("timing"), "encode_method": curves.get("encode_method"),
            "series_turns": {h: len(next(iter(s.values()))["context_tokens"]) for h, s in series.items()},
            "method": "GPU cost curves measured on the device (benchmarks/results/e2e_curves.json); every turn of every "
                      "strategy replayed on the CPU from them by linear interpolation; optimem's plans from the real "
                      "policies.Planner over the real renderer's pages; 128-token replies; batch 1 per session",
            "conversation": make_conversation.__doc__.strip()}


def targets(table: list[dict], budgets: list[int]) -> dict:
    """Issue 8's targets at the history nearest 32k, per optimem budget: met or not, with the ratios."""
    hists = sorted({r["history_tokens"] for r in table}, key=lambda h: abs(h - 32768))
    if not hists:
        return {}
    rows = {r["strategy"]: r for r in table if r["history_tokens"] == hists[0]}
    full, prefix = rows.get("full"), rows.get("prefix")
    out: dict = {"history_tokens": hists[0]}
    for b in budgets:
        o = rows.get(f"optimem@{b}")
        if not (o and full and prefix):
            continue
        held_in_window = max((r["history_tokens"] * r["history_held_pct"] / 100 for r in table
                              if r["strategy"] == f"optimem@{b}" and r["usable_in_8k_window"]), default=0)
        kv = full["kv_mib_per_session"] / o["kv_mib_per_session"]
        dec = o["decode_tokens_per_s"] / full["decode_tokens_per_s"]
        cum = full["cumulative_gpu_s"] / o["cumulative_gpu_s"]
        out[f"optimem@{b}"] = {
            "kv_smaller_than_full": [round(kv, 1), kv >= 8],
            "decode_faster_than_full": [round(dec, 2), dec >= 2],
            "cumulative_gpu_below_full": [round(cum, 2), cum >= 5],
            "cumulative_gpu_vs_prefix": [round(o["cumulative_gpu_s"] / prefix["cumulative_gpu_s"], 2),
                                         o["cumulative_gpu_s"] <= prefix["cumulative_gpu_s"]],
            "history_held_in_window_tokens": [round(held_in_window), held_in_window >= 60000],
        }
    return out


def _cumsum(xs: list[float]) -> list[float]:
    out, acc = [], 0.0
    for x in xs:
        acc += x
        out.append(round(acc, 4))
    return out


def _plots(series: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    h = max(series)
    fig, ax = plt.subplots(1, 2, figsize=(13, 5))
    for name, s in series[h].items():
        x = list(range(1, len(s["context_tokens"]) + 1))
        ax[0].plot(s["history_tokens"], s["context_tokens"], label=name)
        ax[1].plot(x, s["cumulative_gpu_s"], label=name)
    ax[0].axhline(WINDOW, color="grey", ls="--", lw=0.8)
    ax[0].set(xlabel="history so far (text tokens)", ylabel="context tokens per call", yscale="log", title=f"Context per call ({h // 1024}k-token history)")
    ax[1].set(xlabel="user turn", ylabel="cumulative GPU seconds", yscale="log", title="Cumulative GPU time (encode included)")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "e2e.png", dpi=110)


# -- 3. the product on the GPU: decode before/after, exactness, turn by turn ---------------------------
def _full_model(tiny: bool):
    import torch

    from optimem.model import DeepseekOCR, DeepseekOCRConfig, tiny_config

    cuda = torch.cuda.is_available()
    cfg = tiny_config() if tiny else DeepseekOCRConfig()
    return DeepseekOCR.random(cfg, dtype="bfloat16" if cuda else "float32", device="cuda" if cuda else "cpu")


def _text_ids(n: int, seed: int = 0) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [0] + rng.integers(100, 100_000, n - 1).tolist()


def decode_speed(model, contexts: list[int], *, eager_upto: int = 32768, new_tokens: int = REPLY_TOKENS) -> list[dict]:
    """Per context length: the engine's decode ms/token in `generate()` itself (CUDA graphs, and the
    same engine without graphs), its prefill, and the plain transformers loop's ms/token (the
    "before"), from generate() calls of 1 and 33 new tokens."""
    import time

    import torch

    from optimem.bench.gpu import sync

    rows = []
    eng = model.configure_engine(max_sessions=2)
    for ctx in contexts:
        ids = _text_ids(ctx, seed=ctx)
        row: dict = {"context_tokens": ctx}
        try:
            eng.warmup([ctx + j for j in (1, new_tokens)])
            # measured: warmup() above prepared the decode steps; this prefill may be its shape's first
            model.generate(ids, [], max_new_tokens=new_tokens, eos_token_id=-1, reuse=False)
            st = model.last_generation
            row.update(prefill_ms=round(1000 * st.prefill_s, 2), decode_ms_per_token=round(st.decode_ms_per_token, 3),
                       graphs=st.graphs)
            # the same prompt again: its KV is reused, only the last token is prefilled
            model.generate(ids, [], max_new_tokens=1, eos_token_id=-1)
            row["ttft_reused_prefix_ms"] = round(1000 * model.last_generation.prefill_s, 2)
            if model.device.type == "cuda" and ctx <= 8192:
                # prefill with the routed experts looped per expert (the engine before grouped_prefill),
                # whole prompt and a 256-token append after a reused prefix
                model.configure_engine(grouped_prefill=False)
                model.generate(ids, [], max_new_tokens=1, eos_token_id=-1, reuse=False)
                row["prefill_ms_expert_loop"] = round(1000 * model.last_generation.prefill_s, 2)
                model.generate(ids + _text_ids(257, seed=5)[1:], [], max_new_tokens=1, eos_token_id=-1)
                row["append_256_prefill_ms_expert_loop"] = round(1000 * model.last_generation.prefill_s, 2)
                eng = model.configure_engine(max_sessions=2)
                eng.warmup_prefill([256], [ctx])  # its short-prefill graph captured before the timed call
                model.generate(ids, [], max_new_tokens=1, eos_token_id=-1, reuse=False)
                model.generate(ids + _text_ids(257, seed=5)[1:], [], max_new_tokens=1, eos_token_id=-1)
                row["append_256_prefill_ms"] = round(1000 * model.last_generation.prefill_s, 2)
                model.configure_engine(fused=False)
                model.generate(ids, [], max_new_tokens=new_tokens, eos_token_id=-1, reuse=False)
                row["decode_ms_per_token_unfused"] = round(model.last_generation.decode_ms_per_token, 3)
                model.configure_engine(graphs=False, bucketed=True)
                model.generate(ids, [], max_new_tokens=33, eos_token_id=-1, reuse=False)
                row["decode_ms_per_token_no_graphs"] = round(model.last_generation.decode_ms_per_token, 3)
                eng = model.configure_engine(max_sessions=2)
            if ctx <= eager_upto:
                times = {}
                for n in (1, 33):
                    sync(model.device)
                    t = time.perf_counter()
                    model.generate_eager(ids, [], max_new_tokens=n, eos_token_id=-1)
                    sync(model.device)
                    times[n] = time.perf_counter() - t
                row["eager_decode_ms_per_token"] = round(1000 * (times[33] - times[1]) / 32, 3)
                row["eager_prefill_ms"] = round(1000 * times[1], 2)
                row["decode_speedup"] = round(row["eager_decode_ms_per_token"] / row["decode_ms_per_token"], 1)
        except torch.OutOfMemoryError as exc:
            row["error"] = f"out of memory: {str(exc)[:80]}"
        finally:
            eng.release("default")
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def decode_floor(model, ctx: int) -> dict:
    """Bytes a batch-1 decode step must read at `ctx` (active weights, the chosen experts' rows, the
    KV) and the time that takes at the measured copy bandwidth: the floor the step is compared with."""
    import torch

    t = model.config.text
    lang = model.module.language
    dense_layers = t.first_k_dense_replace
    attn = sum(p.numel() for n, p in lang.named_parameters() if "self_attn" in n)
    dense = sum(p.numel() for n, p in lang.layers[:dense_layers].named_parameters() if "mlp" in n)
    moe_layers = t.num_hidden_layers - dense_layers
    shared = 3 * t.hidden_size * t.moe_intermediate_size * t.n_shared_experts * moe_layers
    routed = 3 * t.hidden_size * t.moe_intermediate_size * t.num_experts_per_tok * moe_layers
    head = t.vocab_size * t.hidden_size
    params = attn + dense + shared + routed + head
    el = 2 if model.dtype == torch.bfloat16 else 4
    kv = model.engine.kv_bytes_per_token * ctx
    out = {"active_params": params, "weight_bytes": params * el, "kv_bytes": kv}
    if model.device.type == "cuda":
        x = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
        y = torch.empty_like(x)
        for _ in range(3):
            y.copy_(x)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            y.copy_(x)
        end.record()
        torch.cuda.synchronize()
        bw = 10 * 2 * x.numel() / (start.elapsed_time(end) / 1000)
        out["copy_bandwidth_GBps"] = round(bw / 1e9, 1)
        # with the expert kernel (CUDA) the step reads the chosen experts in place: floor_ms; without
        # it (the eager path) a gather copies the chosen rows once more (read + write) first
        out["floor_ms"] = round(1000 * (params * el + kv) / bw, 3)
        out["floor_ms_with_expert_gather"] = round(1000 * (params * el + 2 * routed * el + kv) / bw, 3)
        del x, y
    return out


def decode_profile(model, ctx: int, steps: int = 8) -> dict:
    """Where an eager (un-graphed) decode step's GPU time goes at `ctx`, by kernel family."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if model.device.type != "cuda":
        return {}
    eng = model.configure_engine(graphs=False, bucketed=True)
    ids = _text_ids(ctx, seed=1)
    model.generate(ids, [], max_new_tokens=4, eos_token_id=-1)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model.generate(ids, [], max_new_tokens=steps + 1, eos_token_id=-1)
    fam: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if not us or ev.key.startswith("aten::"):
            continue
        k = ev.key.lower()
        name = ("attention" if any(w in k for w in ("fmha", "attention", "flash", "softmax")) else
                "matmul (gemv/gemm)" if any(w in k for w in ("gemm", "gemv", "sm90", "cutlass", "matmul", "splitk")) else
                "gather/scatter/index" if any(w in k for w in ("index", "gather", "scatter")) else
                "reductions (topk, argmax, norms)" if any(w in k for w in ("reduce", "topk", "sort", "argmax", "norm")) else
                "elementwise/copies")
        fam[name] = fam.get(name, 0.0) + us
    total = sum(fam.values())
    model.configure_engine()
    eng.release("default")
    torch.cuda.empty_cache()
    prompt_steps = steps + 1  # the profiled call: a one-token prefill plus `steps` decode steps
    return {"context_tokens": ctx, "kernel_ms_per_step": {k: round(v / 1000 / prompt_steps, 3) for k, v in
                                                          sorted(fam.items(), key=lambda kv: -kv[1])},
            "kernel_ms_per_step_total": round(total / 1000 / prompt_steps, 3)}


def exactness(model, steps: int = 128, n_text: int = 600) -> dict:
    """The engine against the plain transformers loop on one prompt with two spliced pages (base
    tier, encoded by the model): the first step where the token ids differ, and the eager loop's
    logit margin (best minus second best after the ban) at that step."""
    import numpy as np
    import torch
    from PIL import Image

    from optimem.model.decoding import _banned_ngrams

    rng = np.random.default_rng(7)
    imgs = [Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)) for _ in range(2)]
    pages = list(model.encode_pages(imgs, "base"))
    img = model.image_token_id
    ids = (_text_ids(n_text, 3) + [img] * pages[0].shape[0] + _text_ids(n_text, 4)[1:] + [img] * pages[1].shape[0]
           + _text_ids(40, 5)[1:])
    ref = model.generate_eager(ids, pages, max_new_tokens=steps, eos_token_id=-1)
    new = model.generate(ids, pages, max_new_tokens=steps, eos_token_id=-1, reuse=False)
    first = next((i for i, (a, b) in enumerate(zip(ref, new)) if a != b), None)
    out = {"prompt_tokens": len(ids), "pages": 2, "steps": steps, "identical_steps": steps if first is None else first,
           "dtype": str(model.dtype).removeprefix("torch.")}
    if first is not None:
        seq = ids + ref[:first]
        logits = model.logits(model.build_inputs_embeds(seq, pages))[0, -1].float()
        for b in _banned_ngrams(seq, 20):
            logits[b] = -float("inf")
        top = torch.topk(logits, 2)
        out.update(first_divergence_step=first, eager_token=ref[first], engine_token=new[first],
                   eager_margin=round(float(top.values[0] - top.values[1]), 5),
                   eager_logit_gap_to_engine_token=round(float(logits[ref[first]] - logits[new[first]]), 5))
    return out


def _pieces(tok, turns: list[dict]) -> list[list[int]]:
    """Each turn's token ids in the native chat template (as the prompt builder lays turns out)."""
    from optimem.context import ASSISTANT, USER

    out = []
    for t in turns:
        if t["role"] == "assistant":
            out.append(tok.encode(f"{ASSISTANT}: {t['content']}", add_special_tokens=False).ids + [1])
        else:
            out.append(tok.encode(f"{USER}: {t['content']}\n\n", add_special_tokens=False).ids)
    return out


def _native_prompt(mem, ctx) -> tuple[list[int], list, list]:
    """(ids, page embeddings, page keys) of the product's prompt for a context."""
    p = mem.backend.prompts().chat(ctx)
    ids, embeds = list(p.input_ids), list(p.image_embeds)
    keys = [(p.content_hash, p.tier) for p in ctx.pages]
    return ids, embeds, keys


def _timed(model, fn):
    import time

    from optimem.bench.gpu import sync

    sync(model.device)
    t = time.perf_counter()
    out = fn()
    sync(model.device)
    return out, 1000 * (time.perf_counter() - t)


def live(model, histories: list[int], turns: int, budget: int, reply_tokens: int = REPLY_TOKENS,
         prefix_slack: float | None = None) -> dict:
    """The product turn by turn: per history, the last `turns` user turns of the cycled conversation
    (the turns before them are added without model calls; one untimed turn before the measured ones
    sets up each strategy's state), each strategy through the same decode engine, 128-token replies:
      optimem   OpticalMemory + DeepseekOCRBackend: context() (seal, plan, encode-wait, encode, each
                timed inside the call), native prompt, generate with the session's KV reused where the
                prompt's leading part is unchanged. The memory's background worker (sealing, encoding
                the pages the next plans are expected to show) runs between turns, as it does while a
                user reads the reply and types: `bg_ms` is the time the bench then waits for it to finish,
                off the turn's path (a job still running when the next turn starts delays it, and
                that shows in its phases);
      prefix    full text with the previous turn's KV reused;
      full      full text re-prefilled every turn;
      truncate  the most recent turns that fit the budget, re-prefilled."""
    import shutil
    import tempfile
    import time

    import torch

    from optimem.backends import DeepseekOCRBackend
    from optimem.memory import OpticalMemory

    tok = model.tokenizer
    rows: list[dict] = []
    eng = model.configure_engine(max_sessions=2)
    # one-time start-up, kept out of the turns: torch.compile of the step's elementwise chains and a
    # CUDA graph per cache bucket the run will touch (256 .. past the longest history)
    top = int(max(histories) * 1.1) + 1024
    t = time.perf_counter()
    eng.warmup(eng.buckets(top) + [top])
    # prefill of a few lengths (the first prefill of a shape pays one-time costs: kernel selection)
    for n in (64, 150, 300, 600, 1200, 6000):
        model.generate(_text_ids(n, seed=n), [], max_new_tokens=1, eos_token_id=-1, session=("warmup",))
        model.generate(_text_ids(n, seed=n) + _text_ids(n + 1, seed=n + 1)[1:], [], max_new_tokens=1, eos_token_id=-1,
                       session=("warmup",))
    eng.release(("warmup",))
    # the short-prefill graphs (padded length x key bucket) for appends after the prefixes the
    # strategies reuse: budget-sized contexts, and the full histories
    starts = [4096 + 512 * k for k in range(12)]
    for H in histories:
        starts += [int(H * f) for f in (0.86, 0.9, 0.94, 0.98, 1.0, 1.02)]
    eng.warmup_prefill([64, 128, 256, 512, 1024], starts)
    startup_s = time.perf_counter() - t
    backend = DeepseekOCRBackend(model, batch_size=32)
    for H in histories:
        conv = make_conversation(H)
        pieces = _pieces(tok, conv)
        tail = tok.encode("<|Assistant|>:", add_special_tokens=False).ids
        n_user = len(conv) // 2
        first = max(n_user - turns - 1, 0)  # the untimed set-up turn
        hist_tokens = sum(t["tokens"] for t in conv)

        def text_prompt(u: int, truncate: bool) -> list[int]:
            upto = 2 * u + 1
            lo = 0
            if truncate:
                used, lo = 0, upto
                while lo > 0 and used + len(pieces[lo - 1]) + len(tail) + 1 <= budget - reply_tokens:
                    lo -= 1
                    used += len(pieces[lo])
            return [0] + [i for p in pieces[lo:upto] for i in p] + tail

        for strategy in ("optimem", "prefix", "full", "truncate"):
            session = {"optimem": ("optimem", H), "prefix": ("prefix", H)}.get(strategy)
            mem = None
            if strategy == "optimem":
                tmp = tempfile.mkdtemp(prefix="optimem-e2e-")
                mem = OpticalMemory(f"e2e{H}", f"sqlite:///{tmp}/m.db", backend=backend, prefix_slack=prefix_slack)
                mem.add_many([{"role": t["role"], "content": t["content"]} for t in conv[: 2 * first]])
                mem.wait_ahead()
            for u in range(first, n_user):
                row: dict = {"history_tokens": H, "strategy": strategy, "turn": u, "measured": u > first}
                t_turn = time.perf_counter()
                keys = None
                embeds: list = []
                if mem is not None:
                    mem.add("user", conv[2 * u]["content"])
                    ctx, row["context_ms"] = _timed(model, lambda: mem.context(budget, reserve=reply_tokens))
                    st = mem.last_context_stats
                    row.update({k: st[k] for k in ("seal_ms", "plan_ms", "encode_wait_ms", "encode_ms", "pages_encoded",
                                                   "plan_kept")})
                    (ids, embeds, keys), row["prompt_ms"] = _timed(model, lambda: _native_prompt(mem, ctx))
                    row["pages"] = len(ctx.pages)
                else:
                    ids, row["prompt_ms"] = _timed(model, lambda: text_prompt(u, strategy == "truncate"))
                n_new = reply_tokens if u > first else 1
                _, gen_ms = _timed(model, lambda: model.generate(
                    ids, embeds, max_new_tokens=n_new, eos_token_id=-1, session=session,
                    reuse=session is not None, image_keys=keys))
                st = st_gen = model.last_generation
                row.update(context_tokens=len(ids), reused_tokens=st.reused_tokens, prefill_tokens=st.prefill_tokens,
                           prefill_ms=round(1000 * st.prefill_s, 2), decode_ms=round(1000 * st.decode_s, 2),
                           decode_ms_per_token=st.decode_ms_per_token and round(st.decode_ms_per_token, 3),
                           generate_ms=round(gen_ms, 2))
                row["turn_ms"] = round(1000 * (time.perf_counter() - t_turn), 2)
                if mem is not None:
                    row["context_ms"] = round(row["context_ms"], 2)
                    row["ttft_ms"] = round(row["context_ms"] + row["prompt_ms"] + row["prefill_ms"], 2)
                    # CPU work on the turn's path: context() less its GPU encode, the prompt, the engine's
                    # host-side setup (prefix match, ids, embedding splice)
                    row["cpu_ms"] = round(row["context_ms"] - row["encode_ms"] - row["encode_wait_ms"] + row["prompt_ms"]
                                          + 1000 * st_gen.setup_s, 2)
                    mem.add("assistant", conv[2 * u + 1]["content"])
                    _, row["bg_ms"] = _timed(model, mem.wait_ahead)
                    row["bg_ms"] = round(row["bg_ms"], 2)
                else:
                    row["ttft_ms"] = round(row["prompt_ms"] + row["prefill_ms"], 2)
                    row["cpu_ms"] = round(row["prompt_ms"] + 1000 * st_gen.setup_s, 2)
                for k in ("seal_ms", "plan_ms", "encode_wait_ms", "encode_ms", "prompt_ms"):
                    if k in row:
                        row[k] = round(row[k], 2)
                rows.append(row)
            if session is not None:
                eng.release(session)
            if mem is not None:  # its store (pages, vision-token cache) can reach hundreds of MB
                mem.wait_ahead()
                mem.store.close()
                shutil.rmtree(tmp, ignore_errors=True)
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append({"history_tokens": H, "strategy": "_conversation", "turns": len(conv), "text_tokens": hist_tokens})
    summary = _live_summary(rows, model, reply_tokens)
    return {"turns": rows, "summary": summary, "targets": _live_targets(summary), "reply_tokens": reply_tokens,
            "budget": budget, "prefix_slack": prefix_slack, "engine_startup_s": round(startup_s, 2),
            "engine": {"grouped_prefill": eng.grouped_prefill, "fused": eng.fused, "graphs": eng.graphs}}


def _live_targets(summary: list[dict]) -> dict:
    """Issue 20's targets from the live summary: each value [measured, met]."""
    by = {(r["history_tokens"], r["strategy"]): r for r in summary}
    out: dict = {}
    hists = sorted({h for h, _ in by})
    for h in hists:
        o, full, prefix = by.get((h, "optimem")), by.get((h, "full")), by.get((h, "prefix"))
        if not o:
            continue
        t: dict = {"context_ms_p50": [o["context_ms_p50"], o["context_ms_p50"] <= 15],
                   "context_ms_p99": [o["context_ms_p99"], o["context_ms_p99"] <= 100],
                   "ttft_ms_p50": [o["ttft_ms_p50"], o["ttft_ms_p50"] <= 40],
                   "turn_ms_p50": [o["turn_ms_p50"], o["turn_ms_p50"] <= 500]}
        if full:
            r = full["ttft_ms_p50"] / o["ttft_ms_p50"]
            t["ttft_below_full_x"] = [round(r, 2), r >= 5]
        if prefix:
            r = prefix["turn_ms_sum"] / o["turn_ms_sum"]
            t["total_below_prefix_x"] = [round(r, 2), r >= 2.5]
            r2 = prefix["turn_ms_sum"] / (o["turn_ms_sum"] + o["bg_ms_sum"])
            t["total_with_background_below_prefix_x"] = [round(r2, 2), r2 >= 2.5]
        out[str(h)] = t
    return out


def _pct(xs: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(xs, q)), 2) if xs else float("nan")


def _live_summary(rows: list[dict], model, reply_tokens: int = REPLY_TOKENS) -> list[dict]:
    import torch

    kv_tok = model.engine.kv_bytes_per_token
    free = None
    if model.device.type == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        weights = sum(p.numel() * p.element_size() for p in model.module.parameters())
        free = total - weights - 4 * 2**30  # 4 GiB kept for activations, graphs and the allocator
    out = []
    keys = sorted({(r["history_tokens"], r["strategy"]) for r in rows if r.get("measured")})
    for h, s in keys:
        rs = [r for r in rows if r.get("measured") and r["history_tokens"] == h and r["strategy"] == s]
        ctx = max(r["context_tokens"] for r in rs) + reply_tokens
        kv = ctx * kv_tok
        row = {"history_tokens": h, "strategy": s, "turns_measured": len(rs),
               "context_tokens": round(sum(r["context_tokens"] for r in rs) / len(rs)),
               "prefilled_tokens_mean": round(sum(r["prefill_tokens"] for r in rs) / len(rs)),
               "ttft_ms_p50": _pct([r["ttft_ms"] for r in rs], 50),
               "prefill_ms_p50": _pct([r["prefill_ms"] for r in rs], 50),
               "decode_ms_per_token_p50": _pct([r["decode_ms_per_token"] for r in rs], 50),
               "turn_ms_p50": _pct([r["turn_ms"] for r in rs], 50), "turn_ms_p99": _pct([r["turn_ms"] for r in rs], 99),
               "turn_ms_mean": round(sum(r["turn_ms"] for r in rs) / len(rs), 2),
               "turn_ms_sum": round(sum(r["turn_ms"] for r in rs), 2),
               "bg_ms_sum": round(sum(r.get("bg_ms", 0.0) for r in rs), 2),
               "prefilled_tokens_p50": _pct([r["prefill_tokens"] for r in rs], 50),
               "cpu_share_pct": round(100 * sum(r["cpu_ms"] for r in rs) / sum(r["turn_ms"] for r in rs), 1),
               "kv_mib_per_session": round(kv / 2**20, 1),
               "sessions_fit": int(free // kv) if free else None,
               "in_8k_window": ctx <= WINDOW}
        if s == "optimem":
            row.update(context_ms_p50=_pct([r["context_ms"] for r in rs], 50),
                       context_ms_p99=_pct([r["context_ms"] for r in rs], 99),
                       seal_ms_p50=_pct([r["seal_ms"] for r in rs], 50), plan_ms_p50=_pct([r["plan_ms"] for r in rs], 50),
                       encode_wait_ms_p50=_pct([r["encode_wait_ms"] for r in rs], 50),
                       encode_ms_p50=_pct([r["encode_ms"] for r in rs], 50),
                       encode_ms_max=round(max(r["encode_ms"] for r in rs), 2),
                       pages_encoded_on_path=sum(r["pages_encoded"] for r in rs),
                       plans_kept=sum(bool(r["plan_kept"]) for r in rs),
                       bg_ms_p50=_pct([r["bg_ms"] for r in rs], 50))
        out.append(row)
    return out


def run_live(args: argparse.Namespace) -> dict:
    import torch

    parts = set(args.parts.split(","))
    tiny = args.tiny
    model = _full_model(tiny)
    out: dict = {"config": "tiny (smoke test)" if tiny else "full size, random weights, " + str(model.dtype).removeprefix("torch."),
                 "device": str(model.device)}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    contexts = [c // 64 for c in args.decode_contexts] if tiny else args.decode_contexts
    if "exact" in parts:
        out["exactness"] = exactness(model, steps=16 if tiny else 128, n_text=40 if tiny else 600)
    if "decode" in parts:
        out["decode"] = decode_speed(model, contexts, new_tokens=16 if tiny else REPLY_TOKENS)
        out["decode_floor"] = decode_floor(model, 8192 if not tiny else 128)
        out["decode_profile"] = decode_profile(model, 8192 if not tiny else 128)
    if "live" in parts:
        hist = [h // 16 for h in args.live_histories] if tiny else args.live_histories
        out["live"] = live(model, hist, args.turns, args.budget // (4 if tiny else 1), args.reply_tokens,
                           args.prefix_slack)
        if args.plots:
            out["live"]["plot"] = str(live_plot(out["live"], Path(args.plots)))
    return out


def live_plot(live_result: dict, out: Path) -> Path:
    """Per-turn time by phase (stacked bars, median over the measured turns) per history and strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in live_result["turns"] if r.get("measured")]
    hists = sorted({r["history_tokens"] for r in rows})
    strategies = ["optimem", "truncate", "prefix", "full"]
    phases = [("context_ms", "context(): seal + plan + encode"), ("prompt_ms", "prompt"), ("prefill_ms", "prefill"),
              ("decode_ms", f"decode ({live_result.get('reply_tokens', REPLY_TOKENS) - 1} tokens)")]
    fig, axes = plt.subplots(1, len(hists), figsize=(6 * len(hists), 4.5), squeeze=False)
    for ax, h in zip(axes[0], hists):
        bottom = [0.0] * len(strategies)
        for key, label in phases:
            vals = []
            for s in strategies:
                xs = sorted(r.get(key, 0.0) or 0.0 for r in rows if r["history_tokens"] == h and r["strategy"] == s)
                vals.append(xs[len(xs) // 2] if xs else 0.0)
            ax.bar(strategies, vals, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set(title=f"{h // 1024}k-token history: one turn, median (ms)", ylabel="ms")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "e2e_live.png"
    fig.savefig(path, dpi=110)
    return path


def live_table(summary: list[dict]) -> str:
    """The README's markdown table of the live run."""
    head = ("| history | strategy | context tokens | prefilled / turn: mean, p50 | context() p50 / p99 ms | TTFT p50 ms | "
            "decode ms/token | turn p50 / p99 ms | total s (+ background) | CPU share | KV MiB / session | sessions in GPU |")
    lines = [head, "|" + "---|" * 12]
    for r in summary:
        ctx = f"{r['context_ms_p50']} / {r['context_ms_p99']}" if "context_ms_p50" in r else "-"
        bg = f" (+{r['bg_ms_sum'] / 1000:.2f})" if r.get("bg_ms_sum") else ""
        lines.append(f"| {r['history_tokens']:,} | {r['strategy']} | {r['context_tokens']:,} | "
                     f"{r['prefilled_tokens_mean']:,}, {r['prefilled_tokens_p50']:,.0f} | "
                     f"{ctx} | {r['ttft_ms_p50']} | {r['decode_ms_per_token_p50']} | {r['turn_ms_p50']} / {r['turn_ms_p99']} | "
                     f"{r['turn_ms_sum'] / 1000:.2f}{bg} | {r['cpu_share_pct']}% | {r['kv_mib_per_session']} | {r['sessions_fit']} |")
    return "\n".join(lines)
