"""What every benchmark result carries: machine, versions and date, so a committed figure can be traced."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

_PACKAGES = ("optimem", "numpy", "pillow", "freetype-py", "uharfbuzz", "python-bidi", "manimgx-fonts", "torch",
             "transformers", "redis", "tokenizers", "bm25s", "langchain-core", "langchain")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def envelope(name: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "optimem " + " ".join(sys.argv[1:]) if sys.argv and "optimem" in sys.argv[0] else None,
        "machine": machine(),
        "versions": versions(),
        "result": result,
    }


def print_summary(doc: dict[str, Any]) -> None:
    """Human view: a benchmark may put a list of flat rows under result['table']; else dump JSON."""
    result = doc["result"]
    rows = result.get("table") if isinstance(result, dict) else None
    if rows:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"optimem bench {doc['benchmark']}")
        for key in rows[0]:
            table.add_column(str(key))
        for row in rows:
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
        Console().print(table)
        for key, value in result.items():
            if key != "table" and not isinstance(value, (list, dict)):
                print(f"{key}: {value}")
    else:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
