"""SAM attention with its decomposed relative positions folded into one fused SDPA call.

transformers' SAM attention adds a dense relative-position bias [B, heads, HW, HW] to the scores.
That tensor has to be materialised (400 MB per 1024-px page and global block in bf16) and forces
SDPA off its flash kernel onto the slower bias-reading one. But the bias is low-rank by construction:

    bias[(i, j), (k, l)] = rel_h[(i, j), k] + rel_w[(i, j), l]

so it is an extra dot product. Append rel_h and rel_w to each query and one-hot(k), one-hot(l) to
each key; then q'·k' = scale·q·k + rel_h + rel_w exactly, and the whole thing is one bias-free SDPA
call with head dim 64 + H + W, H and W each rounded up to a multiple of 8 with zero columns (<= 256
for every DeepSeek-OCR mode: 64 + 16 + 16 in 14x14 windows, 192 in a 1024-px global block, 224 at
1280 px). On CPU values are zero-padded to the same width (flash kernels want equal head dims) and the
padding is sliced off; on CUDA, cuDNN takes the 64-wide values as they are.

`fuse_sam_attention(module)` swaps the attention class of every SAM layer under `module` in place
(weights and parameter names unchanged, so checkpoints load the same); the maths is the reference's
up to float rounding (tested against transformers' own attention in fp32).

`flex_sam_attention(module)` swaps in `FlexRelPosSamAttention` instead: torch's flex_attention at the
real head dim (64) with the bias added inside the kernel by a score_mod that reads rel_h[q, kv // W]
and rel_w[q, kv % W] from the two small [B, heads, HW, H|W] tables. No widened heads (the fused trick
runs a 1024-px global block's QK at head dim 192), no bias tensor; exact, but measured 8-11x slower
than the fused SDPA in the global blocks and 1.7-9x in windows on an H100 (see the class), so it is
an option, not the default.
`restore_sam_attention(module)` puts transformers' own class back (the benchmark's stock path).

On CUDA with triton, the blocks run `optimem.model.sam_kernel` instead (each kernel registered as
an op, opaque to torch.compile): `FusedRelPosSamAttention` sends the global blocks (grids wider than
KERNEL_MIN_GRID) to a flash-attention kernel at head dim 64 with both bias terms computed and added
inside it; `FusedSamVisionLayer` sends a windowed block's attention over the unpadded grid to the
window kernel (no padding, partition or crop); `FusedGeluSamMLP` runs the MLP's first matmul and its
exact GELU as one kernel. `fuse_sam_attention` swaps all three in; on CPU they are transformers' own.
It also swaps the patch embedding for `MatmulSamPatchEmbeddings` (everywhere: same sum, and a
contiguous residual stream after it).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from transformers.activations import GELUActivation
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import (
    DeepseekOcr2SamMLPBlock,
    DeepseekOcr2SamPatchEmbeddings,
    DeepseekOcr2SamVisionAttention,
    DeepseekOcr2SamVisionLayer,
    DeepseekOcr2SamVisionSdpaAttention,
)

log = logging.getLogger(__name__)

MAX_HEAD_DIM = 256  # the largest head dim torch's fused SDPA kernels take


KERNEL_MIN_GRID = 16  # grids wider than this (the global blocks; windows are 14 wide) use the Triton kernel on CUDA


@torch.library.custom_op("optimem::sam_global_attention", mutates_args=())
def sam_global_attention_op(qkv: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, scale: float,
                            grid_h: int, grid_w: int, heads: int) -> torch.Tensor:
    """`sam_kernel.sam_global_attention` as one op, opaque to torch.compile: qkv [b, n, 3C] -> [b, n, C]
    (the layout the output projection reads, so no copy on either side)."""
    from optimem.model.sam_kernel import sam_global_attention

    return sam_global_attention(qkv, rel_pos_h, rel_pos_w, scale, (grid_h, grid_w), heads)


@sam_global_attention_op.register_fake
def _(qkv, rel_pos_h, rel_pos_w, scale, grid_h, grid_w, heads):
    b, n, c3 = qkv.shape
    return qkv.new_empty(b, n, c3 // 3)


@torch.library.custom_op("optimem::sam_window_attention", mutates_args=())
def sam_window_attention_op(qkv: torch.Tensor, qkv_bias: torch.Tensor | None, rel_pos_h: torch.Tensor,
                            rel_pos_w: torch.Tensor, scale: float, grid_h: int, grid_w: int, heads: int,
                            window: int) -> torch.Tensor:
    """`sam_kernel.sam_window_attention` as one op, opaque to torch.compile: qkv [b, n, 3C] -> [b, n, C]."""
    from optimem.model.sam_kernel import sam_window_attention

    return sam_window_attention(qkv, qkv_bias, rel_pos_h, rel_pos_w, scale, (grid_h, grid_w), heads, window)


@sam_window_attention_op.register_fake
def _(qkv, qkv_bias, rel_pos_h, rel_pos_w, scale, grid_h, grid_w, heads, window):
    b, n, c3 = qkv.shape
    return qkv.new_empty(b, n, c3 // 3)


@torch.library.custom_op("optimem::linear_gelu", mutates_args=())
def linear_gelu_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`sam_kernel.linear_gelu` (matmul, bias and exact GELU in one kernel) as one op."""
    from optimem.model.sam_kernel import linear_gelu

    return linear_gelu(x, weight, bias)


