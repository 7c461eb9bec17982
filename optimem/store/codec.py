"""Vision-token cache entries on disk or in Redis: raw tensor bytes behind a JSON header. Never pickle.

Layout: `b"OPTM1\\n"` + 4-byte big-endian header length + header JSON + payload. The header holds
dtype, shape, model, tier, content hash of the page, and a sha256 of the payload. Decoding checks
all of it against what the caller asked for, so a truncated or corrupted entry, or one written for
another model or tier, raises `CacheCorruptError` instead of feeding wrong vectors to a model.
bfloat16 (no numpy dtype) is stored as its raw 16-bit patterns with dtype "bfloat16".
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import numpy as np

from optimem.errors import CacheCorruptError

MAGIC = b"OPTM1\n"
_NUMPY_DTYPES = {"float32", "float16", "float64", "int32", "int64", "uint8", "uint16"}


def encode(tensor: Any, *, model: str, tier: str, content_hash: str) -> bytes:
    """Bytes for a numpy array or a torch tensor (any device; bf16 kept bit-exact)."""
    dtype, array = _to_numpy(tensor)
    payload = np.ascontiguousarray(array).tobytes()
    header = {
        "dtype": dtype,
        "shape": list(array.shape),
        "model": model,
        "tier": tier,
        "content_hash": content_hash,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + payload


MAX_HEADER_BYTES = 4096
_HEADER_KEYS = {"dtype": str, "shape": list, "model": str, "tier": str, "content_hash": str, "sha256": str}


def decode_header(blob: bytes) -> dict[str, Any]:
    """The header of a cache entry, checked field by field: any malformed entry (bit flips,
    truncation, a foreign blob) raises `CacheCorruptError` and nothing else."""
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) < len(MAGIC) + 4:
        raise CacheCorruptError("cache entry too short")
    if bytes(blob[: len(MAGIC)]) != MAGIC:
        raise CacheCorruptError("cache entry has no optimem header")
    (n,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if n > MAX_HEADER_BYTES:
        raise CacheCorruptError(f"cache entry header length {n} is implausible (over {MAX_HEADER_BYTES} bytes)")
    if start + n > len(blob):
        raise CacheCorruptError("cache entry header truncated")
    try:
        header = json.loads(bytes(blob[start : start + n]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CacheCorruptError(f"cache entry header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CacheCorruptError("cache entry header is not a JSON object")
    for key, kind in _HEADER_KEYS.items():
        if not isinstance(header.get(key), kind):
            raise CacheCorruptError(f"cache entry header field {key!r} is missing or not a {kind.__name__}")
    if header["dtype"] not in _NUMPY_DTYPES and header["dtype"] != "bfloat16":
        raise CacheCorruptError(f"cache entry has unknown dtype {header['dtype']!r}")
    shape = header["shape"]
    if len(shape) > 8 or not all(type(d) is int and 0 <= d < 2**31 for d in shape):
        raise CacheCorruptError(f"cache entry has an invalid shape {shape!r}")
    header["_offset"] = start + n
    return header


def decode(blob: bytes, *, model: str, tier: str, content_hash: str) -> tuple[str, np.ndarray]:
    """(dtype name, array) after checking magic, lengths, checksum, model, tier and page hash.

    For "bfloat16" the array holds the raw uint16 bit patterns; `to_torch` restores the tensor.
    """
    header = decode_header(blob)
    for key, want in (("model", model), ("tier", tier), ("content_hash", content_hash)):
        if header[key] != want:
            raise CacheCorruptError(f"cache entry is for {key}={header[key]!r}, not {want!r}")
    payload = bytes(blob[header["_offset"] :])
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CacheCorruptError("cache entry checksum mismatch (corrupted or truncated)")
    dtype = header["dtype"]
    np_dtype = np.dtype(np.uint16) if dtype == "bfloat16" else np.dtype(dtype)
    shape = tuple(header["shape"])
    expected = int(np.prod(shape, dtype=object)) * np_dtype.itemsize
    if len(payload) != expected:
        raise CacheCorruptError(f"cache entry payload is {len(payload)} bytes, expected {expected}")
    return dtype, np.frombuffer(payload, dtype=np_dtype).reshape(shape)


def to_torch(dtype: str, array: np.ndarray):
    import torch

    t = torch.from_numpy(array.copy())
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def _to_numpy(tensor: Any) -> tuple[str, np.ndarray]:
    if isinstance(tensor, np.ndarray):
        name = str(tensor.dtype)
        if name not in _NUMPY_DTYPES:
            raise TypeError(f"cannot cache dtype {name}")
        return name, tensor
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(tensor).__name__}")
    t = tensor.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return "bfloat16", t.view(torch.uint16).numpy() if hasattr(torch, "uint16") else t.view(torch.int16).numpy().view(np.uint16)
    name = str(t.dtype).removeprefix("torch.")
    if name not in _NUMPY_DTYPES:
        raise TypeError(f"cannot cache dtype {name}")
    return name, t.numpy()
