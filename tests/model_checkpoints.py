"""Deterministic test checkpoints in the official key layout, so parity fixtures stay small.

Every tensor is generated from its official key name and shape with a fixed-seed numpy generator,
so a test can rebuild the exact checkpoint the golden outputs were produced from (those outputs come
from running the reference implementation outside this repository on the same file). Only the small
golden tensors and the input images are committed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from optimem.model.config import ClipConfig, DeepseekOCRConfig, SamConfig, TextConfig


def parity_config() -> DeepseekOCRConfig:
    """Small enough for CPU, shaped so the reference code (which hard-codes SAM-B and CLIP-L widths
    and a 1280 projector) can build it with only its depths shrunk: SAM 768 wide x 2 blocks (block 1
    global), CLIP 1024 x 1, decoder 1280 x 2 (dense, then 4 experts top-2), vocabulary 1024."""
    return DeepseekOCRConfig(
        sam=SamConfig(layers=2, global_attn_indexes=(1,)),
        clip=ClipConfig(layers=1),
        text=TextConfig(intermediate_size=256, moe_intermediate_size=64, n_routed_experts=4, n_shared_experts=1,
                        num_experts_per_tok=2, num_hidden_layers=2, vocab_size=1024, max_position_embeddings=4096),
        image_token_id=1000,
        name="optimem/parity-tiny",
    )


def tensor_for(name: str, shape: tuple[int, ...]) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    if len(shape) == 1 and name.endswith(".weight"):
        return (1.0 + 0.1 * x).astype(np.float32)  # norm scales
    if name.endswith(".bias"):
        return (0.02 * x).astype(np.float32)
    if name.endswith(("image_newline", "view_seperator", "class_embedding")):
        return (0.5 * x).astype(np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (x / np.sqrt(max(fan_in, 1))).astype(np.float32)


def official_shapes(config: DeepseekOCRConfig) -> dict[str, tuple[int, ...]]:
    import torch

    from optimem.model.loading import internal_to_official
    from optimem.model.modeling import DeepseekOCRModel

    with torch.device("meta"):
        model = DeepseekOCRModel(config)
    return {k: tuple(v.shape) for k, v in internal_to_official(dict(model.state_dict())).items()}


def write_checkpoint(path: str | Path, config: DeepseekOCRConfig | None = None) -> Path:
    """Write config.json + model.safetensors (official keys, deterministic values) to `path`."""
    import json

    import torch
    from safetensors.torch import save_file

    config = config or parity_config()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: torch.from_numpy(tensor_for(k, s)) for k, s in sorted(official_shapes(config).items())}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    return path
