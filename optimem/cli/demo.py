"""`optimem demo`: the memory at work on the bundled conversation, on embedded defaults.

SQLite store in the output folder, the DeepSeek-OCR v1 ladder without a model (no GPU, no network, no
torch), the default policy. Feeds the conversation turn by turn, shows what each model call would
receive at a few points, and writes a contact sheet of the pages at their current tiers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from optimem.cli import common


# the files this command writes into --out; a re-run removes these first (and nothing else)
DEMO_FILES = (r"demo\.db(-wal|-shm|-journal)?", r"contact_sheet\.png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=common.int_at_least(1, "--budget"), default=8192, help="context budget in tokens")
    p.add_argument("--out", default="optimem-demo", help="output folder (created; the files of an earlier demo "
                                                        "there are replaced, other files are left alone)")
    p.add_argument("--input", default=None, help="a transcript (.jsonl / .json) instead of the bundled conversation")
    p.add_argument("--limit", type=common.int_at_least(1, "--limit"), default=None, help="feed only the first N turns")
    p.add_argument("--checkpoints", type=common.int_at_least(1, "--checkpoints"), default=4,
                   help="model calls shown in the table")
    p.add_argument("--model", default=None, help="a DeepSeek-OCR checkpoint dir: also answer a question natively")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def _bundled() -> str:
    from importlib import resources

    return str(resources.files("optimem").joinpath("data/example_chat.jsonl"))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from optimem.memory import OpticalMemory
    from optimem.progress import progress_bar
    from optimem.renderers import load_transcript

    console = Console(stderr=True)
    if Path(args.out).exists() and not Path(args.out).is_dir():  # before any work
        common.output_dir(args.out, DEMO_FILES)
    turns = load_transcript(args.input or _bundled())
    out, _ = common.output_dir(args.out, DEMO_FILES)
    db = out / "demo.db"
    if args.limit:
        turns = turns[: args.limit]
    backend = None
    if args.model:
        from optimem.backends import DeepseekOCRBackend

        backend = DeepseekOCRBackend.from_pretrained(args.model)
    mem = OpticalMemory("demo", f"sqlite:///{db.resolve()}", backend=backend)
    n = len(turns)
    k = max(args.checkpoints, 1)
    checkpoints = sorted({max(1, round(n * (i + 1) / k)) for i in range(k)})
    rows = []
    t_start = time.perf_counter()
    with progress_bar(console=console) as progress:
        task = progress.add_task("feeding turns", total=n, unit="turns")
        for i, turn in enumerate(turns, start=1):
            mem.add(turn.role, turn.content, dict(turn.metadata))
            sealed = mem.sync()
            plan = mem.plan(args.budget) if i in checkpoints else None
            if plan is not None:
                tiers: dict[str, int] = {}
                for _, t in plan.page_tiers:
                    tiers[t] = tiers.get(t, 0) + 1
                text_turns = sum(len(s.turns) for s in plan.segments if s.kind == "text")
                history = sum(mem._planner.turns[j].tokens for j in range(i))  # noqa: SLF001 (counts cached there)
                rows.append({
                    "after_turn": i,
                    "history_text_tokens": history,
                    "context_tokens": plan.total_tokens,
                    "text_tokens_represented": plan.text_tokens_represented,
                    "ratio": round(plan.text_tokens_represented / max(plan.total_tokens, 1), 2),
                    "text_turns": text_turns,
                    "pages": tiers,
                })
            desc = f"turn {i}: {mem.store.get_meta('demo').get('pages', 0)} pages sealed" + (f" (+{sealed})" if sealed else "")
            progress.update(task, advance=1, description=desc)
    final = mem.context(args.budget)
    sheet = out / "contact_sheet.png"
    contact_sheet(mem, final, sheet)
    elapsed = time.perf_counter() - t_start
    answer = None
    if args.model:
        facts_path = Path(_bundled()).with_name("example_chat_facts.json")
        question = json.loads(facts_path.read_text())[0]["question"] if facts_path.exists() else "What did we discuss first?"
        answer = {"question": question, "answer": mem.chat(question, budget=args.budget)}
    doc = {"turns": n, "budget": args.budget, "store": mem.store.url, "calls": rows, "contact_sheet": str(sheet),
           "final_plan": final.plan.to_json(), "seconds": round(elapsed, 2), "answer": answer}
    if args.json:
        json.dump(doc, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    _print_report(doc, final.plan.explain())
    return 0


def _print_report(doc: dict, explain: str) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    table = Table(title=f"What each model call receives (budget {doc['budget']} tokens)")
    for col in ("turn", "history", "context", "represented", "ratio", "text turns", "pages by tier"):
        table.add_column(col, justify="right")
    for r in doc["calls"]:
        pages = ", ".join(f"{t} {c}" for t, c in sorted(r["pages"].items(), key=lambda x: _TIER_ORDER.get(x[0], 9)))
        table.add_row(str(r["after_turn"]), str(r["history_text_tokens"]), str(r["context_tokens"]),
                      str(r["text_tokens_represented"]), f"{r['ratio']:.2f}x", str(r["text_turns"]), pages or "-")
    con.print(table)
    con.print("history = text tokens so far; context = tokens the call costs; represented = text tokens of "
              "the turns it still holds (as text or on a shown page); ratio = represented / context")
    con.print("[bold]The last call, segment by segment (oldest first):[/bold]")
    con.print(explain, markup=False)
    con.print(f"Contact sheet of the pages at their current tiers: {doc['contact_sheet']}")
    if doc["answer"]:
        con.print(f"Q: {doc['answer']['question']}\nA: {doc['answer']['answer']}", markup=False)
    con.print(f"({doc['turns']} turns in {doc['seconds']} s; store {doc['store']})")


_TIER_ORDER = {"large": 0, "base": 1, "small": 2, "tiny": 3, "dropped": 4}


def contact_sheet(mem, ctx, path: Path, cell: int = 256, cols: int = 8) -> None:
    """Every sealed page at its planned tier, drawn at a size proportional to its resolution, so the
    decay is visible: large pages at full cell size, tiny ones at 40%; dropped pages as grey boxes."""
    import io

    from PIL import Image, ImageDraw

    ladder = mem.backend.ladder  # the backend's own tiers (names, view sizes)
    largest = max(v.size for v in ladder.views)

    tiers = dict(ctx.plan.page_tiers)
    pages = mem.store.get_pages(mem.session)
    if not pages:
        Image.new("RGB", (cell, cell), "white").save(path)
        return
    rows = (len(pages) + cols - 1) // cols
    label_h = 18
    sheet = Image.new("RGB", (cols * cell, rows * (cell + label_h)), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for i, p in enumerate(pages):
        x, y = (i % cols) * cell, (i // cols) * (cell + label_h)
        tier = tiers.get(p.index)
        if tier in ladder.names:
            img = ladder.view(Image.open(io.BytesIO(p.png)), tier)
            side = max(int(cell * ladder.spec(tier).size / largest), 8)
            thumb = img.resize((side, side), Image.Resampling.LANCZOS)
            sheet.paste(thumb, (x + (cell - side) // 2, y + (cell - side) // 2))
        else:
            draw.rectangle([x + 8, y + 8, x + cell - 8, y + cell - 8], fill=(200, 200, 200))
        label = f"page {p.index}: {tier or 'text (recent)'}"
        draw.text((x + 4, y + cell + 2), label, fill=(0, 0, 0))
    sheet.save(path)
