"""Official checkpoint layout <-> our modules. Safetensors only; nothing is unpickled.

The official `deepseek-ai/DeepSeek-OCR` keys (`model.sam_model.*`, `model.vision_model.*`,
`model.projector.*`, `model.image_newline`, `model.view_seperator`, `model.layers.*`,
`model.embed_tokens`, `model.norm`, `lm_head`) map one to one onto ours, except two places where
transformers' modules store weights differently:
- CLIP attention: the official fused `qkv_proj` [3·1024, 1024] splits into q, k, v rows in that
  order (the same split transformers' own DeepSeek-OCR conversion script makes).
- MoE experts: official per-expert `experts.E.{gate,up,down}_proj.weight` stack into transformers'
  `experts.gate_up_proj` [E, 2·I, H] (gate rows first) and `experts.down_proj` [E, H, I].
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from optimem.errors import CheckpointError

_RULES: list[tuple[str, str]] = [
    (r"model\.sam_model\.patch_embed\.proj\.", "encoder.sam_model.patch_embed.projection."),
    (r"model\.sam_model\.pos_embed$", "encoder.sam_model.pos_embed"),
    (r"model\.sam_model\.blocks\.(\d+)\.norm1\.", r"encoder.sam_model.layers.\1.layer_norm1."),
    (r"model\.sam_model\.blocks\.(\d+)\.norm2\.", r"encoder.sam_model.layers.\1.layer_norm2."),
    (r"model\.sam_model\.blocks\.(\d+)\.attn\.", r"encoder.sam_model.layers.\1.attn."),
    (r"model\.sam_model\.blocks\.(\d+)\.mlp\.", r"encoder.sam_model.layers.\1.mlp."),
    (r"model\.sam_model\.neck\.0\.", "encoder.sam_model.neck.conv1."),
    (r"model\.sam_model\.neck\.1\.", "encoder.sam_model.neck.layer_norm1."),
    (r"model\.sam_model\.neck\.2\.", "encoder.sam_model.neck.conv2."),
    (r"model\.sam_model\.neck\.3\.", "encoder.sam_model.neck.layer_norm2."),
    (r"model\.sam_model\.net_2\.", "encoder.sam_model.proj.conv1."),
    (r"model\.sam_model\.net_3\.", "encoder.sam_model.proj.conv2."),
    (r"model\.vision_model\.embeddings\.class_embedding$", "encoder.vision_model.class_embedding"),
    (r"model\.vision_model\.embeddings\.patch_embedding\.", "encoder.vision_model.patch_embedding."),
    (r"model\.vision_model\.embeddings\.position_embedding\.", "encoder.vision_model.position_embedding."),
    (r"model\.vision_model\.pre_layrnorm\.", "encoder.vision_model.pre_layrnorm."),
    (r"model\.vision_model\.transformer\.layers\.", "encoder.vision_model.encoder.layers."),
    (r"model\.projector\.layers\.", "encoder.projector."),
    (r"model\.image_newline$", "image_newline"),
    (r"model\.view_seperator$", "view_seperator"),
    (r"model\.embed_tokens\.", "language.embed_tokens."),
    (r"model\.norm\.", "language.norm."),
    (r"model\.layers\.", "language.layers."),
    (r"lm_head\.", "lm_head."),
]
_RULES_C = [(re.compile("^" + a), b) for a, b in _RULES]
_QKV = re.compile(r"^(encoder\.vision_model\.encoder\.layers\.\d+\.self_attn\.)qkv_proj\.(weight|bias)$")
_EXPERT = re.compile(r"^(language\.layers\.\d+\.mlp\.experts\.)(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def _rename(key: str) -> str | None:
    for pat, rep in _RULES_C:
        if pat.match(key):
            return pat.sub(rep, key, count=1)
    return None


def official_to_internal(tensors: dict[str, torch.Tensor], n_experts: int | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renamed, split and stacked tensors, plus the official keys that map nowhere."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = defaultdict(lambda: defaultdict(dict))
    for key, t in tensors.items():
        name = _rename(key)
        if name is None:
            unknown.append(key)
            continue
        m = _QKV.match(name)
        if m:
            q, k, v = t.chunk(3, dim=0)
            for part, val in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
                out[f"{m.group(1)}{part}.{m.group(2)}"] = val
            continue
        m = _EXPERT.match(name)
        if m:
            experts[m.group(1)][int(m.group(2))][m.group(3)] = t
            continue
        out[name] = t
    for prefix, by_idx in experts.items():
        idx = sorted(by_idx)
        if idx != list(range(len(idx))) or any(len(by_idx[i]) != 3 for i in idx):
            raise CheckpointError(f"incomplete experts under {prefix}: need gate/up/down for experts 0..{len(idx) - 1}")
        for part in ("gate_proj", "up_proj", "down_proj"):  # name the one expert that differs
            want = tuple(by_idx[0][part].shape)
            for i in idx:
                got = tuple(by_idx[i][part].shape)
                if got != want:
                    raise CheckpointError(f"shape mismatch for {_to_official_name(prefix)}{i}.{part}.weight: {got}, "
                                          f"while expert 0 has {want}")
        out[prefix + "gate_up_proj"] = torch.stack([torch.cat([by_idx[i]["gate_proj"], by_idx[i]["up_proj"]], 0) for i in idx])
        out[prefix + "down_proj"] = torch.stack([by_idx[i]["down_proj"] for i in idx])
    return out, unknown


def _reverse_rule(official: str, internal: str) -> tuple[str, str]:
    """The inverse of one rename rule: internal-name pattern -> official replacement."""
    anchored = official.endswith("$")
    pat = re.escape(internal).replace(re.escape("\\1"), r"(\d+)") + ("$" if anchored else "")
    rep = official.rstrip("$").replace(r"(\d+)", "\\1").replace("\\.", ".")
    return pat, rep


_REVERSE = [_reverse_rule(a, b) for a, b in _RULES]
_REVERSE_C = [(re.compile("^" + a), b) for a, b in _REVERSE]


def _to_official_name(name: str) -> str:
    for pat, rep in _REVERSE_C:
        if pat.match(name):
            return pat.sub(rep, name, count=1)
    raise CheckpointError(f"no official name for parameter {name}")


def internal_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse: our state dict in the official key layout (tests write tiny checkpoints with it)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, dict[str, torch.Tensor]]] = defaultdict(lambda: defaultdict(dict))
    for name, t in state.items():
        m = re.match(r"^(encoder\.vision_model\.encoder\.layers\.\d+\.self_attn\.)(q_proj|k_proj|v_proj)\.(weight|bias)$", name)
        if m:
            qkv[m.group(1)][m.group(3)][m.group(2)] = t
            continue
        m = re.match(r"^(language\.layers\.\d+\.mlp\.experts\.)(gate_up_proj|down_proj)$", name)
        if m:
            base = _to_official_name(m.group(1))
            for e in range(t.shape[0]):
                if m.group(2) == "gate_up_proj":
                    inter = t.shape[1] // 2
                    out[f"{base}{e}.gate_proj.weight"] = t[e, :inter].contiguous()
                    out[f"{base}{e}.up_proj.weight"] = t[e, inter:].contiguous()
                else:
                    out[f"{base}{e}.down_proj.weight"] = t[e].contiguous()
            continue
        out[_to_official_name(name)] = t
    for prefix, parts in qkv.items():
        base = _to_official_name(prefix)
        for kind, d in parts.items():
            out[f"{base}qkv_proj.{kind}"] = torch.cat([d["q_proj"], d["k_proj"], d["v_proj"]], 0).contiguous()
    return out


# -- reading a checkpoint directory ---------------------------------------------------------------
# Checkpoint files are untrusted input: every path stays inside the checkpoint folder, every header
# is checked before anything is allocated, and every failure is one CheckpointError naming the file.
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on a header


def read_json(path: Path, what: str) -> Any:
    """A JSON file as data, or a CheckpointError naming it (unreadable, malformed, nested absurdly deep)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint has no {what}: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{path} nests too deep to be a {what}") from None


