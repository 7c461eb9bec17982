"""`optimem bench tokens`: tokens per model call for a 200-turn conversation, per provider: optimem's
compressor vs the full text vs LangChain's `trim_messages` at the same budget, and how many turns each
still holds in some form (text, or on a page image shown at any tier).

Text tokens are the DeepSeek-OCR tokenizer's counts for every provider (a documented estimate; see
`optimem.providers`); image tokens follow each provider's published formula.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from optimem.progress import track


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budgets", nargs="+", type=int, default=[4000, 8000])
    p.add_argument("--turns", type=int, default=200)
    p.add_argument("--providers", nargs="+", default=["openai", "anthropic", "gemini", "deepseek-ocr"])


def run(args: argparse.Namespace) -> dict:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, trim_messages

    from optimem.langchain import OpticalCompressor
    from optimem.providers import text_tokens

    path = resources.files("optimem").joinpath("data/example_chat.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    msgs = [SystemMessage(rows[0]["content"])] + [
        (AIMessage if r["role"] == "assistant" else HumanMessage)(r["content"]) for r in rows[1 : args.turns + 1]
    ]
    counts = {id(m): text_tokens(m.content) for m in msgs}
    full = sum(counts.values())

    def counter(ms) -> int:
        return sum(counts.get(id(m), 0) or text_tokens(m.content if isinstance(m.content, str) else "") for m in ms)

    table = []
    for provider in track(args.providers, total=len(args.providers), unit="providers"):
        for budget in args.budgets:
            comp = OpticalCompressor(provider=provider, budget=budget)
            report = comp.invoke(msgs)[0].response_metadata["optimem"]
            held = range(report["units"] - report["omitted_units"])
            trimmed = trim_messages(msgs, max_tokens=budget, token_counter=counter, strategy="last",
                                    include_system=True, start_on="human")
            table.append({
                "provider": provider, "budget": budget, "turns": len(msgs) - 1,
                "full_text_tokens": full, "optimem_tokens": report["tokens"],
                "optimem_turns_held": len(held), "trim_tokens": counter(trimmed),
                "trim_turns_held": len(trimmed) - 1,
            })
    return {"table": table, "text_token_counter": "DeepSeek-OCR tokenizer (estimate for non-DeepSeek providers)"}
