"""Where a model runs and how its weights start: device and dtype resolution, deterministic random
weights, and the optional hub download. Shared by the DeepSeek-OCR v1 and OCR-2 facades."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimem.errors import CheckpointError, ConfigError, DeviceError

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16"}


def resolve_device(device: str | None):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but torch sees no CUDA device; use device='cpu'")
    return dev


def resolve_dtype(dtype: Any, device=None):
    """A torch dtype from a name; None means bf16 on CUDA and fp32 elsewhere (bf16 is 3-5x slower
    than fp32 on CPUs without bf16 matmul units)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        dtype = "bfloat16" if device is not None and torch.device(device).type == "cuda" else "float32"
    name = _DTYPES.get(str(dtype).removeprefix("torch."))
    if name is None:
        raise ConfigError(f"unknown dtype {dtype!r}; use float32 or bfloat16")
    return getattr(torch, name)


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


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


def checkpoint_dir(path_or_hub_id: str | Path) -> Path:
    """A local checkpoint directory; a hub id is tried through huggingface_hub only when that is
    installed (no hub is reachable on machines without network)."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    hub_id = str(path_or_hub_id)
    # a path that is not there is a path, not a hub id: say so rather than pass it to the hub
    if path.exists():
        raise CheckpointError(f"{hub_id} is a file; pass the checkpoint folder (config.json, model.safetensors)")
    if hub_id.startswith((".", "/", "~")) or "\\" in hub_id or hub_id.count("/") > 1:
        raise CheckpointError(f"checkpoint folder {hub_id} does not exist; pass the folder that holds config.json "
                              "and model.safetensors")
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
