"""SAM attention with its decomposed relative positions folded into one fused SDPA call.

transformers' SAM attention adds a dense relative-position bias [B, heads, HW, HW] to the scores.
That tensor has to be materialised (400 MB per 1024-px page and global block in bf16) and forces
SDPA off its flash kernel onto the slower bias-reading one. But the bias is low-rank by construction:

    bias[(i, j), (k, l)] = rel_h[(i, j), k] + rel_w[(i, j), l]

so it is an extra dot product. Append rel_h and rel_w to each query and one-hot(k), one-hot(l) to
each key; then q'·k' = scale·q·k + rel_h + rel_w exactly, and the whole thing is one bias-free SDPA
call with head dim 64 + H + W (<= 256 for every DeepSeek-OCR mode: 92 -> 96 in 14x14 windows, 192 in
a 1024-px global block, 224 at 1280 px). Values are zero-padded to the same width because the flash
kernel wants equal head dims; the padding is sliced off the output.

`fuse_sam_attention(module)` swaps the attention class of every SAM layer under `module` in place
(weights and parameter names unchanged, so checkpoints load the same); the maths is the reference's
up to float rounding (tested against transformers' own attention in fp32).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2SamVisionAttention

log = logging.getLogger(__name__)

MAX_HEAD_DIM = 256  # the largest head dim torch's fused SDPA kernels take


class FusedRelPosSamAttention(DeepseekOcr2SamVisionAttention):
    """Drop-in for transformers' SAM attention (eager or SDPA): same parameters, same outputs."""

    def _rel_table(self, size: int, rel_pos: torch.Tensor) -> torch.Tensor:
        # as get_rel_pos for q_size == k_size, with the index built on the weights' device (no host sync)
        dist = 2 * size - 1
        table = rel_pos
        if table.shape[0] != dist:
            table = F.interpolate(table.reshape(1, table.shape[0], -1).transpose(1, 2), size=dist, mode="linear")
            table = table.reshape(-1, dist).permute(1, 0)
        idx = torch.arange(size, device=rel_pos.device)
        return table[idx[:, None] - idx[None, :] + (size - 1)]  # [size, size, head_dim]

    def forward(self, hidden_states: torch.Tensor, output_attentions: Any = None) -> tuple[torch.Tensor, None]:
        b, h, w, _ = hidden_states.shape
        n, heads = h * w, self.num_attention_heads
        qkv = self.qkv(hidden_states).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [b, heads, n, hd]
        hd = q.shape[-1]
        width = hd + h + w
        if not self.use_rel_pos or width > MAX_HEAD_DIM:  # no room for the trick: the plain bias path
            return self._unfused(q, k, v, b, h, w)
        pad = (-width) % 8  # fused kernels want head dims in multiples of 8
        qg = q.reshape(b, heads, h, w, hd)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", qg, self._rel_table(h, self.rel_pos_h).to(q.dtype))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", qg, self._rel_table(w, self.rel_pos_w).to(q.dtype))
        parts = [q * self.scale, rel_h.reshape(b, heads, n, h), rel_w.reshape(b, heads, n, w)]
        eye_h = torch.eye(h, dtype=q.dtype, device=q.device)[:, None, :].expand(h, w, h).reshape(n, h)
        eye_w = torch.eye(w, dtype=q.dtype, device=q.device)[None, :, :].expand(h, w, w).reshape(n, w)
        kparts = [k, eye_h.expand(b, heads, n, h), eye_w.expand(b, heads, n, w)]
        if pad:
            zeros = q.new_zeros(b, heads, n, pad)
            parts.append(zeros)
            kparts.append(zeros)
        q2 = torch.cat(parts, dim=-1)
        k2 = torch.cat(kparts, dim=-1)
        v2 = F.pad(v, (0, q2.shape[-1] - hd))
        out = F.scaled_dot_product_attention(q2, k2, v2, scale=1.0)[..., :hd]
        out = out.reshape(b, heads, h, w, hd).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out), None

    def _unfused(self, q, k, v, b, h, w):
        heads, hd = self.num_attention_heads, q.shape[-1]
        bias = None
        if self.use_rel_pos:
            flat = q.reshape(b * heads, h * w, hd)
            bias = self.get_decomposed_rel_pos(flat, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            bias = bias.reshape(b, heads, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.reshape(b, heads, h, w, hd).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out), None


def fuse_sam_attention(module: torch.nn.Module) -> int:
    """Swap every transformers SAM attention under `module` for the fused one, in place.
    Returns how many were swapped (0 means nothing SAM-like was found)."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, DeepseekOcr2SamVisionAttention) and not isinstance(sub, FusedRelPosSamAttention):
            sub.__class__ = FusedRelPosSamAttention
            count += 1
    log.debug("fused relative-position attention in %d SAM layers", count)
    return count
