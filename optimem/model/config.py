"""DeepSeek-OCR v1 configuration, read from the official `config.json` (or built small for tests).

The reference code hard-codes SAM-B and CLIP-L sizes and reads them nowhere; the official config.json
still records them (`vision_config.width.sam_vit_b`, `vision_config.width["clip-l-14-224"]`,
`language_config`), and we take every size from there so that the real checkpoint and small test
checkpoints load through the same code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from optimem.errors import CheckpointError

IMAGE_TOKEN_ID = 128815


@dataclass(frozen=True)
class SamConfig:
    width: int = 768
    layers: int = 12
    heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    downsample_channels: tuple[int, int] = (512, 1024)
    image_size: int = 1024  # the size its absolute position table was trained at (64 x 64 patches)
    patch_size: int = 16
    window_size: int = 14
    out_chans: int = 256


@dataclass(frozen=True)
class ClipConfig:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    image_size: int = 224
    patch_size: int = 14

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class TextConfig:
    hidden_size: int = 1280
    intermediate_size: int = 6848
    moe_intermediate_size: int = 896
    n_routed_experts: int = 64
    n_shared_experts: int = 2
    num_experts_per_tok: int = 6
    num_hidden_layers: int = 12
    num_attention_heads: int = 10
    num_key_value_heads: int = 10
    first_k_dense_replace: int = 1
    vocab_size: int = 129280
    max_position_embeddings: int = 8192
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    routed_scaling_factor: float = 1.0
    bos_token_id: int = 0
    eos_token_id: int = 1


@dataclass(frozen=True)
class DeepseekOCRConfig:
    sam: SamConfig = field(default_factory=SamConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    text: TextConfig = field(default_factory=TextConfig)
    image_token_id: int = IMAGE_TOKEN_ID
    name: str = "deepseek-ai/DeepSeek-OCR"

    @property
    def projector_input(self) -> int:
        return self.clip.width + self.sam.downsample_channels[1]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "DeepseekOCRConfig":
        try:
            widths = d["vision_config"]["width"]
            sam_d, clip_d = widths["sam_vit_b"], widths["clip-l-14-224"]
            lang = d.get("language_config") or d
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"config.json is not a DeepSeek-OCR v1 config (missing {exc})") from None
        sam = SamConfig(
            width=sam_d.get("width", 768), layers=sam_d.get("layers", 12), heads=sam_d.get("heads", 12),
            global_attn_indexes=tuple(sam_d.get("global_attn_indexes", (2, 5, 8, 11))),
            downsample_channels=tuple(sam_d.get("downsample_channels", (512, 1024))),  # type: ignore[arg-type]
            out_chans=sam_d.get("out_chans", 256),  # not in the official file (fixed 256 there); small configs record it
        )
        clip = ClipConfig(width=clip_d.get("width", 1024), layers=clip_d.get("layers", 24), heads=clip_d.get("heads", 16),
                          image_size=clip_d.get("image_size", 224), patch_size=clip_d.get("patch_size", 14))
        text_fields = {f for f in TextConfig.__dataclass_fields__}
        text = TextConfig(**{k: v for k, v in lang.items() if k in text_fields and v is not None})
        return DeepseekOCRConfig(sam, clip, text, int(d.get("image_token_id", IMAGE_TOKEN_ID)),
                                 d.get("_name_or_path", "deepseek-ai/DeepSeek-OCR"))

    @staticmethod
    def from_file(path: str | Path) -> "DeepseekOCRConfig":
        try:
            return DeepseekOCRConfig.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint has no config.json: {path}") from None
        except ValueError as exc:
            raise CheckpointError(f"{path} is not valid JSON: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The official config.json layout (the fields this implementation reads)."""
        text = asdict(self.text)
        return {
            "_name_or_path": self.name,
            "model_type": "deepseek_vl_v2",
            "architectures": ["DeepseekOCRForCausalLM"],
            "tile_tag": "2D",
            "global_view_pos": "head",
            "image_token_id": self.image_token_id,
            "projector_config": {"input_dim": self.projector_input, "model_type": "mlp_projector",
                                 "n_embed": self.text.hidden_size, "projector_type": "linear"},
            "vision_config": {"image_size": 1024, "width": {
                "clip-l-14-224": {"heads": self.clip.heads, "image_size": self.clip.image_size, "layers": self.clip.layers,
                                  "patch_size": self.clip.patch_size, "width": self.clip.width},
                "sam_vit_b": {"downsample_channels": list(self.sam.downsample_channels),
                              "global_attn_indexes": list(self.sam.global_attn_indexes), "heads": self.sam.heads,
                              "layers": self.sam.layers, "width": self.sam.width, "out_chans": self.sam.out_chans}}},
            "language_config": {**text, "use_mla": False, "topk_method": "greedy", "architectures": ["DeepseekV2ForCausalLM"]},
            **text,
        }


def tiny_config(**overrides: Any) -> DeepseekOCRConfig:
    """A small random-weight configuration for tests and CPU smoke runs (not the reference's sizes).

    It keeps the real vocabulary (129,280 x 64 is small) so the real tokenizer's ids, `<image>` = 128815
    included, run through it unchanged."""
    cfg = DeepseekOCRConfig(
        sam=SamConfig(width=64, layers=2, heads=2, global_attn_indexes=(1,), downsample_channels=(48, 64), out_chans=32),
        clip=ClipConfig(width=64, layers=1, heads=2),
        text=TextConfig(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, n_routed_experts=4,
                        n_shared_experts=1, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, max_position_embeddings=4096),
        name="optimem/tiny-random-deepseek-ocr",
    )
    return replace(cfg, **overrides) if overrides else cfg
