"""`optimem chat --model DIR [--session S] [--store URL] [--budget N] [--compile]`: a terminal chat on the native
DeepSeek-OCR path, with optical memory. Empty line or Ctrl-D ends it."""

from __future__ import annotations

import argparse
import sys

from optimem.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="DeepSeek-OCR checkpoint directory (official layout)")
    p.add_argument("--session", default="chat", help="the conversation to continue or start")
    p.add_argument("--store", default=None, help="store URL (default: SQLite file in ~/.local/share/optimem)")
    p.add_argument("--budget", type=common.int_at_least(1, "--budget"), default=8192, help="context budget in tokens")
    p.add_argument("--max-new-tokens", type=common.int_at_least(1, "--max-new-tokens"), default=512,
                   help="longest reply in tokens")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16 or float32 (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--compile", action="store_true",
                   help="CUDA: encode pages through the compiled encoder (model.compile; ~35-50 s of compile per tier)")


def run(args: argparse.Namespace) -> int:
    from optimem.memory import OpticalMemory
    from optimem.progress import stderr_console

    console = stderr_console()
    backend = common.load_backend(args.model, console, device=args.device, dtype=args.dtype, compile=args.compile)
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
        print(common.with_model_progress(console, backend, lambda: mem.chat(
            line, budget=args.budget, max_new_tokens=args.max_new_tokens)))
    return 0
