"""DeepSeek-OCR v1, run by optimem on transformers 5 (no trust_remote_code), CPU or CUDA, fp32 or bf16.

    from optimem.model import DeepseekOCR
    model = DeepseekOCR.from_pretrained("/models/DeepSeek-OCR", dtype="bfloat16", device="cuda")
    embeds = model.encode_pages(images, "small")      # [B, 111, 1280]: grid rows + newlines + separator
    ids = model.prompt_ids(["<image>" * 111, "\\nFree OCR."])
    text = model.ocr(image, "small")                     # a page back to text

The API the memory uses: `encode_pages`, `placeholder_count`, `build_inputs_embeds`, `generate`,
`generate_text`, `ocr`, `ladder`, `model_id`. `DeepseekOCR.random(config)` builds random weights
(tests, benchmarks); `tiny_config()` is small enough for CPU tests.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from optimem.errors import CheckpointError, ConfigError, DeviceError, InputError, ModelError
from optimem.model.config import DeepseekOCRConfig, tiny_config
from optimem.model.preprocess import MODES, gundam_placeholders, preprocess, preprocess_gundam

log = logging.getLogger(__name__)
__all__ = ["DeepseekOCR", "DeepseekOCRConfig", "tiny_config", "placeholder_count", "gundam_placeholders"]

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16"}


def placeholder_count(tier: str) -> int:
    """Context tokens of one page at a non-tiled tier: g·(g+1)+1 (73, 111, 273, 421)."""
    if tier not in MODES:
        raise ConfigError(f"unknown tier '{tier}'; valid: {', '.join(MODES)}")
    g = MODES[tier][0] // 64
    return g * (g + 1) + 1


def _device(device: str | None):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but torch sees no CUDA device; use device='cpu'")
    return dev


def _dtype(dtype: Any):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype or "float32").removeprefix("torch."))
    if name is None:
        raise ConfigError(f"unknown dtype {dtype!r}; use float32 or bfloat16")
    return getattr(torch, name)


def init_random(model, seed: int = 0) -> None:
    """Deterministic random weights: N(0, 0.02) for matrices and tables, zeros for biases, ones for
    norm scales (so a random model's activations stay finite at full size)."""
    import torch

    gens: dict = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.device not in gens:  # generate where the weights live: a full model on CUDA in seconds
                gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            gen = gens[p.device]
            parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in parent or "layrnorm" in parent:
                p.fill_(1.0)
            else:
                p.copy_((torch.randn(p.shape, generator=gen, device=p.device) * 0.02).to(p.dtype))


class DeepseekOCR:
    def __init__(self, module, config: DeepseekOCRConfig, tokenizer=None, model_id: str | None = None,
                 *, fused_attention: bool = True) -> None:
        if fused_attention:
            # SAM's relative-position bias folded into one bias-free SDPA call: same maths (parity
            # tests run through it), no [heads, HW, HW] bias tensor, 1.7x the batched throughput
            from optimem.model.sam_attention import fuse_sam_attention

            fuse_sam_attention(module)
        self.module = module.eval()
        self.config = config
        self._tokenizer = tokenizer
        p = next(module.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.model_id = model_id or f"{config.name}@{str(self.dtype).removeprefix('torch.')}"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def random(cls, config: DeepseekOCRConfig | None = None, *, dtype: Any = "float32", device: str | None = "cpu",
               seed: int = 0) -> "DeepseekOCR":
        import torch

        from optimem.model.modeling import DeepseekOCRModel

        config = config or tiny_config()
        dev, dt = _device(device), _dtype(dtype)
        torch.manual_seed(seed)
        with torch.device(dev):
            module = DeepseekOCRModel(config)
        init_random(module, seed)
        module = module.to(dt)
        digest = hashlib.sha256(repr(config).encode()).hexdigest()[:8]
        return cls(module, config, model_id=f"random:{config.name}:{digest}:seed{seed}@{str(dt).removeprefix('torch.')}")

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, dtype: Any = None, device: str | None = None) -> "DeepseekOCR":
        """Load an official-layout checkpoint directory (config.json, safetensors single or sharded,
        tokenizer.json if present). A hub id is tried through huggingface_hub only when that is
        installed; no hub is reachable on machines without network."""
        import torch

        from optimem.model.loading import load_into
        from optimem.model.modeling import DeepseekOCRModel

        path = Path(path_or_hub_id)
        if not path.is_dir():
            path = _snapshot(str(path_or_hub_id))
        config = DeepseekOCRConfig.from_file(path / "config.json")
        dev = _device(device)
        dt = _dtype(dtype or ("bfloat16" if dev.type == "cuda" else "float32"))
        with torch.device(dev):
            module = DeepseekOCRModel(config)
        module = module.to(dt)
        load_into(module, path)
        tok = None
        if (path / "tokenizer.json").exists():
            from renderers.tokens import load_tokenizer

            tok = load_tokenizer(str(path / "tokenizer.json"))
        digest = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:8]
        return cls(module, config, tok, model_id=f"{config.name}:{digest}@{str(dt).removeprefix('torch.')}")

    def save_pretrained(self, path: str | Path) -> None:
        from optimem.model.loading import save_official

        save_official(self.module, Path(path), self.config.to_dict())

    # -- tokens ---------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from renderers.tokens import load_tokenizer

            self._tokenizer = load_tokenizer()
        return self._tokenizer

    def ladder(self):
        from policies import Ladder, TierCost
        from policies.ladder import DEEPSEEK_OCR_V1

        fid = {t.name: t.fidelity for t in DEEPSEEK_OCR_V1.tiers}
        return Ladder(tuple(TierCost(t, placeholder_count(t), fid[t]) for t in ("large", "base", "small", "tiny")))

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

    # -- language -------------------------------------------------------------------------------
    def build_inputs_embeds(self, input_ids, image_embeds: list[Any]):
        """Token embeddings with every image placeholder row replaced, in order, by `image_embeds`."""
        import torch

        ids = torch.as_tensor(input_ids, device=self.device).reshape(1, -1)
        with torch.inference_mode():
            embeds = self.module.language.embed_tokens(ids).clone()
            mask = ids[0] == self.config.image_token_id
            rows = [e.to(self.device, embeds.dtype).reshape(-1, embeds.shape[-1]) for e in image_embeds]
            total = sum(r.shape[0] for r in rows)
            if int(mask.sum()) != total:
                raise ModelError(f"prompt has {int(mask.sum())} image placeholders but the images bring {total} embeddings")
            if rows:
                embeds[0, mask] = torch.cat(rows, 0)
        return embeds

    def logits(self, inputs_embeds):
        import torch

        with torch.inference_mode():
            out, _ = self.module(inputs_embeds)
        return out

    def generate(self, input_ids, image_embeds: list[Any] = (), *, max_new_tokens: int = 256,
                 no_repeat_ngram_size: int = 20, eos_token_id: int | None = None) -> list[int]:
        """Greedy decoding with a KV cache and the reference's no-repeat n-gram rule (a token that would
        repeat an n-gram already in prompt+output is banned)."""
        import torch
        from transformers import DynamicCache

        eos = self.config.text.eos_token_id if eos_token_id is None else eos_token_id
        ids = list(torch.as_tensor(input_ids).reshape(-1).tolist())
        embeds = self.build_inputs_embeds(ids, list(image_embeds))
        cache = DynamicCache()
        out: list[int] = []
        with torch.inference_mode():
            logits, cache = self.module(embeds, past_key_values=cache, use_cache=True)
            for _ in range(max_new_tokens):
                scores = logits[0, -1].float()
                for banned in _banned_ngrams(ids + out, no_repeat_ngram_size):
                    scores[banned] = -float("inf")
                nxt = int(scores.argmax())
                if nxt == eos:
                    break
                out.append(nxt)
                step = self.module.language.embed_tokens(torch.tensor([[nxt]], device=self.device))
                pos = torch.tensor([[len(ids) + len(out) - 1]], device=self.device)
                logits, cache = self.module(step, past_key_values=cache, use_cache=True, position_ids=pos)
        return out

    def generate_text(self, inputs: dict[str, Any], *, max_new_tokens: int = 256) -> str:
        ids = self.generate(inputs["input_ids"], inputs["image_embeds"], max_new_tokens=max_new_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def ocr(self, image: Any, tier: str = "small", *, max_new_tokens: int = 2048) -> str:
        """Read a page back to text with the reference's "Free OCR." prompt (plain format:
        BOS, the image placeholders, then "\\nFree OCR.")."""
        emb = self.encode_pages([image], tier)[0]
        ids = [self.config.text.bos_token_id] + [self.config.image_token_id] * emb.shape[0] + \
            self.tokenizer.encode("\nFree OCR.", add_special_tokens=False).ids
        out = self.generate(ids, [emb], max_new_tokens=max_new_tokens)
        return self.tokenizer.decode(out, skip_special_tokens=True)


def _banned_ngrams(seq: list[int], n: int) -> list[int]:
    if n <= 0 or len(seq) < n:
        return []
    prefix = tuple(seq[len(seq) - n + 1:])
    banned = []
    for i in range(len(seq) - n + 1):
        if tuple(seq[i : i + n - 1]) == prefix:
            banned.append(seq[i + n - 1])
    return banned


def _snapshot(hub_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{hub_id!r} is not a local directory and huggingface_hub is not installed; download the "
            "checkpoint (config.json, model.safetensors*, tokenizer files) and pass its directory"
        ) from None
    try:
        return Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as exc:  # offline machines land here
        raise CheckpointError(f"could not fetch {hub_id!r} from the hub ({exc}); pass a local checkpoint directory") from None