@linear_gelu_op.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


_KERNEL_AVAILABLE: bool | None = None


def _kernel_available() -> bool:
    # asked in every global block's forward: answered once (a plain global, which torch.compile
    # reads as a constant, where a functools cache wrapper could break the graph)
    global _KERNEL_AVAILABLE
    if _KERNEL_AVAILABLE is None:
        from optimem.model.sam_kernel import available

        _KERNEL_AVAILABLE = available()
    return _KERNEL_AVAILABLE


class FusedRelPosSamAttention(DeepseekOcr2SamVisionAttention):
    """Drop-in for transformers' SAM attention (eager or SDPA): same parameters, same outputs.

    On CUDA with triton, the global blocks run `sam_kernel` (head dim 64, bias added in the loop)
    instead of the widened-head SDPA call; `use_kernel = False` turns that off."""

    use_kernel: bool | None = None  # None: on CUDA where triton is importable

    # values zero-padded to the query/key width (flash kernels want equal head dims); None: padded on
    # CPU, not on CUDA, where cuDNN / mem-efficient SDPA take a narrower value head (measured on an
    # H100: a 1024-px global block 9.45 -> 8.04 ms, windows 3.24 -> 2.89 ms at batch 32)
    pad_v: bool | None = None

    def _rel_tables(self, q: torch.Tensor, h: int, w: int, align: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """rel_h [b, heads, h*w, h] and rel_w [b, heads, h*w, w]: the decomposed bias's two factors,
        bias[(i, j), (k, l)] = rel_h[(i, j), k] + rel_w[(i, j), l] (q unscaled, as the reference).
        With align > 1 the last dims are zero-padded to a multiple of it (the tables get zero rows, so
        the einsums' output width is aligned: 14-wide window outputs ran on a slow align-2 GEMM)."""
        b, heads, n, hd = q.shape
        qg = q.reshape(b, heads, h, w, hd)
        th, tw = self._rel_table(h, self.rel_pos_h).to(q.dtype), self._rel_table(w, self.rel_pos_w).to(q.dtype)
        hp, wp = -(-h // align) * align, -(-w // align) * align
        if hp != h:
            th = F.pad(th, (0, 0, 0, hp - h))
        if wp != w:
            tw = F.pad(tw, (0, 0, 0, wp - w))
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", qg, th)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", qg, tw)
        return rel_h.reshape(b, heads, n, hp), rel_w.reshape(b, heads, n, wp)

    @staticmethod
    def _rel_positions(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
        """The [2·size - 1, head_dim] table of one relative distance per row (the checkpoint's,
        linearly interpolated when it was trained for another size, as get_rel_pos does)."""
        dist = 2 * size - 1
        if rel_pos.shape[0] == dist:
            return rel_pos
        table = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).transpose(1, 2), size=dist, mode="linear")
        return table.reshape(-1, dist).permute(1, 0)

    def _rel_table(self, size: int, rel_pos: torch.Tensor) -> torch.Tensor:
        # as get_rel_pos for q_size == k_size, with the index built on the weights' device (no host sync)
        idx = torch.arange(size, device=rel_pos.device)
        return self._rel_positions(size, rel_pos)[idx[:, None] - idx[None, :] + (size - 1)]  # [size, size, head_dim]

    def _heads(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v [b, heads, h*w, hd]: views of one qkv projection (no copies)."""
        b, h, w, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(b, h * w, 3, self.num_attention_heads, -1).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def _project(self, out: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """[b, heads, h*w, hd] attention output -> the output projection over [b, h, w, heads*hd]."""
        heads, hd = out.shape[1], out.shape[-1]
        return self.proj(out.reshape(b, heads, h, w, hd).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1))

    def _kernel_ok(self, x: torch.Tensor) -> bool:
        """Whether the Triton kernels run this attention: CUDA, triton, relative positions on."""
        return self.use_rel_pos and x.is_cuda and self.use_kernel is not False and _kernel_available()

    def window_forward(self, hidden_states: torch.Tensor, window: int) -> torch.Tensor:
        """The whole windowed attention (qkv, attention, output projection) over the normed,
        unpadded [b, h, w, C] grid, through `sam_kernel.sam_window_attention` (see FusedSamVisionLayer)."""
        b, h, w, c = hidden_states.shape
        heads = self.num_attention_heads
        qkv = self.qkv(hidden_states).reshape(b, h * w, 3 * c)
        out = torch.ops.optimem.sam_window_attention(
            qkv, self.qkv.bias, self._rel_positions(window, self.rel_pos_h), self._rel_positions(window, self.rel_pos_w),
            float(self.scale), h, w, heads, window)
        return self.proj(out.reshape(b, h, w, c))

    def forward(self, hidden_states: torch.Tensor, output_attentions: Any = None) -> tuple[torch.Tensor, None]:
        b, h, w, c = hidden_states.shape
        n, heads = h * w, self.num_attention_heads
        if w > KERNEL_MIN_GRID and self._kernel_ok(hidden_states):
            qkv = self.qkv(hidden_states).reshape(b, n, 3 * c)
            out = torch.ops.optimem.sam_global_attention(
                qkv, self._rel_positions(h, self.rel_pos_h), self._rel_positions(w, self.rel_pos_w),
                float(self.scale), h, w, heads)
            return self.proj(out.reshape(b, h, w, c)), None
        q, k, v = self._heads(hidden_states)
        hd = q.shape[-1]
        hp, wp = -(-h // 8) * 8, -(-w // 8) * 8  # fused kernels want head dims in multiples of 8
        width = hd + hp + wp
        if not self.use_rel_pos or width > MAX_HEAD_DIM:  # no room for the trick: the plain bias path
            return self._unfused(q, k, v, b, h, w)
        rel_h, rel_w = self._rel_tables(q, h, w, align=8)
        q2 = torch.cat([q * self.scale, rel_h, rel_w], dim=-1)
        eye_h = torch.eye(h, hp, dtype=q.dtype, device=q.device)[:, None, :].expand(h, w, hp).reshape(n, hp)
        eye_w = torch.eye(w, wp, dtype=q.dtype, device=q.device)[None, :, :].expand(h, w, wp).reshape(n, wp)
        k2 = torch.cat([k, eye_h.expand(b, heads, n, hp), eye_w.expand(b, heads, n, wp)], dim=-1)
        if self.pad_v or (self.pad_v is None and not q.is_cuda):
            out = F.scaled_dot_product_attention(q2, k2, F.pad(v, (0, q2.shape[-1] - hd)), scale=1.0)[..., :hd]
        else:  # kernels that take a narrower value head (cuDNN): no zero columns multiplied
            out = F.scaled_dot_product_attention(q2, k2, v, scale=1.0)
        return self._project(out, b, h, w), None

    def _unfused(self, q, k, v, b, h, w):
        heads, hd = self.num_attention_heads, q.shape[-1]
        bias = None
        if self.use_rel_pos:
            flat = q.reshape(b * heads, h * w, hd)
            bias = self.get_decomposed_rel_pos(flat, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            bias = bias.reshape(b, heads, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self._project(out, b, h, w), None


class FusedSamVisionLayer(DeepseekOcr2SamVisionLayer):
    """transformers' SAM block, except that on CUDA with triton a windowed block with the fused
    attention runs it over the unpadded grid in one kernel (`sam_kernel.sam_window_attention`).

    The reference zero-pads the grid to a multiple of the window (64 -> 70 per side at 1024 px),
    projects the padding too, partitions, attends and crops: two copies of the grid and a fifth more
    qkv and projection work. The kernel reads the qkv projection of the real tokens where it lies,
    takes the padding's keys and values as what the reference computes for them (the qkv bias), skips
    the padding's queries (cropped anyway) and writes the output in grid order. Elsewhere (CPU, global
    blocks, flex attention) this is transformers' forward unchanged."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        attn = self.attn
        if not (self.window_size > 0 and type(attn) is FusedRelPosSamAttention and attn._kernel_ok(hidden_states)):
            return super().forward(hidden_states)
        hidden_states = hidden_states + attn.window_forward(self.layer_norm1(hidden_states), self.window_size)
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class FusedGeluSamMLP(DeepseekOcr2SamMLPBlock):
    """transformers' SAM MLP, except that on CUDA with triton the first matmul, its bias and the exact
    GELU run as one kernel (`sam_kernel.linear_gelu`). Unfused, the [tokens, 3072] pre-activation
    goes to memory and comes back for a separate GELU kernel (7.5 ms of a compiled 1024-px batch of
    32 on an H100: cuBLAS's GELU epilogue is the tanh approximation, and inductor leaves the exact
    one as its own kernel). Elsewhere this is transformers' forward unchanged."""

    use_kernel: bool | None = None  # None: on CUDA where triton is importable

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        act = self.act
        exact_gelu = isinstance(act, GELUActivation) or (isinstance(act, torch.nn.GELU) and act.approximate == "none")
        if not (exact_gelu and hidden_states.is_cuda and self.use_kernel is not False and _kernel_available()):
            return super().forward(hidden_states)
        return self.lin2(torch.ops.optimem.linear_gelu(hidden_states, self.lin1.weight, self.lin1.bias))


