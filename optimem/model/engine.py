"""The decode engine: batch-1 greedy decoding of the DeepSeek MoE decoder at serving speed.

What it does differently from a transformers `generate` loop, and why:

- **Static KV cache.** One preallocated K and V buffer per layer, sized to the decoder's window (grown in
  whole windows when a prompt needs more), written in place with `index_copy_`. Nothing is allocated
  per step, so a step has fixed addresses and can be captured.
- **The one-token step as a CUDA graph.** Embedding, 12 layers (attention over a fixed-size slice of
  the cache with a length mask, MoE with the chosen experts' weights gathered on the device), the LM
  head, the no-repeat n-gram ban and the argmax are one graph per cache-length bucket (powers of two),
  replayed per token: no Python, no host sync and no launch gaps inside a step. The host reads one
  int per step (stop tokens, streaming). On CUDA the routed experts are read in place by a Triton
  GEMV (`moe_kernel`) and the step's elementwise chains are compiled by torch.compile (fixed shapes,
  once per process): a step is a few hundred kernels instead of several hundred more.
- **The n-gram ban on the device, incremental.** The reference's rule (`infer`, n=20 over the whole
  sequence: a token that would complete an n-gram already present is banned) keeps one 62-bit hash per
  position of the (n-1)-gram that precedes it; each step hashes the current (n-1)-gram once, appends
  it, and bans the followers of every equal hash with one compare and one scatter. The vLLM recipe's
  windowed variant (n=30 over the last 90 tokens, table tokens whitelisted) is the same table with a
  window and a whitelist.
- **Chunked prefill** of only what changed: a session keeps the KV of its last call; the next call's
  prompt is matched against it (token ids, and image rows by the identity of their embedding tensors or
  by caller-given keys), and only the tail after the first difference is prefilled, in chunks.
- **Sessions.** The working cache belongs to one session at a time; switching parks the owner's valid
  KV prefix (only its length, not the window) and restores the other's. At most `max_sessions` are
  parked (least recently used released first), so memory per session is bounded by its context.

On a CPU the same step runs eagerly at exact cache lengths (no graphs, no masks); tests compare both
forms with the plain transformers loop (`DecoderMixin.generate_eager`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from optimem.errors import ModelError

log = logging.getLogger(__name__)

# two 31-bit polynomial hashes of an (n-1)-gram, packed in one int64 (token ids < 2^17, so a term
# stays below 2^48 and a sum of up to 2^5 terms below 2^53: exact in int64 on every device)
_P1, _P2 = 2147483647, 2147483629
_B1, _B2 = 1000003, 911382323
_MAX_NGRAM = 32
_MIN_BUCKET = 256
_BUCKET_PARTS = 8  # buckets per power-of-two band
_PREFILL_GRAPH_MIN, _PREFILL_GRAPH_MAX = 64, 1024  # prefills of up to this many rows are padded and graphed


def _pow2(n: int) -> int:
    b = 1
    while b < n:
        b *= 2
    return b


@dataclass
class GenerationStats:
    """What the last call did, with wall-clock phases (the engine synchronises at each token read)."""

    session: Any = None
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0  # prompt in, first token chosen (embedding, splice, chunked prefill, ban)
    setup_s: float = 0.0  # of which: session switch, prefix match, ids and n-gram keys, embedding + splice
    forward_s: float = 0.0  # of which: the chunked prefill forward
    decode_s: float = 0.0  # the remaining tokens
    decode_steps: int = 0  # tokens read after the first (a stop token read last counts: it took a step)
    graphs: bool = False
    capacity: int = 0

    @property
    def decode_ms_per_token(self) -> float | None:
        return 1000 * self.decode_s / self.decode_steps if self.decode_steps > 0 else None


@dataclass
class _Parked:
    ids: list[int]
    images: list[tuple[int, int, Any]]
    kv: Any  # [2, layers, 1, kv_heads, n, head_dim]
    n: int


class _Weights:
    """One decoder layer's tensors in the layout the engine's step uses (q/k/v and gate/up fused)."""

    def __init__(self, layer) -> None:
        import torch

        a = layer.self_attn
        self.qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).contiguous()
        biases = [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]
        self.qkv_b = torch.cat(biases) if all(b is not None for b in biases) else None
        self.o, self.o_b = a.o_proj.weight, a.o_proj.bias
        self.ln1, self.eps1 = layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon
        self.ln2, self.eps2 = layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon
        mlp = layer.mlp
        self.module = mlp
        self.moe = hasattr(mlp, "experts")
        dense = mlp.shared_experts if self.moe else mlp
        self.gate_up = torch.cat([dense.gate_proj.weight, dense.up_proj.weight]).contiguous()
        self.down = dense.down_proj.weight
        if self.moe:
            gate = mlp.gate
            if getattr(gate, "topk_method", "greedy") != "greedy":
                raise ModelError(f"the decode engine supports greedy expert routing, not {gate.topk_method!r}")
            self.router = gate.weight.float()  # transformers keeps it fp32; a bf16 copy is upcast once here
            self.top_k = gate.top_k
            self.scale = float(gate.routed_scaling_factor)
            self.experts_gate_up = mlp.experts.gate_up_proj  # [E, 2I, H]
            self.experts_down = mlp.experts.down_proj  # [E, H, I]


def _rms(x, w, eps):
    """transformers' DeepseekOcr2TextRMSNorm (fp32 normalisation, weight applied in the input dtype)
    with the normalisation as one kernel."""
    import torch.nn.functional as F

    return w * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _rotate(x, cos, sin):
    import torch

    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


# -- the decode step's elementwise chains, each compiled into one or two kernels on CUDA -----------------
def _f_rms(x, w, eps: float):
    return _rms(x, w, eps)


def _f_add_rms(x, delta, w, eps: float):
    x = x + delta
    return x, _rms(x, w, eps)


def _f_rope(qkv, cos, sin, H: int, Hk: int, hd: int):
    qk, v = qkv.split([(H + Hk) * hd, Hk * hd], dim=-1)
    qk = _rotate(qk.view(1, 1, H + Hk, hd).transpose(1, 2), cos, sin)
    return qk[:, :H].contiguous(), qk[:, H:].contiguous(), v.view(1, 1, Hk, hd).transpose(1, 2).contiguous()


def _f_silu_mul(gu):
    import torch.nn.functional as F

    g, u = gu.chunk(2, dim=-1)
    return F.silu(g) * u


def _f_router(h, router, k: int):
    import torch
    import torch.nn.functional as F

    scores = F.linear(h.reshape(1, -1).float(), router).softmax(dim=-1, dtype=torch.float32)
    return torch.topk(scores, k=k, dim=-1, sorted=False)


def _f_moe_delta(y, top_w, scale: float, shared):
    return shared + (y.float() * (top_w[0, :, None] * scale)).sum(0).to(shared.dtype).view_as(shared)


class _Compiled:
    """`fn` through torch.compile on first use (fixed shapes: the one-token step), or `fn` itself when
    compilation is off or fails (logged once)."""

    def __init__(self, fn, enabled: bool) -> None:
        self.fn, self.enabled, self.compiled = fn, enabled, None

    def __call__(self, *args):
        if not self.enabled:
            return self.fn(*args)
        if self.compiled is None:
            import torch

            self.compiled = torch.compile(self.fn, dynamic=False, fullgraph=True)
        try:
            return self.compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: run the plain function
            log.warning("decode engine: torch.compile of %s failed (%s: %s); running it uncompiled",
                        self.fn.__name__, type(exc).__name__, str(exc)[:200])
            self.enabled = False
            return self.fn(*args)


class DecodeEngine:
    """Greedy decoding over one static KV cache (see the module docstring). Not thread-safe by design
    of the hardware it serves (one step at a time): calls are serialised with a lock."""

    def __init__(self, language, lm_head, *, capacity: int | None = None, graphs: bool | None = None,
                 prefill_chunk: int | None = None, max_sessions: int = 4, bucketed: bool | None = None,
                 expert_kernel: bool | None = None, fused: bool | None = None,
                 grouped_prefill: bool | None = None, graph_prefill: bool | None = None,
                 lock: threading.RLock | None = None) -> None:
        import torch

        self.lang, self.lm_head = language, lm_head
        cfg = language.config
        self.device, self.dtype = lm_head.weight.device, lm_head.weight.dtype
        cuda = self.device.type == "cuda"
        self.n_layers = cfg.num_hidden_layers
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.vocab = lm_head.weight.shape[0]
        self.window = int(cfg.max_position_embeddings)
        self.graphs = cuda if graphs is None else (bool(graphs) and cuda)
        # bucketed: fixed-size cache slices with a length mask (what a graph needs); eager CPU runs use
        # the exact length instead, which is the same arithmetic on fewer keys
        self.bucketed = self.graphs if bucketed is None else (bucketed or self.graphs)
        self.prefill_chunk = prefill_chunk or (8192 if cuda else 1024)
        self.max_sessions = max_sessions
        from optimem.model import moe_kernel

        # the routed experts read in place by a Triton kernel on CUDA (moe_kernel); torch's gather + bmm elsewhere
        self._expert_kernel = cuda and moe_kernel.available() if expert_kernel is None else bool(expert_kernel)
        # the step's elementwise chains (norm + residual, rotary + split, SiLU gate, router, expert
        # combine) compiled into a few kernels each on CUDA: several hundred kernels fewer per step
        self.fused = cuda and moe_kernel.available() if fused is None else bool(fused)
        # prefill's routed experts as one grouped GEMM per projection (transformers' grouped_mm experts
        # forward) on CUDA instead of the per-expert loop, whose launches and host syncs dominate a
        # short prefill (a turn appended after a reused prefix); CPUs keep the loop's exact arithmetic
        self.grouped_prefill = cuda if grouped_prefill is None else bool(grouped_prefill)
        # a short prefill (a turn appended after a reused prefix) padded to a power of two and replayed
        # as a CUDA graph per (padded length, key bucket): its several hundred launches become one.
        # Without graphs the same padded form runs eagerly (how tests check it on a CPU).
        # (bf16 only by default: torch's grouped GEMM in fp32 copies to the host, which a capture refuses)
        self.graph_prefill = (self.graphs and self.grouped_prefill and self.dtype == torch.bfloat16
                              if graph_prefill is None else bool(graph_prefill))
        self._pgraphs: dict[tuple[int, int], Any] = {}
        self._pgraph_pool = None
        self._pbuf: dict[int, tuple[Any, Any]] = {}  # padded length -> (input rows, logits) buffers
        self._p0 = torch.zeros(1, device=self.device, dtype=torch.long)
        self._plast = torch.zeros(1, device=self.device, dtype=torch.long)
        self._fx = {f.__name__: _Compiled(f, self.fused and cuda) for f in
                    (_f_rms, _f_add_rms, _f_rope, _f_silu_mul, _f_router, _f_moe_delta)}
        self._layers = [_Weights(layer) for layer in language.layers[: self.n_layers]]
        self._norm, self._norm_eps = language.norm.weight, language.norm.variance_epsilon
        self._embed = language.embed_tokens.weight
        rot = language.rotary_emb
        self._inv_freq = rot.inv_freq.float()
        self._rope_scale = float(getattr(rot, "attention_scaling", 1.0))
        self._lock = lock or threading.RLock()  # the model's device lock, shared with background encodes
        self._graph_pool = None
        self._graphs: dict[int, Any] = {}
        self._owner: Any = None
        self._ids: list[int] = []
        self._images: list[tuple[int, int, Any]] = []
        self._kv_len = 0
        self._seq_valid = 0  # leading rows of seq / keys that hold the owner's ids and their keys
        self._parked: OrderedDict[Any, _Parked] = OrderedDict()
        self._ngram = (0, None, None)  # (n, window, whitelist) the ban tensors were set up for
        self.capacity = 0
        self.stats = GenerationStats()
        with torch.inference_mode():
            self._allocate(self._round(capacity or self.window))

    @property
    def lock(self) -> threading.RLock:
        """Held while the engine runs (a whole streamed generation): other work on the same device
        (a background page encode) takes it too, so it never interleaves with a step or a capture."""
        return self._lock

    # -- memory -------------------------------------------------------------------------------------
    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.kv_heads * self.head_dim * self._embed.element_size()

    def memory(self) -> dict[str, Any]:
        """Bytes held: the working cache (the window) and each parked session's KV."""
        parked = {str(k): p.kv.numel() * p.kv.element_size() for k, p in self._parked.items()}
        return {"capacity_tokens": self.capacity, "working_bytes": self.capacity * self.kv_bytes_per_token,
                "owner": self._owner, "owner_tokens": self._kv_len, "parked_bytes": parked}

    def _round(self, n: int) -> int:
        w = self.window
        return max(w, -(-n // w) * w)

    def _allocate(self, capacity: int) -> None:
        """(Re)allocate the working cache for `capacity` positions, keeping the valid prefix."""
        import torch

        old = (self.k, self.v) if self.capacity else None
        shape = (self.n_layers, 1, self.kv_heads, capacity, self.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        if old is not None and self._kv_len:
            self.k[:, :, :, : self._kv_len] = old[0][:, :, :, : self._kv_len]
            self.v[:, :, :, : self._kv_len] = old[1][:, :, :, : self._kv_len]
        seq = torch.zeros(capacity + 1, device=self.device, dtype=torch.long)
        keys = torch.full((capacity + 1,), -1, device=self.device, dtype=torch.long)
        if self.capacity:
            seq[: self.capacity + 1] = self.seq
            keys[: self.capacity + 1] = self.keys
        self.seq, self.keys = seq, keys
        self.pos = torch.zeros(1, device=self.device, dtype=torch.long)
        self.out_tok = torch.zeros(1, device=self.device, dtype=torch.long)
        self._ar = torch.arange(capacity + 1, device=self.device)
        freqs = self._ar[:capacity].float()[:, None] * self._inv_freq.to(self.device)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * self._rope_scale).to(self.dtype)
        self.sin = (emb.sin() * self._rope_scale).to(self.dtype)
        self.capacity = capacity
        self._drop_graphs()  # captured on the old buffers

    def release(self, session: Any) -> None:
        """Forget a session's KV (parked or in the working cache)."""
        with self._lock:
            self._parked.pop(session, None)
            if self._owner == session:
                self._owner, self._ids, self._images, self._kv_len, self._seq_valid = None, [], [], 0, 0

    def _switch(self, session: Any) -> None:
        import torch

        if session == self._owner:
            return
        parked = self._parked.pop(session, None) if session is not None else None
        if self._owner is not None and self._kv_len and self.max_sessions > 0:
            n = self._kv_len
            kv = torch.stack([self.k[:, :, :, :n], self.v[:, :, :, :n]]).clone()
            self._parked[self._owner] = _Parked(self._ids[:n], list(self._images), kv, n)
            self._parked.move_to_end(self._owner)
            while len(self._parked) > self.max_sessions:
                gone, _ = self._parked.popitem(last=False)
                log.debug("decode engine: released parked session %r", gone)
        self._owner, self._ids, self._images, self._kv_len = session, [], [], 0
        self._seq_valid = 0
        if parked is not None:
            if parked.n > self.capacity:
                self._allocate(self._round(parked.n + 1))
            self.k[:, :, :, : parked.n] = parked.kv[0]
            self.v[:, :, :, : parked.n] = parked.kv[1]
            self._ids, self._images, self._kv_len = parked.ids, parked.images, parked.n

    # -- the forward ------------------------------------------------------------------------------
    def _attention(self, q, keys, vals, mask, causal_from: int | None):
        import torch.nn.functional as F

        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            keys, vals = keys.repeat_interleave(rep, 1), vals.repeat_interleave(rep, 1)
        if causal_from is None:  # one query row, or rows that may see every key given
            return F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        if causal_from == 0:
            return F.scaled_dot_product_attention(q, keys, vals, is_causal=True)
        from torch.nn.attention.bias import causal_lower_right

        return F.scaled_dot_product_attention(q, keys, vals, attn_mask=causal_lower_right(q.shape[2], keys.shape[2]))

    def _moe_one(self, w: _Weights, h):
        """The routed experts for one token: top-k of the softmax router, their weights gathered."""
        import torch
        import torch.nn.functional as F

        x = h.reshape(1, -1)
        scores = F.linear(x.float(), w.router).softmax(dim=-1, dtype=torch.float32)
        top_w, top_i = torch.topk(scores, k=w.top_k, dim=-1, sorted=False)
        idx = top_i[0]
        if self._expert_kernel:
            from optimem.model.moe_kernel import expert_gemv

            g, u = expert_gemv(w.experts_gate_up, x[0], idx, shared_input=True).chunk(2, dim=1)  # [k, I] each
            y = expert_gemv(w.experts_down, (F.silu(g) * u).contiguous(), idx, shared_input=False)  # [k, H]
        else:
            gu = torch.bmm(w.experts_gate_up.index_select(0, idx), x.t().expand(w.top_k, -1, -1).contiguous())
            g, u = gu.chunk(2, dim=1)
            y = torch.bmm(w.experts_down.index_select(0, idx), F.silu(g) * u)[..., 0]  # [k, H]
        routed = (y.float() * (top_w[0, :, None] * w.scale)).sum(0).to(h.dtype)
        return routed.view_as(h)

    def _moe_grouped(self, w: _Weights, h):
        """The MoE block for many tokens with the routed experts as grouped GEMMs (same routing and
        scaling as the module; None, once logged, where this transformers has no grouped forward)."""
        try:
            from transformers.integrations.moe import grouped_mm_experts_forward
        except ImportError:
            log.warning("decode engine: this transformers has no grouped_mm experts forward; prefill keeps the loop")
            self.grouped_prefill = False
            return None
        mlp = w.module
        _, top_w, top_i = mlp.gate(h)
        flat = h.reshape(-1, h.shape[-1])
        try:
            routed = grouped_mm_experts_forward(mlp.experts, flat, top_i, top_w).view_as(h)
        except Exception as exc:  # noqa: BLE001 - a device or dtype the grouped GEMM refuses: keep the loop
            log.warning("decode engine: grouped expert prefill failed (%s: %s); prefill keeps the loop",
                        type(exc).__name__, str(exc)[:200])
            self.grouped_prefill = False
            return None
        return routed + mlp.shared_experts(h)

    def _layer(self, i: int, x, cos, sin, write_pos, kv_len: int, mask, causal_from: int | None):
        import torch.nn.functional as F

        w = self._layers[i]
        n = x.shape[1]
        hd, H, Hk = self.head_dim, self.heads, self.kv_heads
        h = _rms(x, w.ln1, w.eps1)
        qk, v = F.linear(h, w.qkv, w.qkv_b).split([(H + Hk) * hd, Hk * hd], dim=-1)
        qk = _rotate(qk.view(1, n, H + Hk, hd).transpose(1, 2), cos, sin)  # q and k rotated together
        q, k = qk[:, :H], qk[:, H:]
        v = v.view(1, n, Hk, hd).transpose(1, 2)
        self.k[i].index_copy_(2, write_pos, k)
        self.v[i].index_copy_(2, write_pos, v)
        att = self._attention(q, self.k[i][:, :, :kv_len], self.v[i][:, :, :kv_len], mask, causal_from)
        x = x + F.linear(att.transpose(1, 2).reshape(1, n, H * hd), w.o, w.o_b)
        h = _rms(x, w.ln2, w.eps2)
        if w.moe and n > 1:
            mlp = self._moe_grouped(w, h) if self.grouped_prefill else None
            if mlp is None:
                mlp = w.module(h)  # prefill: transformers' expert loop, the eager path's own arithmetic
        else:
            g, u = F.linear(h, w.gate_up).chunk(2, dim=-1)
            mlp = F.linear(F.silu(g) * u, w.down)
            if w.moe:
                mlp = self._moe_one(w, h) + mlp
        return x + mlp

    def _logits(self, x):
        import torch.nn.functional as F

        return F.linear(_rms(x[:, -1], self._norm, self._norm_eps), self.lm_head.weight)[0]

    def _prefill(self, embeds, start: int):
        """Run `embeds` ([1, n, hidden], positions start..start+n-1) through the decoder in chunks,
        filling the cache; the last position's logits."""
        import torch

        n = embeds.shape[1]
        if self.graph_prefill and 1 < n <= _PREFILL_GRAPH_MAX:
            nb = _pow2(max(n, _PREFILL_GRAPH_MIN))
            if start + nb <= self.capacity:
                return self._prefill_padded(embeds, start, nb)
        logits = None
        for c in range(0, n, self.prefill_chunk):
            x = embeds[:, c : c + self.prefill_chunk]
            p0 = start + c
            m = x.shape[1]
            pos = self._ar[p0 : p0 + m]
            cos, sin = self.cos[p0 : p0 + m], self.sin[p0 : p0 + m]
            for i in range(self.n_layers):
                x = self._layer(i, x, cos, sin, pos, p0 + m, None, p0 if m > 1 else None)
            if c + self.prefill_chunk >= n:
                logits = self._logits(x)
        assert logits is not None
        return logits

    def _prefill_padded(self, embeds, start: int, nb: int):
        """The prefill of n <= nb rows as nb rows (zeros after the n real ones) attending over a
        key bucket under a causal mask built on the device from a device-held start, so one CUDA
        graph serves every start within the bucket. The padding rows write keys past position
        start+n-1, which nothing reads: a decode step writes its own row before attending, and masks
        what lies beyond it."""
        n = embeds.shape[1]
        if nb not in self._pbuf:
            import torch

            self._pbuf[nb] = (torch.zeros(1, nb, self.hidden, device=self.device, dtype=self.dtype),
                              torch.zeros(self.vocab, device=self.device, dtype=self.dtype))
        px, plogits = self._pbuf[nb]
        px[:, :n].copy_(embeds)
        px[:, n:].zero_()
        self._p0.fill_(start)
        self._plast.fill_(n - 1)
        T = self._bucket(start + nb)
        if not self.graphs:
            self._prefill_body(nb, T)
            return plogits
        graph = self._pgraphs.get((nb, T))
        if graph is None:
            try:
                graph = self._capture_prefill(nb, T)
            except Exception as exc:  # noqa: BLE001 - an op the capture refuses: prefill eagerly from now on
                log.warning("decode engine: capturing the short prefill failed (%s: %s); prefill runs eagerly",
                            type(exc).__name__, str(exc)[:200])
                self.graph_prefill = False
                self._prefill_body(nb, T)
                return plogits
        graph.replay()
        return plogits

    def _prefill_body(self, nb: int, T: int) -> None:
        px, plogits = self._pbuf[nb]
        pos = self._p0 + self._ar[:nb]
        cos, sin = self.cos.index_select(0, pos), self.sin.index_select(0, pos)
        mask = (self._ar[:T].view(1, T) <= pos.view(nb, 1)).view(1, 1, nb, T)
        x = px
        for i in range(self.n_layers):
            x = self._layer(i, x, cos, sin, pos, T, mask, None)
        plogits.copy_(self._logits(x.index_select(1, self._plast)))

    def _capture_prefill(self, nb: int, T: int):
        """Capture the padded prefill at (nb, T) on the current inputs (the warm-up runs write what
        the replay writes again)."""
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._prefill_body(nb, T)
        torch.cuda.current_stream().wait_stream(side)
        if self._pgraph_pool is None:
            self._pgraph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pgraph_pool):
            self._prefill_body(nb, T)
        self._pgraphs[(nb, T)] = graph
        return graph

    def warmup_prefill(self, sizes: Sequence[int], starts: Sequence[int]) -> None:
        """Capture the padded-prefill graphs a prefill of each size after each start will use."""
        import torch

        if not (self.graphs and self.graph_prefill):
            return
        with self._lock, torch.inference_mode():
            owner = self._owner
            self._switch(("warmup",))
            for start in starts:
                for n in sizes:
                    nb = _pow2(max(n, _PREFILL_GRAPH_MIN))
                    if 1 < n <= _PREFILL_GRAPH_MAX and start + nb <= self.capacity:
                        self._prefill_padded(torch.zeros(1, n, self.hidden, device=self.device, dtype=self.dtype),
                                             start, nb)
            self.release(("warmup",))
            self._switch(owner)

    def _decode_step(self, T: int) -> None:
        """Forward the token at seq[pos-1], choose the next one, append it (pos += 1). With the
        bucketed form it attends over the first T cache rows under a length mask (graph-safe)."""
        import torch.nn.functional as F

        p = self.pos - 1
        x = F.embedding(self.seq.index_select(0, p), self._embed).view(1, 1, -1)
        cos, sin = self.cos.index_select(0, p), self.sin.index_select(0, p)
        mask = (self._ar[:T] < self.pos).view(1, 1, 1, T) if self.bucketed else None
        if self.fused:
            self._select(self._fused_layers(x, cos, sin, p, T, mask), T)
            return
        for i in range(self.n_layers):
            x = self._layer(i, x, cos, sin, p, T, mask, None)
        self._select(self._logits(x), T)

    def _fused_layers(self, x, cos, sin, p, T: int, mask):
        """The one-token forward with each layer's elementwise chains compiled (same arithmetic as
        `_layer`; the residual add is folded into the next norm). Returns the logits."""
        import torch.nn.functional as F

        fx = self._fx
        H, Hk, hd = self.heads, self.kv_heads, self.head_dim
        delta = None
        for i, w in enumerate(self._layers):
            if delta is None:
                h = fx["_f_rms"](x, w.ln1, w.eps1)
            else:
                x, h = fx["_f_add_rms"](x, delta, w.ln1, w.eps1)
            q, k, v = fx["_f_rope"](F.linear(h, w.qkv, w.qkv_b), cos, sin, H, Hk, hd)
            self.k[i].index_copy_(2, p, k)
            self.v[i].index_copy_(2, p, v)
            att = self._attention(q, self.k[i][:, :, :T], self.v[i][:, :, :T], mask, None)
            x, h = fx["_f_add_rms"](x, F.linear(att.transpose(1, 2).reshape(1, 1, H * hd), w.o, w.o_b), w.ln2, w.eps2)
            delta = F.linear(fx["_f_silu_mul"](F.linear(h, w.gate_up)), w.down)
            if w.moe:
                from optimem.model.moe_kernel import expert_gemv

                top_w, top_i = fx["_f_router"](h, w.router, w.top_k)
                idx = top_i[0]
                if self._expert_kernel:
                    a = fx["_f_silu_mul"](expert_gemv(w.experts_gate_up, h.reshape(-1), idx, shared_input=True))
                    y = expert_gemv(w.experts_down, a, idx, shared_input=False)
                else:  # the same gathered experts in torch (CPUs; tests)
                    gu = w.experts_gate_up.index_select(0, idx) @ h.reshape(-1, 1)
                    y = (w.experts_down.index_select(0, idx) @ fx["_f_silu_mul"](gu[..., 0])[..., None])[..., 0]
                delta = fx["_f_moe_delta"](y, top_w, w.scale, delta)
        _, h = fx["_f_add_rms"](x, delta, self._norm, self._norm_eps)
        return F.linear(h[:, -1], self.lm_head.weight)[0]

    # -- the n-gram ban and the choice ------------------------------------------------------------------
    def _setup_ngram(self, n: int, window: int | None, whitelist: Sequence[int] | None) -> None:
        import torch

        key = (n, window, tuple(whitelist) if whitelist else None)
        if key == self._ngram:
            return
        if n > _MAX_NGRAM:
            raise ModelError(f"no_repeat_ngram_size {n} is over the engine's limit of {_MAX_NGRAM}")
        self._ngram = key
        self._seq_valid = 0  # keys were hashed for another n
        m = max(n - 1, 1)
        self._m = m
        ar = torch.arange(m, device=self.device)
        # powers of the base, highest first: hash(w) = sum w_j * B^(m-1-j) mod P
        self._pw1 = torch.tensor([pow(_B1, m - 1 - j, _P1) for j in range(m)], device=self.device)
        self._pw2 = torch.tensor([pow(_B2, m - 1 - j, _P2) for j in range(m)], device=self.device)
        self._ar_m = ar
        self._white = None
        if whitelist:
            self._white = torch.zeros(self.vocab, dtype=torch.bool, device=self.device)
            self._white[torch.tensor(list(whitelist), device=self.device)] = True
        self._drop_graphs()

    def _hash(self, windows):
        """62-bit keys of [..., m] token windows."""
        return ((windows * self._pw1).sum(-1) % _P1) * (1 << 31) + (windows * self._pw2).sum(-1) % _P2

    def _fill_keys(self, length: int, start: int = 0) -> None:
        """keys[e] = hash(seq[e-m:e]) for every e in [max(m, start), length): the (n-1)-gram before
        position e (those before `start` depend only on tokens that did not change)."""
        m = self._m
        lo = max(m, start)
        if self._ngram[0] <= 0 or length <= lo:
            return
        windows = self.seq[lo - m : length - 1].unfold(0, m, 1)  # windows starting lo-m..length-1-m
        self.keys[lo:length] = self._hash(windows)

    def _select(self, logits, T: int) -> None:
        """Ban, argmax, append: seq[pos] = token, keys[pos] = hash of the (n-1)-gram before it."""
        import torch

        scores = logits.float()
        n, window, _ = self._ngram
        L = self.pos
        if n > 0:
            m = self._m
            idx = (L - m + self._ar_m).clamp(min=0)
            h = self._hash(self.seq.index_select(0, idx))  # [1]
            e = self._ar[:T]
            valid = (e < L) & (e >= m)
            if window:
                valid &= e >= L - window + m
            match = (self.keys[:T] == h) & valid
            counts = torch.zeros(self.vocab, device=self.device, dtype=torch.float32)
            counts.scatter_add_(0, self.seq[:T], match.float())
            banned = counts > 0
            if self._white is not None:
                banned &= ~self._white
            scores = scores.masked_fill(banned, float("-inf"))
            self.keys.index_copy_(0, L, h)
        nxt = scores.argmax().view(1)
        self.seq.index_copy_(0, L, nxt)
        self.out_tok.copy_(nxt)
        self.pos += 1

    # -- graphs -------------------------------------------------------------------------------------
    def _bucket(self, length: int) -> int:
        """The cache rows a step at `length` keys attends over: the exact length, or (bucketed) the
        next multiple of an eighth of the next power of two (at least 256), capped at the capacity.
        Eighths, not powers of two: a step reads every row of its bucket, and a context just over
        a power of two (an 8k-budget prompt of 6.5k tokens) would otherwise read up to twice the KV."""
        if not self.bucketed:
            return length
        b = _MIN_BUCKET
        while b < length:
            b *= 2
        step = max(b // _BUCKET_PARTS, _MIN_BUCKET)
        return min(-(-length // step) * step, self.capacity)

    def buckets(self, upto: int) -> list[int]:
        """Every bucket a step at up to `upto` keys may use (what `warmup` should capture)."""
        out: list[int] = []
        n = 1
        while True:
            b = self._bucket(n)
            if not out or b != out[-1]:
                out.append(b)
            if b >= upto or b >= self.capacity:
                return out
            n = b + 1

    def _step(self, length: int) -> None:
        T = self._bucket(length)
        if not self.graphs:
            self._decode_step(T)
            return
        graph = self._graphs.get(T)
        if graph is None:
            graph = self._capture(T)
        graph.replay()

    def _drop_graphs(self) -> None:
        """Forget the captured graphs and their memory pool (a pool whose graphs are all gone cannot
        take a new capture)."""
        self._graphs.clear()
        self._graph_pool = None
        self._pgraphs.clear()
        self._pgraph_pool = None

    def _capture(self, T: int):
        """Capture the step at bucket T on the current state (the warm-up runs are undone: pos is
        restored, and what they wrote is what the real step writes again)."""
        import torch

        saved = self.pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._decode_step(T)
                self.pos.copy_(saved)
        torch.cuda.current_stream().wait_stream(side)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            self._decode_step(T)
        self.pos.copy_(saved)
        self._graphs[T] = graph
        return graph

    def warmup(self, lengths: Sequence[int] = (), *, no_repeat_ngram_size: int = 20) -> None:
        """Capture the graphs for the buckets of `lengths` now, instead of at their first use."""
        import torch

        if not self.graphs:
            return
        with self._lock, torch.inference_mode():
            self._setup_ngram(no_repeat_ngram_size, None, None)
            owner = self._owner
            self._switch(("warmup",))
            for n in lengths:
                if n + 2 > self.capacity:
                    self._allocate(self._round(n + 2))
                self.pos.fill_(max(n, 1))
                self._capture(self._bucket(max(n, 1)))
            self.release(("warmup",))
            self._switch(owner)

    # -- generation -------------------------------------------------------------------------------------
    def _match(self, ids: list[int], images: list[tuple[int, int, Any]]) -> int:
        """Length of the leading part of `ids` whose KV the working cache holds."""
        import numpy as np

        limit = min(len(ids), self._kv_len)
        diff = np.flatnonzero(np.asarray(self._ids[:limit]) != np.asarray(ids[:limit]))
        m = int(diff[0]) if diff.size else limit
        olds = {s: (e, key) for s, e, key in self._images}
        for s, e, key in images:
            if s >= m:
                break
            prev = olds.get(s)
            if prev is None or prev[0] != e or not _same(prev[1], key):
                m = s
                break
        return m

    def _embed_tail(self, ids: list[int], images: list[tuple[int, int, Any]], tensors: list[Any], start: int):
        import torch
        import torch.nn.functional as F

        tail = torch.tensor(ids[start:], device=self.device, dtype=torch.long)
        x = F.embedding(tail, self._embed).unsqueeze(0).clone()
        for (s, e, _), t in zip(images, tensors):
            if e <= start:
                continue
            rows = t.to(self.device, x.dtype).reshape(-1, x.shape[-1])
            lo = max(s, start)
            x[0, lo - start : e - start] = rows[lo - s :]
        return x

    def run(self, input_ids: Sequence[int], image_embeds: Sequence[Any] = (), *, image_token_id: int,
            max_new_tokens: int = 256, stop_token_ids: Sequence[int] = (), no_repeat_ngram_size: int = 20,
            ngram_window: int | None = None, ngram_whitelist: Sequence[int] | None = None,
            session: Any = "default", image_keys: Sequence[Hashable] | None = None,
            reuse: bool = True) -> Iterator[int]:
        """Token ids as they are chosen (a stop token ends the run and is not yielded)."""
        import torch

        ids = [int(i) for i in input_ids]
        if not ids:
            raise ModelError("generate needs at least one prompt token")
        tensors = list(image_embeds)
        images = _image_spans(ids, tensors, image_token_id, image_keys)
        stops = {int(s) for s in stop_token_ids}
        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            self._switch(session)
            self._setup_ngram(no_repeat_ngram_size, ngram_window, ngram_whitelist)
            P = len(ids)
            need = P + max(max_new_tokens, 1)  # seq rows written: up to P + max_new_tokens - 1
            if need > self.capacity:
                self._allocate(self._round(need))
            start = min(self._match(ids, images), P - 1) if reuse else 0
            self.stats = GenerationStats(session=session, prompt_tokens=P, reused_tokens=start, prefill_tokens=P - start,
                                         graphs=self.graphs, capacity=self.capacity)
            # ids and n-gram keys are rewritten only from the first changed position (all of them
            # after a session switch or an n-gram setting change, which leave other rows there)
            lo = min(start, self._seq_valid)
            self.seq[lo:P] = torch.tensor(ids[lo:], dtype=torch.long).to(self.device, non_blocking=True)
            self._fill_keys(P, lo)
            x = self._embed_tail(ids, images, tensors, start)
            ta = time.perf_counter()
            logits = self._prefill(x, start)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.stats.setup_s, self.stats.forward_s = ta - t0, time.perf_counter() - ta
            # the state is committed as it grows, so an abandoned stream leaves a consistent cache
            self._ids, self._images, self._kv_len, self._seq_valid = list(ids), images, P, P
            self.pos.fill_(P)
            out: list[int] = []
            t1 = t0
            try:
                if max_new_tokens <= 0:
                    return
                self._select(logits, self._bucket(P))
                # with graphs the next step is queued before this token is read (the step takes the
                # token from the device): the host's read, its Python and the consumer's handling of
                # the piece overlap the GPU's next step. A step queued after a stop token only writes
                # rows past what the state claims (its KV and ids are rewritten by the next call).
                ahead = self.graphs
                host = torch.empty(1, dtype=torch.long, pin_memory=True) if ahead else None
                ready = torch.cuda.Event() if ahead else None
                while True:
                    if ahead:
                        k = len(out)
                        host.copy_(self.seq[P + k : P + k + 1], non_blocking=True)
                        ready.record()
                        if k + 1 < max_new_tokens:
                            self._step(P + k + 1)
                        ready.synchronize()
                        tok = int(host[0])
                    else:
                        tok = int(self.out_tok)
                    if not out:
                        t1 = time.perf_counter()
                        self.stats.prefill_s = t1 - t0
                    else:
                        self.stats.decode_steps += 1
                    self._ids.append(tok)
                    self._seq_valid = len(self._ids)
                    if tok in stops:
                        break
                    out.append(tok)
                    self.stats.new_tokens = len(out)
                    yield tok
                    if len(out) >= max_new_tokens:
                        break
                    L = P + len(out)
                    if not ahead:
                        self._step(L)
                    self._kv_len = L
            finally:
                if out:
                    self.stats.decode_s = time.perf_counter() - t1


def _same(a: Any, b: Any) -> bool:
    return a is b or (not _is_tensor(a) and not _is_tensor(b) and a == b)


def _is_tensor(x: Any) -> bool:
    return type(x).__name__ in ("Tensor", "Parameter")


def _image_spans(ids: list[int], tensors: list[Any], image_token_id: int,
                 keys: Sequence[Hashable] | None) -> list[tuple[int, int, Any]]:
    """(start, end, key) of each image's placeholder rows, in order; the key is the caller's, or the
    embedding tensor itself (identity: the cache holds a reference, so it cannot be recycled)."""
    import numpy as np

    if keys is not None and len(keys) != len(tensors):
        raise ModelError(f"{len(keys)} image keys for {len(tensors)} images")
    where = np.flatnonzero(np.asarray(ids) == image_token_id)
    rows = [int(np.prod(t.shape[:-1])) for t in tensors]
    if len(where) != sum(rows):
        raise ModelError(f"prompt has {len(where)} image placeholders but the images bring {sum(rows)} embeddings")
    spans = []
    k = 0
    for i, r in enumerate(rows):
        if r == 0:
            continue
        s, e = int(where[k]), int(where[k + r - 1]) + 1
        if e - s != r:
            raise ModelError(f"image {i}'s {r} placeholder tokens are not contiguous in the prompt")
        spans.append((s, e, keys[i] if keys is not None else tensors[i]))
        k += r
    return spans
