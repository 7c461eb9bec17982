"""DeepSeek-OCR models for optimem, on transformers 5 (no trust_remote_code), CPU or CUDA, fp32 or bf16.

- `DeepseekOCR`: DeepSeek-OCR v1, implemented here (no release of transformers has it); ladder
  large 421 / base 273 / small 111 / tiny 73 tokens per page, plus gundam tiling.
- `DeepseekOCR2`: DeepSeek-OCR-2 through transformers' native classes (`optimem.model.ocr2`);
  ladder tiles 833 / base 257 / small 145.
- `load_model(path)`: either, by the checkpoint's config.json.

    from optimem.model import DeepseekOCR
    model = DeepseekOCR.from_pretrained("/models/DeepSeek-OCR", dtype="bfloat16", device="cuda")
    embeds = model.encode_pages(images, "small")      # [B, 111, 1280]: grid rows + newlines + separator
    text = model.ocr(image, "small")                     # a page back to text

The API the memory uses (both models): `encode_pages`, `placeholder_count`, `build_inputs_embeds`,
`generate`, `generate_text`, `ocr`, `ladder`, `model_id`, `tokenizer`. `DeepseekOCR.random(config)`
builds random weights (tests, benchmarks); `tiny_config()` is small enough for CPU tests.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from optimem.errors import CheckpointError, ConfigError, InputError
from optimem.model.config import DeepseekOCRConfig, tiny_config
from optimem.model.decoding import DecoderMixin, _banned_ngrams  # noqa: F401  (re-exported for tests)
from optimem.ladders import DEEPSEEK_OCR_V1, ModelLadder
from optimem.model.preprocess import gundam_placeholders, preprocess, preprocess_gundam
from optimem.model.runtime import checkpoint_dir, dtype_name, init_random, resolve_device, resolve_dtype
from optimem.model.speed import CompileMixin

log = logging.getLogger(__name__)
__all__ = ["DeepseekOCR", "DeepseekOCR2", "load_model", "DeepseekOCRConfig", "tiny_config", "placeholder_count",
           "gundam_placeholders", "init_random"]


def placeholder_count(tier: str) -> int:
    """Context tokens of one page at a non-tiled tier: g·(g+1)+1 (73, 111, 273, 421)."""
    return DEEPSEEK_OCR_V1.placeholder_count(tier)


def load_model(path_or_hub_id: str | Path, *, dtype: Any = None, device: str | None = None):
    """DeepSeek-OCR v1 (`DeepseekOCR`) or DeepSeek-OCR-2 (`DeepseekOCR2`), chosen by the checkpoint's
    config.json model_type ("deepseek_ocr2" is OCR-2; anything else is read as v1's layout)."""
    import json

    path = checkpoint_dir(path_or_hub_id)
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        model_type = None  # DeepseekOCR.from_pretrained names the problem
    if model_type == "deepseek_ocr2":
        from optimem.model.ocr2 import DeepseekOCR2

        return DeepseekOCR2.from_pretrained(path, dtype=dtype, device=device)
    if _has_ocr2_weights(path):
        raise CheckpointError(
            f"{path} holds DeepSeek-OCR-2 weights (model.qwen2_model.*) with a {model_type!r} config.json; OCR-2 "
            "loads with transformers' config format (model_type 'deepseek_ocr2', as in deepseek-community/DeepSeek-OCR-2)")
    return DeepseekOCR.from_pretrained(path, dtype=dtype, device=device)


def _has_ocr2_weights(path: Path) -> bool:
    import json

    index = path / "model.safetensors.index.json"
    try:
        if index.exists():
            keys = json.loads(index.read_text()).get("weight_map", {})
        elif (path / "model.safetensors").exists():
            from safetensors import safe_open

            with safe_open(str(path / "model.safetensors"), framework="pt") as f:
                keys = list(f.keys())
        else:
            return False
    except (OSError, ValueError):
        return False
    return any(k.startswith("model.qwen2_model.") for k in keys)


def __getattr__(name: str):
    if name == "DeepseekOCR2":  # lazy: OCR-2 pulls in transformers' image processor
        from optimem.model.ocr2 import DeepseekOCR2

        return DeepseekOCR2
    raise AttributeError(name)


class DeepseekOCR(DecoderMixin, CompileMixin):
    def __init__(self, module, config: DeepseekOCRConfig, tokenizer=None, model_id: str | None = None,
                 *, fused_attention: bool = True) -> None:
        if fused_attention:
            # SAM's relative-position bias without the dense [heads, HW, HW] tensor: one bias-free
            # SDPA call on CPU, Triton kernels on CUDA; same maths (parity tests run through it), and
            # several times the stock path's batched throughput (README: `optimem bench encode --variants`)
            from optimem.model.sam_attention import fuse_sam_attention

            fuse_sam_attention(module)
        self.module = module.eval()
        self.config = config
        self._tokenizer = tokenizer
        p = next(module.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.model_id = model_id or f"{config.name}@{dtype_name(self.dtype)}"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def random(cls, config: DeepseekOCRConfig | None = None, *, dtype: Any = "float32", device: str | None = "cpu",
               seed: int = 0) -> "DeepseekOCR":
        import torch

        from optimem.model.modeling import DeepseekOCRModel

        config = config or tiny_config()
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        torch.manual_seed(seed)
        with torch.device(dev):
            module = DeepseekOCRModel(config)
        init_random(module, seed)
        module = module.to(dt)
        digest = hashlib.sha256(repr(config).encode()).hexdigest()[:8]
        return cls(module, config, model_id=f"random:{config.name}:{digest}:seed{seed}@{dtype_name(dt)}")

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, dtype: Any = None, device: str | None = None) -> "DeepseekOCR":
        """Load an official-layout checkpoint directory (config.json, safetensors single or sharded,
        tokenizer.json if present). A hub id is tried through huggingface_hub only when that is
        installed; no hub is reachable on machines without network."""
        import torch

        from optimem.model.loading import load_into
        from optimem.model.modeling import DeepseekOCRModel

        path = checkpoint_dir(path_or_hub_id)
        config = DeepseekOCRConfig.from_file(path / "config.json")
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        with torch.device(dev):
            module = DeepseekOCRModel(config)
        module = module.to(dt)
        load_into(module, path)
        tok = None
        if (path / "tokenizer.json").exists():
            from optimem.renderers.tokens import load_tokenizer

            tok = load_tokenizer(str(path / "tokenizer.json"))
        digest = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:8]
        return cls(module, config, tok, model_id=f"{config.name}:{digest}@{dtype_name(dt)}")

    def save_pretrained(self, path: str | Path) -> None:
        from optimem.model.loading import save_official

        save_official(self.module, Path(path), self.config.to_dict())

    @property
    def vision_encoder(self):
        """The module `encode_pages` runs (what `compile()` compiles)."""
        return self.module.encoder

    # -- tokens ---------------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self.config.image_token_id

    @property
    def bos_token_id(self) -> int:
        return self.config.text.bos_token_id

    @property
    def eos_token_id(self) -> int:
        return self.config.text.eos_token_id

    @property
    def ladder(self) -> ModelLadder:
        """v1's tier table (names, views, placeholder tokens, fidelity)."""
        return DEEPSEEK_OCR_V1

    def placeholder_count(self, tier: str) -> int:
        return placeholder_count(tier)

    # -- vision ---------------------------------------------------------------------------------
    def pixels(self, images: list[Any], tier: str):
        import torch

        arrays = [preprocess(img, tier) for img in images]
        return torch.from_numpy(np.stack(arrays)).to(self.device, self.dtype)

    def encode_pages(self, images: list[Any], tier: str):
        """[B, placeholder_count(tier), hidden] vision-token embeddings, one forward for the batch."""
        import torch

        if not images:
            raise InputError("encode_pages needs at least one image")
        if tier == "gundam":
            return [self.encode_gundam(img) for img in images]
        with torch.inference_mode():
            return self.module.page_embeddings(self.pixels(images, tier))

    def encode_gundam(self, image: Any):
        """One image in gundam mode (640 tiles + 1024 global view): [placeholders, hidden]."""
        import torch

        g = preprocess_gundam(image)
        with torch.inference_mode():
            glob = torch.from_numpy(g.global_view).to(self.device, self.dtype)
            tiles = torch.from_numpy(g.tiles).to(self.device, self.dtype) if len(g.tiles) else None
            return self.module.tiled_embeddings(glob, tiles, g.cols, g.rows)

    # -- language (generation, OCR and the splice live in DecoderMixin) ------------------------------
    def _embed(self, ids):
        return self.module.language.embed_tokens(ids)

    def _forward(self, embeds, cache, position_ids):
        return self.module(embeds, past_key_values=cache, use_cache=cache is not None, position_ids=position_ids)


