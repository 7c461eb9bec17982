"""DeepSeek-OCR-2 as optimem's second model, through transformers' native classes
(`DeepseekOcr2ForConditionalGeneration`, `DeepseekOcr2ImageProcessorPil`), behind the same API as
`DeepseekOCR` (v1): `encode_pages`, `placeholder_count`, `ladder`, `build_inputs_embeds`, `generate`,
`generate_text`, `ocr`, `model_id`.

OCR-2 has no fixed tiny/small/base/large modes: its encoder (SAM-B, a 896-channel compressor, then a
Qwen2-style encoder that reads the SAM grid and emits learned "causal flow" queries) has exactly two
query sets, 144 (a 768 px view) and 256 (a 1024 px view), and pages beyond 768 px are cut into
768 px tiles (2..6 by default) plus the 1024 px global view. Vision tokens are flat (no row
newlines) and end with one view separator. optimem's OCR-2 ladder is built from those pieces:

    tiles   4 tiles of 768 px + the 1024 px global view   4 * 144 + 256 + 1 = 833 tokens
    base    the 1024 px global view                       256 + 1 = 257 tokens
    small   a 768 px global view                          144 + 1 = 145 tokens

"tiles" pins the tile count to 4 (grid 2x2, 1x4 or 4x1 by aspect, the processor's own choice) so
that a page's cost does not depend on its shape; pages no larger than 768 px, which the processor
would not tile, are first scaled up to 1024 px on the long side for this tier. "small" is the
processor with tiling off (its global view is then the 768 px tile size). Fidelities per tier are not
published for OCR-2 and none is measured here, so the ladder carries none (the planner then orders
coarsening by its documented fallback).

Checkpoints: weights in the original repository's key names (`model.sam_model.*`,
`model.qwen2_model.*`, `model.projector.*`, `model.view_seperator`, `model.layers.*`, `lm_head`),
which transformers maps onto its classes itself (and writes back on save), with the
transformers-format config.json (model_type "deepseek_ocr2", as in `deepseek-community/DeepSeek-OCR-2`).
The original `deepseek-ai/DeepSeek-OCR-2` config.json is remote-code format; `load_model` recognises
such a checkpoint by its weight names and says which config it needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from optimem.errors import CheckpointError, ConfigError, InputError
from optimem.model.decoding import DecoderMixin
from optimem.model.runtime import checkpoint_dir, dtype_name, init_random, resolve_device, resolve_dtype
from optimem.model.speed import CompileMixin

GLOBAL_SIZE, TILE_SIZE, TILES = 1024, 768, 4

# tier -> image-processor settings; names and placeholder tokens are optimem.ladders.DEEPSEEK_OCR2
TIERS: dict[str, dict[str, Any]] = {
    "tiles": {"crop_to_patches": True, "min_patches": TILES, "max_patches": TILES},
    "base": {"crop_to_patches": False, "tile_size": GLOBAL_SIZE},
    "small": {"crop_to_patches": False},
}


def ocr2_placeholder_count(tier: str) -> int:
    from optimem.ladders import DEEPSEEK_OCR2

    return DEEPSEEK_OCR2.placeholder_count(tier)


def tiny_ocr2_config():
    """A DeepSeek-OCR-2 configuration small enough for CPU tests (the real vocabulary, so the
    tokenizer's ids are valid; every width shrunk)."""
    from transformers import DeepseekOcr2Config

    return DeepseekOcr2Config(
        vision_config={
            "sam_config": {"hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "global_attn_indexes": [1], "window_size": 4, "downsample_channels": [32, 48]},
            "encoder_config": {"hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 16},
        },
        text_config={"vocab_size": 129280, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 4,
                     "n_shared_experts": 1, "num_experts_per_tok": 2, "mlp_layer_types": ["dense", "sparse"],
                     "bos_token_id": 0, "eos_token_id": 1},
    )


def full_ocr2_config():
    """DeepSeek-OCR-2 at full size, for benchmarks with random weights: SAM-B with the 512 -> 896
    compressor and the 24-layer Qwen2-style encoder (hidden 896, 14 heads, 2 KV heads, FFN 4864,
    rope theta 1e6), as in the reference code (shared/reference/deepseek-ocr.md section 7). The decoder
    is set to v1's DeepSeek-3B-MoE sizes; OCR-2's own decoder config was not available to check."""
    from transformers import DeepseekOcr2Config

    from optimem.model.config import TextConfig

    t = TextConfig()
    return DeepseekOcr2Config(
        vision_config={
            "sam_config": {"downsample_channels": [512, 896]},
            "encoder_config": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                               "num_attention_heads": 14, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                               "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}},
        },
        text_config={"vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                     "moe_intermediate_size": t.moe_intermediate_size, "num_hidden_layers": t.num_hidden_layers,
                     "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
                     "n_routed_experts": t.n_routed_experts, "n_shared_experts": t.n_shared_experts,
                     "num_experts_per_tok": t.num_experts_per_tok,
                     "mlp_layer_types": ["dense"] * t.first_k_dense_replace
                     + ["sparse"] * (t.num_hidden_layers - t.first_k_dense_replace),
                     "max_position_embeddings": t.max_position_embeddings,
                     "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id},
    )


class DeepseekOCR2(DecoderMixin, CompileMixin):
    """DeepSeek-OCR-2 (transformers' native model) with optimem's page API."""

    def __init__(self, hf_model, tokenizer=None, model_id: str | None = None, *, fused_attention: bool = True) -> None:
        from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import DeepseekOcr2ImageProcessorPil

        if fused_attention:  # the same SAM as v1: its attention without the dense bias (sam_attention.py)
            from optimem.model.sam_attention import fuse_sam_attention

            fuse_sam_attention(hf_model)
        self.hf = hf_model.eval()
        self.config = hf_model.config
        self._tokenizer = tokenizer
        self.processor = DeepseekOcr2ImageProcessorPil()
        p = next(hf_model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.model_id = model_id or f"deepseek-ocr2@{dtype_name(self.dtype)}"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def random(cls, config=None, *, dtype: Any = "float32", device: str | None = "cpu", seed: int = 0,
               fused_attention: bool = True) -> "DeepseekOCR2":
        import torch
        from transformers import DeepseekOcr2ForConditionalGeneration

        config = config or tiny_ocr2_config()
        config._attn_implementation = "sdpa"
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        with torch.device(dev):
            hf = DeepseekOcr2ForConditionalGeneration(config)
        init_random(hf, seed)
        digest = hashlib.sha256(config.to_json_string().encode()).hexdigest()[:8]
        return cls(hf.to(dt), model_id=f"random:deepseek-ocr2:{digest}:seed{seed}@{dtype_name(dt)}",
                   fused_attention=fused_attention)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, dtype: Any = None, device: str | None = None) -> "DeepseekOCR2":
        """Load a transformers-format DeepSeek-OCR-2 checkpoint directory (config.json with model_type
        "deepseek_ocr2", safetensors single or sharded, tokenizer.json if present). Safetensors only;
        missing, unexpected or mis-shaped weights are an error that names them."""
        from transformers import DeepseekOcr2ForConditionalGeneration

        from optimem.model.loading import weight_files

        path = checkpoint_dir(path_or_hub_id)
        config_file = path / "config.json"
        if not config_file.exists():
            raise CheckpointError(f"checkpoint has no config.json: {config_file}")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except ValueError as exc:
            raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from None
        if model_type != "deepseek_ocr2":
            raise CheckpointError(f"{path} holds model_type {model_type!r}, not 'deepseek_ocr2' "
                                  "(DeepSeek-OCR v1 checkpoints load with optimem.model.DeepseekOCR)")
        weight_files(path)  # refuses pickle-only and incomplete sharded checkpoints with the file names
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        try:
            hf, info = DeepseekOcr2ForConditionalGeneration.from_pretrained(
                str(path), dtype=dt, use_safetensors=True, local_files_only=True, output_loading_info=True,
                attn_implementation="sdpa", ignore_mismatched_sizes=True)  # collected and refused below, by name
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"could not load {path}: {exc}") from None
        problems = []
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = sorted(_describe(k) for k in info.get(kind) or ())
            if keys:
                problems.append(f"{kind.replace('_', ' ')} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        if problems:
            raise CheckpointError(f"checkpoint {path} does not fit DeepSeek-OCR-2: " + "; ".join(problems))
        tok = None
        if (path / "tokenizer.json").exists():
            from optimem.renderers.tokens import load_tokenizer

            tok = load_tokenizer(str(path / "tokenizer.json"))
        digest = hashlib.sha256(config_file.read_bytes()).hexdigest()[:8]
        return cls(hf.to(dev), tok, model_id=f"deepseek-ocr2:{digest}@{dtype_name(dt)}")

    def save_pretrained(self, path: str | Path) -> None:
        """transformers' own layout (config.json + model.safetensors), as `from_pretrained` reads it."""
        self.hf.save_pretrained(str(path), safe_serialization=True)

    # -- tokens and tiers -----------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self.config.image_token_id

    @property
    def bos_token_id(self) -> int:
        return self.config.text_config.bos_token_id

    @property
    def eos_token_id(self) -> int:
        return self.config.text_config.eos_token_id

    @property
    def ladder(self):
        """OCR-2's tier table (optimem.ladders.DEEPSEEK_OCR2); its processor resamples the master."""
        from optimem.ladders import DEEPSEEK_OCR2

        return DEEPSEEK_OCR2

    def placeholder_count(self, tier: str) -> int:
        return ocr2_placeholder_count(tier)

    # -- vision ---------------------------------------------------------------------------------
    def pixels(self, images: list[Any], tier: str) -> dict[str, Any]:
        """The image processor's tensors for `tier`: global views [B, 3, S, S], local tiles
        [B * 4, 3, 768, 768] (tiles tier only) and the tile count per image."""
        from PIL import Image

        from optimem.model.preprocess import to_rgb

        ocr2_placeholder_count(tier)  # unknown tiers fail here, naming the valid ones
        settings = TIERS[tier]
        rgb = [to_rgb(img) for img in images]
        if settings.get("crop_to_patches"):
            rgb = [_upscale_for_tiles(im, Image.Resampling.BICUBIC) for im in rgb]
        batch = self.processor(rgb, return_tensors="pt", **settings)
        out = {"pixel_values": batch["pixel_values"].to(self.device, self.dtype),
               "num_local_patches": [int(n) for n in batch["num_local_patches"]]}
        if "pixel_values_local" in batch:
            out["pixel_values_local"] = batch["pixel_values_local"].to(self.device, self.dtype)
        return out

    def encode_pages(self, images: list[Any], tier: str):
        """[B, placeholder_count(tier), hidden] vision-token embeddings (flat tokens, local tiles
        first, then the global view, then the separator), one forward per batch."""
        import torch

        if not images:
            raise InputError("encode_pages needs at least one image")
        inputs = self.pixels(images, tier)
        with torch.inference_mode():
            feats = self.hf.model.get_image_features(**inputs).pooler_output
        want = ocr2_placeholder_count(tier)
        if any(f.shape[0] != want for f in feats):  # the ladder's costs must be what the model emits
            raise InputError(f"DeepSeek-OCR-2 produced {[f.shape[0] for f in feats]} tokens at tier '{tier}', expected {want}")
        return torch.stack(feats)

    @property
    def vision_encoder(self):
        """The module `encode_pages` runs (what `compile()` compiles): SAM + the Qwen2-style encoder."""
        return self.hf.model.vision_tower

    # -- language -------------------------------------------------------------------------------
    def _embed(self, ids):
        return self.hf.model.language_model.embed_tokens(ids)

    def _forward(self, embeds, cache, position_ids):
        out = self.hf.model.language_model(inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None,
                                           position_ids=position_ids)
        return self.hf.lm_head(out.last_hidden_state), out.past_key_values


def _describe(entry) -> str:
    """A loading-info entry as text: a key, or (key, checkpoint shape, model shape)."""
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        key, ckpt, own = entry
        return f"{key} (checkpoint {tuple(ckpt)}, model {tuple(own)})"
    return str(entry)


def _upscale_for_tiles(image, resample):
    """The processor tiles only images larger than one tile; scale smaller ones up (aspect kept)
    so every page at the tiles tier costs the same."""
    w, h = image.size
    if max(w, h) > TILE_SIZE:
        return image
    scale = GLOBAL_SIZE / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
