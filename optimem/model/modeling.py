"""DeepSeek-OCR v1 as torch modules, composed from transformers 5 parts.

- SAM-B with window attention, decomposed relative positions, the neck and the 16x compressor
  (256 -> 512 -> 1024 channels): transformers' `DeepseekOcr2SamVisionEncoder` with
  `downsample_channels=[512, 1024]` is exactly that (its position-table interpolation is the
  reference's fp32 bicubic antialias call).
- CLIP-L fed with the SAM features instead of its patch embedding: our `ClipOverSam` (class token,
  position table resized like the reference's `get_abs_pos`, `pre_layrnorm`) around transformers'
  `CLIPEncoder` (quick_gelu, no post-LN).
- concat(CLIP[:, 1:], SAM) -> Linear(2048 -> 1280) projector, then `image_newline` after each grid row
  and one `view_seperator` (the reference's spelling, which is the checkpoint's key).
- The DeepSeek MoE decoder with plain multi-head attention: transformers' `DeepseekOcr2TextModel`
  (64 routed experts top-6 greedy softmax, 2 shared, first layer dense), plus `lm_head`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from optimem.model.config import DeepseekOCRConfig


def _sam_encoder(cfg: DeepseekOCRConfig) -> nn.Module:
    from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import DeepseekOcr2SamVisionConfig
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2SamVisionEncoder

    s = cfg.sam
    sc = DeepseekOcr2SamVisionConfig(
        hidden_size=s.width, num_hidden_layers=s.layers, num_attention_heads=s.heads, mlp_dim=4 * s.width,
        image_size=s.image_size, patch_size=s.patch_size, window_size=s.window_size,
        global_attn_indexes=list(s.global_attn_indexes), output_channels=s.out_chans,
        downsample_channels=list(s.downsample_channels), layer_norm_eps=1e-6, hidden_act="gelu",
        qkv_bias=True, use_rel_pos=True, use_abs_pos=True,
    )
    sc._attn_implementation = "sdpa"
    return DeepseekOcr2SamVisionEncoder(sc)


class ClipOverSam(nn.Module):
    """CLIP-L whose patch tokens are SAM's compressed features (the conv patch embedding is unused,
    but the checkpoint carries its weight, so it is kept)."""

    def __init__(self, cfg: DeepseekOCRConfig) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig
        from transformers.models.clip.modeling_clip import CLIPEncoder

        c = cfg.clip
        self.class_embedding = nn.Parameter(torch.zeros(c.width))
        self.patch_embedding = nn.Conv2d(3, c.width, kernel_size=c.patch_size, stride=c.patch_size, bias=False)
        self.position_embedding = nn.Embedding(c.num_positions, c.width)
        self.pre_layrnorm = nn.LayerNorm(c.width, eps=1e-5)
        vc = CLIPVisionConfig(hidden_size=c.width, intermediate_size=4 * c.width, num_hidden_layers=c.layers,
                              num_attention_heads=c.heads, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                              image_size=c.image_size, patch_size=c.patch_size)
        vc._attn_implementation = "sdpa"
        self.encoder = CLIPEncoder(vc)

    def positions(self, n_tokens: int) -> torch.Tensor:
        """The position table for 1 + grid² tokens: the 16x16 grid resized like the reference does
        (fp32 bicubic with antialias; the class position kept)."""
        table = self.position_embedding.weight
        src = int(math.isqrt(table.shape[0] - 1))
        tgt = int(math.isqrt(n_tokens - 1))
        if src == tgt:
            return table
        grid = table[1:].view(1, src, src, -1).permute(0, 3, 1, 2).to(torch.float32)
        grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", antialias=True, align_corners=False)
        grid = grid.to(table.dtype).permute(0, 2, 3, 1).reshape(tgt * tgt, -1)
        return torch.cat([table[:1], grid], dim=0)

    def forward(self, sam_features: torch.Tensor) -> torch.Tensor:
        b = sam_features.shape[0]
        tokens = sam_features.flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.to(tokens.dtype).expand(b, 1, -1), tokens], dim=1)
        x = x + self.positions(x.shape[1]).to(x.dtype)[None]
        x = self.pre_layrnorm(x)
        return self.encoder(inputs_embeds=x).last_hidden_state


class DeepEncoder(nn.Module):
    """Pixels [B, 3, S, S] -> projected vision tokens [B, (S/64)², hidden]."""

    def __init__(self, cfg: DeepseekOCRConfig) -> None:
        super().__init__()
        self.sam_model = _sam_encoder(cfg)
        self.vision_model = ClipOverSam(cfg)
        self.projector = nn.Linear(cfg.projector_input, cfg.text.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        sam = self.sam_model(pixels).last_hidden_state  # [B, 1024, g, g]
        clip = self.vision_model(sam)  # [B, 1 + g², 1024]
        feats = torch.cat([clip[:, 1:], sam.flatten(2).permute(0, 2, 1)], dim=-1)
        return self.projector(feats)


def _text_model(cfg: DeepseekOCRConfig) -> nn.Module:
    from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import DeepseekOcr2TextConfig
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextModel

    t = cfg.text
    tc = DeepseekOcr2TextConfig(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        moe_intermediate_size=t.moe_intermediate_size, num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
        n_routed_experts=t.n_routed_experts, n_shared_experts=t.n_shared_experts,
        num_experts_per_tok=t.num_experts_per_tok,
        mlp_layer_types=["dense" if i < t.first_k_dense_replace else "sparse" for i in range(t.num_hidden_layers)],
        max_position_embeddings=t.max_position_embeddings, rms_norm_eps=t.rms_norm_eps,
        routed_scaling_factor=t.routed_scaling_factor, topk_method="greedy", n_group=1, topk_group=1,
        rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta}, hidden_act="silu",
        bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=None,
    )
    tc._attn_implementation = "sdpa"
    return DeepseekOcr2TextModel(tc)


class DeepseekOCRModel(nn.Module):
    """The whole model; parameter names follow the official checkpoint after `loading.KEY_MAP`."""

    def __init__(self, cfg: DeepseekOCRConfig) -> None:
        super().__init__()
        self.config = cfg
        hidden = cfg.text.hidden_size
        self.encoder = DeepEncoder(cfg)
        self.image_newline = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.view_seperator = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.language = _text_model(cfg)
        self.lm_head = nn.Linear(hidden, cfg.text.vocab_size, bias=False)

    # -- vision ---------------------------------------------------------------------------------
    def _grid_with_newlines(self, feats: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        d = feats.shape[-1]
        grid = feats.view(rows, cols, d)
        nl = self.image_newline.to(feats.dtype)[None, None, :].expand(rows, 1, d)
        return torch.cat([grid, nl], dim=1).view(-1, d)

    def page_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Non-tiled modes: [B, 3, S, S] -> [B, g(g+1)+1, hidden] (grid rows + newlines + separator)."""
        feats = self.encoder(pixels)
        g = int(math.isqrt(feats.shape[1]))
        sep = self.view_seperator.to(feats.dtype)[None, :]
        return torch.stack([torch.cat([self._grid_with_newlines(f, g, g), sep], dim=0) for f in feats])

    def tiled_embeddings(self, global_view: torch.Tensor, tiles: torch.Tensor, cols: int, rows: int) -> torch.Tensor:
        """Gundam: local tiles stitched row-major into one grid (+ newline per row), then the global
        view (+ newlines), then the separator -- the reference's order."""
        glob = self.encoder(global_view[None])[0]
        g = int(math.isqrt(glob.shape[0]))
        parts = []
        if tiles is not None and tiles.shape[0] > 0:
            loc = self.encoder(tiles)  # [rows*cols, t², d]
            t = int(math.isqrt(loc.shape[1]))
            d = loc.shape[-1]
            loc = loc.view(rows, cols, t, t, d).permute(0, 2, 1, 3, 4).reshape(rows * t, cols * t, d)
            parts.append(self._grid_with_newlines(loc.reshape(-1, d), rows * t, cols * t))
        parts.append(self._grid_with_newlines(glob, g, g))
        parts.append(self.view_seperator.to(glob.dtype)[None, :])
        return torch.cat(parts, dim=0)

    # -- language -------------------------------------------------------------------------------
    def forward(self, inputs_embeds: torch.Tensor, past_key_values=None, use_cache: bool = False,
                position_ids: torch.Tensor | None = None):
        out = self.language(inputs_embeds=inputs_embeds, past_key_values=past_key_values, use_cache=use_cache,
                            position_ids=position_ids)
        return self.lm_head(out.last_hidden_state), out.past_key_values