class MatmulSamPatchEmbeddings(DeepseekOcr2SamPatchEmbeddings):
    """SAM's patch embedding (conv, kernel = stride = p, no padding) as unfold + one matmul:
    out[b, i, j, o] = bias[o] + sum over (c, y, x) of w[o, c, y, x] * pixels[b, c, i*p + y, j*p + x].

    transformers' version permutes the convolution's NCHW output to [b, H, W, C] as a view, so the
    whole residual stream after it inherits a channels-first memory layout: every layer norm then
    copies its input and every residual add runs the strided elementwise kernel. In eager bf16 on an
    H100 (base, batch 32) that cost ~37 ms of 133, and cuDNN ran the 3-channel convolution itself on
    a generic implicit-GEMM kernel (~17 ms). The matmul's output is contiguous [b, H, W, C]."""

    def forward(self, pixel_values):
        conv = self.projection
        b, c, hh, ww = pixel_values.shape
        ph, pw = conv.kernel_size
        if (conv.stride != (ph, pw) or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1
                or hh % ph or ww % pw):
            return super().forward(pixel_values).contiguous()
        gh, gw = hh // ph, ww // pw
        patches = pixel_values.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, gh, gw, -1)
        return F.linear(patches, conv.weight.reshape(conv.weight.shape[0], -1), conv.bias)


