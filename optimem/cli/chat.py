"""`optimem chat --model DIR [--session S] [--store URL] [--budget N] [--compile]`: a terminal chat on the native
DeepSeek-OCR path, with optical memory. Empty line or Ctrl-D ends it."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="DeepSeek-OCR checkpoint directory (official layout)")
    p.add_argument("--session", default="chat")
    p.add_argument("--store", default=None, help="store URL (default: SQLite file in ~/.local/share/optimem)")
    p.add_argument("--budget", type=int, default=8192)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--compile", action="store_true",
                   help="CUDA: encode pages through the compiled encoder (model.compile; ~35-50 s of compile per tier)")


def run(args: argparse.Namespace) -> int:
    from optimem.backends import DeepseekOCRBackend
    from optimem.memory import OpticalMemory

    backend = DeepseekOCRBackend.from_pretrained(args.model, device=args.device, dtype=args.dtype, compile=args.compile)
    mem = OpticalMemory(args.session, args.store, backend=backend)
    print(f"session {args.session}: {mem.store.count_turns(args.session)} turns remembered; empty line to quit",
          file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        print(mem.chat(line, budget=args.budget, max_new_tokens=args.max_new_tokens))
    return 0
