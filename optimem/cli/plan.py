"""`optimem plan INPUT --budget N [--recent K] [--json]`: the decay plan for a transcript.

A large transcript takes seconds to lay out and count: a progress bar on stderr shows pages laid out
(count, pages/s) and then turns counted."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from optimem.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="transcript: .jsonl (one {\"role\", \"content\"} per line) or .json (a list of them)")
    p.add_argument("--budget", type=common.int_at_least(1, "--budget"), required=True, help="context budget in tokens")
    p.add_argument("--recent", type=common.int_at_least(1, "--recent"), default=6, help="most recent turns kept as text")
    p.add_argument("--reserve", type=common.int_at_least(0, "--reserve"), default=0,
                   help="tokens reserved for the reply and system prompt")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON document")


def run(args: argparse.Namespace) -> int:
    from optimem.errors import InputError
    from optimem.backends import DEEPSEEK_TEMPLATE_OVERHEAD
    from optimem.ladders import DEEPSEEK_OCR_V1
    from optimem.records import TailCuts, page_infos, tail_infos, turn_infos
    from optimem.progress import progress_bar
    from optimem.policies import Planner, Policy
    from optimem.renderers import PageLayout, Paginator, load_input, normalize_text
    from optimem.renderers.layout import page_spans
    from optimem.renderers.tokens import count_tokens_batch

    turns = load_input(args.input)
    if isinstance(turns, str):
        raise InputError(f"{args.input} is a document; `optimem plan` takes a transcript (.jsonl or .json)")
    policy = Policy(recent_turns=args.recent, reserve_tokens=args.reserve)
    with progress_bar() as bar:
        # `renderers.paginate`, one page at a time so the bar can follow it
        task = bar.add_task(f"lay out {Path(args.input).name}", total=max(sum(len(t.content) for t in turns), 1),
                            unit="pages", items=0)
        layouts = []
        for i, (lines, full, contents) in enumerate(Paginator().iter_page_lines(turns, (0, 0))):
            layouts.append(PageLayout(i, page_spans(lines, contents), "\n".join(line.text for line in lines), full))
            bar.update(task, advance=layouts[-1].chars, items=len(layouts))
        bar.update(task, completed=bar.tasks[task].total)
        sealed = [p for p in layouts if p.full]  # the last, unfilled page is still open: its turns stay text
        texts = [normalize_text(t.content) for t in turns] + [p.text for p in sealed]
        count = bar.add_task("count tokens", total=len(texts), unit="texts")
        tokens: list[int] = []
        for start in range(0, len(texts), 256):
            tokens += count_tokens_batch(texts[start:start + 256])
            bar.update(count, completed=len(tokens))
    records = turn_infos(texts[: len(turns)], tokens=tokens[: len(turns)])
    counted = [SimpleNamespace(index=p.index, spans=p.spans, text=p.text, text_tokens=n)  # counted above, once
               for p, n in zip(sealed, tokens[len(turns):])]
    planner = Planner(DEEPSEEK_OCR_V1.costs, policy, DEEPSEEK_TEMPLATE_OVERHEAD)  # the native template counts too
    planner.extend(records, page_infos(counted))
    cuts = TailCuts()
    cuts.add(sealed)
    # a turn too long to be text whole is cut: its earlier pages shown, its tail as text (counted only
    # for such turns, when the planner asks)
    planner.tail_source = lambda t: tail_infos(t, texts[t], None, cuts.cuts(t))[0]
    result = planner.plan(args.budget)
    if args.json:
        json.dump(result.to_json(), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(result.explain())
    return 0