def _flex_impl(q, k, v, rel_h, rel_w, scale: float):
    from torch.nn.attention.flex_attention import flex_attention

    w = rel_w.shape[-1]

    def score_mod(score, bi, hi, qi, ki):
        return score + rel_h[bi, hi, qi, ki // w] + rel_w[bi, hi, qi, ki % w]

    return flex_attention(q, k, v, score_mod=score_mod, scale=scale, kernel_options=FLEX_KERNEL_OPTIONS or None)


FLEX_KERNEL_OPTIONS: dict[str, Any] = {}  # passed to flex_attention (BLOCK_M, BLOCK_N, ...)


class FlexRelPosSamAttention(FusedRelPosSamAttention):
    """SAM attention through flex_attention at the real head dim: scores q·k·scale, plus
    rel_h[q, kv // W] + rel_w[q, kv % W] added by the score_mod, softmax, times v. Same parameters and
    outputs as transformers' class. Meant to run under torch.compile (see the module docstring).

    Exact, but slow on torch 2.11 / H100 at batch 32, 1024 px (compiled, one block; default, 128x64
    and 64x64 kernel blocks): a global block 91-93 / 72 / 66 ms against 8.1 ms for the fused SDPA,
    windows 27.7 / 7.1 / 5.2 ms against 3.0 ms; the whole compiled encoder 47.6 pages/s with flex
    everywhere, 70.1 with flex in the global blocks only, 270.7 fused. Not profiled further (the two
    gathers per score from the rel tables are the likely cost), so not the default anywhere."""

    def forward(self, hidden_states: torch.Tensor, output_attentions: Any = None) -> tuple[torch.Tensor, None]:
        b, h, w, _ = hidden_states.shape
        q, k, v = self._heads(hidden_states)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            rel_h, rel_w = self._rel_tables(q, h, w)  # unpadded: the score_mod indexes them by kv // W, kv % W
            out = _flex_impl(q, k, v, rel_h.contiguous(), rel_w.contiguous(), self.scale)
        return self._project(out, b, h, w), None


def _swap(module: torch.nn.Module, cls: type, where: str = "all") -> int:
    # a SAM layer knows whether it is windowed (window_size > 0) or global (0); its attention does not
    is_global = {id(sub.attn): sub.window_size == 0 for sub in module.modules()
                 if hasattr(sub, "window_size") and isinstance(getattr(sub, "attn", None), DeepseekOcr2SamVisionAttention)}
    count = 0
    for sub in module.modules():
        if not isinstance(sub, DeepseekOcr2SamVisionAttention) or type(sub) is cls:
            continue
        if where != "all" and (where == "global") != is_global.get(id(sub), False):
            continue
        if not isinstance(sub, FusedRelPosSamAttention):
            sub._optimem_stock_class = type(sub)
        sub.__class__ = cls
        count += 1
    return count


def fuse_sam_attention(module: torch.nn.Module) -> int:
    """Swap every transformers SAM attention under `module` for the fused one, in place; the SAM
    layers and MLPs for the classes with the CUDA kernel paths (FusedSamVisionLayer, FusedGeluSamMLP;
    transformers' own maths elsewhere); and the patch embedding for MatmulSamPatchEmbeddings.
    Returns how many attentions were swapped (0 means nothing SAM-like was found)."""
    count = _swap(module, FusedRelPosSamAttention)
    for sub in module.modules():  # the kernel paths of the windowed blocks and the MLPs (CUDA only)
        if type(sub) is DeepseekOcr2SamVisionLayer:
            sub.__class__ = FusedSamVisionLayer
        elif type(sub) is DeepseekOcr2SamMLPBlock:
            sub.__class__ = FusedGeluSamMLP
        elif type(sub) is DeepseekOcr2SamPatchEmbeddings:
            sub.__class__ = MatmulSamPatchEmbeddings
    log.debug("fused relative-position attention in %d SAM layers", count)
    return count


def flex_sam_attention(module: torch.nn.Module, where: str = "all") -> int:
    """Swap SAM attentions under `module` for the flex_attention one, in place: `where` is "all",
    "global" (the full-grid blocks only; windows keep their current class) or "window"."""
    if where not in ("all", "global", "window"):
        raise ValueError(f"where must be all, global or window, not {where!r}")
    return _swap(module, FlexRelPosSamAttention, where)


def restore_sam_attention(module: torch.nn.Module) -> int:
    """Put transformers' own SAM attention class back wherever optimem swapped it (the stock path)."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, FusedRelPosSamAttention):
            sub.__class__ = getattr(sub, "_optimem_stock_class", DeepseekOcr2SamVisionSdpaAttention)
            count += 1
        elif type(sub) is FusedSamVisionLayer:
            sub.__class__ = DeepseekOcr2SamVisionLayer
        elif type(sub) is FusedGeluSamMLP:
            sub.__class__ = DeepseekOcr2SamMLPBlock
        elif type(sub) is MatmulSamPatchEmbeddings:
            sub.__class__ = DeepseekOcr2SamPatchEmbeddings
    return count