def _inside(folder: Path, name: Any, source: Path) -> Path:
    """`folder / name` if `name` is a plain relative path that stays inside `folder`."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(f"{source} names a weight file {name!r} that is not a file name")
    rel = Path(name)
    target = (folder / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or not target.is_relative_to(folder.resolve()):
        raise CheckpointError(f"{source} points outside the checkpoint folder ({name!r}); "
                              "weight files must lie inside it")
    return folder / rel


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.exists():
        data = read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} is not a safetensors index: it needs a non-empty \"weight_map\" object "
                                  "from tensor names to shard files")
        bad = [k for k, v in weight_map.items() if not isinstance(v, str)]
        if bad:
            raise CheckpointError(f"{index}: weight_map entry {bad[0]!r} is not a file name")
        shards = sorted(set(weight_map.values()))
        foreign = [s for s in shards if not s.endswith(".safetensors")]
        if foreign:  # an index may point at pickle shards (.bin): never opened, whatever reads the list
            raise CheckpointError(f"{index} lists non-safetensors shards: {', '.join(foreign)}; optimem loads safetensors only")
        files = [_inside(path, s, index) for s in shards]
        missing = [s for s, f in zip(shards, files) if not f.is_file()]
        if missing:
            raise CheckpointError(f"checkpoint {path} is missing weight shards: {', '.join(missing)}")
        return files
    if single.exists():
        return [single]
    if list(path.glob("*.bin")) or list(path.glob("*.pt")) or list(path.glob("*.pth")):
        raise CheckpointError(f"{path} has only pickle weights (.bin/.pt); optimem loads safetensors only")
    raise CheckpointError(f"{path} has no model.safetensors or model.safetensors.index.json")


_ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
              "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def read_safetensors_header(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header, checked against the file's size, without
    reading any tensor (and without torch)."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{file} is not a safetensors file (too short)")
            n = int.from_bytes(head, "little")
            if n <= 1 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(f"{file} is not a safetensors file (header length {n} does not fit a {size}-byte file)")
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{file} is not a safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file} is not a safetensors file (header is not an object)")
    data_len = size - 8 - n
    shapes: dict[str, tuple[int, ...]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(info, dict) and info.get("dtype") in _ST_DTYPES and isinstance(info.get("shape"), list)
              and all(type(d) is int and d >= 0 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(type(o) is int for o in info["data_offsets"]))
        if not ok:
            raise CheckpointError(f"{file}: tensor {name!r} has a malformed header entry")
        start, end = info["data_offsets"]
        count = 1
        for d in info["shape"]:
            count *= d
        if not 0 <= start <= end <= data_len or end - start != count * _ST_DTYPES[info["dtype"]]:
            raise CheckpointError(f"{file}: tensor {name!r} claims bytes {start}..{end} for shape {info['shape']} "
                                  f"{info['dtype']}, which the {data_len}-byte data section does not hold")
        shapes[name] = tuple(info["shape"])
    return shapes


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a checkpoint folder, from the headers alone."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in weight_files(path):
        shapes.update(read_safetensors_header(f))
    return shapes


def load_into(model: torch.nn.Module, path: Path) -> None:
    """Copy the checkpoint's tensors into `model` (already built on its device and dtype).

    Missing and unexpected keys are an error naming them; a wrong shape names the key and both shapes."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        read_safetensors_header(f)  # a malformed file is a CheckpointError naming it, not a library panic
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    tensors[k] = sf.get_tensor(k)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types (and panics)
            raise CheckpointError(f"cannot read {f}: {exc}") from None
    mapped, unknown = official_to_internal(tensors)
    own = model.state_dict()
    unexpected = sorted(set(unknown) | {k for k in mapped if k not in own})
    missing = sorted(k for k in own if k not in mapped)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        raise CheckpointError(f"checkpoint {path} does not fit the model: " + "; ".join(parts))
    with torch.no_grad():
        for k, t in mapped.items():
            if tuple(t.shape) != tuple(own[k].shape):
                raise CheckpointError(f"shape mismatch for {k}: checkpoint {tuple(t.shape)}, model {tuple(own[k].shape)}")
            own[k].copy_(t.to(own[k].dtype))


def save_official(model: torch.nn.Module, path: Path, config: dict[str, Any], *, dtype: torch.dtype | None = None) -> None:
    """Write `model` as an official-layout checkpoint (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype else v).detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(internal_to_official(state), str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=1))
