"""DeepSeek-OCR v1 configuration, read from the official `config.json` (or built small for tests).

The reference code hard-codes SAM-B and CLIP-L sizes and reads them nowhere; the official config.json
still records them (`vision_config.width.sam_vit_b`, `vision_config.width["clip-l-14-224"]`,
`language_config`), and we take every size from there so that the real checkpoint and small test
checkpoints load through the same code.
"""

from __future__ import annotations

import re
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
        if not isinstance(d, dict):
            raise CheckpointError(f"config.json is not a DeepSeek-OCR v1 config (a JSON {type(d).__name__}, not an object)")
        try:
            widths = d["vision_config"]["width"]
            sam_d, clip_d = widths["sam_vit_b"], widths["clip-l-14-224"]
            lang = d.get("language_config") or d
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"config.json is not a DeepSeek-OCR v1 config (missing {exc})") from None
        for name, part in (("vision_config.width.sam_vit_b", sam_d), ("vision_config.width.clip-l-14-224", clip_d),
                           ("language_config", lang)):
            if not isinstance(part, dict):
                raise CheckpointError(f"config.json: {name} must be an object, not {type(part).__name__}")
        sam = SamConfig(
            width=_size(sam_d, "width", 768, "sam_vit_b"), layers=_size(sam_d, "layers", 12, "sam_vit_b"),
            heads=_size(sam_d, "heads", 12, "sam_vit_b"),
            global_attn_indexes=_ints(sam_d, "global_attn_indexes", (2, 5, 8, 11), "sam_vit_b", lo=0),
            downsample_channels=_ints(sam_d, "downsample_channels", (512, 1024), "sam_vit_b", n=2),  # type: ignore[arg-type]
            out_chans=_size(sam_d, "out_chans", 256, "sam_vit_b"),  # not in the official file (fixed 256 there); small configs record it
        )
        clip = ClipConfig(width=_size(clip_d, "width", 1024, "clip"), layers=_size(clip_d, "layers", 24, "clip"),
                          heads=_size(clip_d, "heads", 16, "clip"), image_size=_size(clip_d, "image_size", 224, "clip"),
                          patch_size=_size(clip_d, "patch_size", 14, "clip"))
        text_fields = TextConfig.__dataclass_fields__
        kwargs: dict[str, Any] = {}
        for k, v in lang.items():
            if k not in text_fields or v is None:
                continue
            default = text_fields[k].default
            if isinstance(default, int):
                kwargs[k] = _size(lang, k, default, "language_config", lo=0 if k.endswith("_id") or k == "first_k_dense_replace" else 1)
            elif isinstance(default, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise CheckpointError(f"config.json: language_config.{k} must be a number, not {v!r}")
                kwargs[k] = float(v)
        text = TextConfig(**kwargs)
        name = d.get("_name_or_path", "deepseek-ai/DeepSeek-OCR")
        return DeepseekOCRConfig(sam, clip, text, _size(d, "image_token_id", IMAGE_TOKEN_ID, "config", lo=0),
                                 name if isinstance(name, str) else "deepseek-ai/DeepSeek-OCR")

    @staticmethod
    def from_file(path: str | Path) -> "DeepseekOCRConfig":
        """The config in `path` (a config.json), checked against the weight headers beside it, if any,
        before anything is allocated: a config that declares sizes its weights do not have fails here
        with the sizes named, not after asking for gigabytes."""
        from optimem.model.loading import read_json

        path = Path(path)
        cfg = DeepseekOCRConfig.from_dict(read_json(path, "config.json"))
        folder = path.parent
        if (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists():
            from optimem.model.loading import checkpoint_shapes

            check_sizes(cfg, checkpoint_shapes(folder), folder)
        return cfg

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


_MAX_SIZE = 2**24  # larger than any size of these models; keeps arithmetic on sizes sane


def _size(d: dict[str, Any], key: str, default: int, where: str, *, lo: int = 1) -> int:
    v = d.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= (2**31 if key.endswith("_id") else _MAX_SIZE):
        raise CheckpointError(f"config.json: {where}.{key} must be an integer in {lo}..{_MAX_SIZE}, not {v!r}")
    return v


def _ints(d: dict[str, Any], key: str, default: tuple[int, ...], where: str, *, lo: int = 1, n: int | None = None) -> tuple[int, ...]:
    v = d.get(key, default)
    if not isinstance(v, (list, tuple)) or (n is not None and len(v) != n) or len(v) > 1024 or not all(
            not isinstance(x, bool) and isinstance(x, int) and lo <= x <= _MAX_SIZE for x in v):
        raise CheckpointError(f"config.json: {where}.{key} must be a list of {n or 'some'} integers >= {lo}, not {v!r}")
    return tuple(v)


def check_sizes(cfg: DeepseekOCRConfig, shapes: dict[str, tuple[int, ...]], where: Path | str = "checkpoint") -> None:
    """The config's sizes against the checkpoint's tensor shapes (from the headers), before a model
    is built from the config. Checks the tensors that fix each size and the layer and expert counts;
    anything else is left to the loader's key-by-key comparison."""
    t, sam, clip = cfg.text, cfg.sam, cfg.clip
    want = {
        "model.embed_tokens.weight": (t.vocab_size, t.hidden_size),
        "lm_head.weight": (t.vocab_size, t.hidden_size),
        "model.sam_model.patch_embed.proj.weight": (sam.width, 3, sam.patch_size, sam.patch_size),
        "model.vision_model.embeddings.position_embedding.weight": (clip.num_positions, clip.width),
    }
    problems = [f"{k} is {shapes[k]} in the weights, the config implies {v}"
                for k, v in want.items() if k in shapes and tuple(shapes[k]) != v]

    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        found = {m.group(1) for k in shapes if (m := rx.match(k))}
        return max((int(x) for x in found), default=-1) + 1

    for what, have, n in (("decoder layers (num_hidden_layers)", count(r"model\.layers\.(\d+)\."), t.num_hidden_layers),
                          ("SAM blocks (sam_vit_b.layers)", count(r"model\.sam_model\.blocks\.(\d+)\."), sam.layers),
                          ("CLIP layers (clip-l-14-224.layers)",
                           count(r"model\.vision_model\.transformer\.layers\.(\d+)\."), clip.layers),
                          ("routed experts (n_routed_experts)",
                           count(r"model\.layers\.\d+\.mlp\.experts\.(\d+)\."), t.n_routed_experts)):
        if have > 0 and have != n:
            problems.append(f"the weights hold {have} {what}, the config says {n}")
    if problems:
        raise CheckpointError(f"config.json does not match the weights in {where}: " + "; ".join(problems[:4])
                              + ("; ..." if len(problems) > 4 else ""))


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
