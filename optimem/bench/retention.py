"""`optimem bench retention`: which facts a long conversation still holds at its end, per budget and
strategy, with every page read back by an independent OCR at the tier it is shown.

Conversations: two generated two-person chats (a fact with a unique key word every few turns, among
ordinary small talk) and the bundled one (its facts: every identifier such as a booking reference or
order number, at the turn it first appears). Each is planned after every turn, as a chat loop plans,
with pages sealed as they fill. Strategies:

- `optimem`: the default policy (age floors persisted; spare budget filled, per call);
- `optimem strict`: `Policy(fill_budget=False)`, the paper's fixed decay;
- `optimem before`: the earlier release's behaviour, every call's tiers persisted as floors (a budget
  squeeze was permanent); kept to show what the split of the two forgettings buys;
- `truncation`: the newest turns that fit, as text; `trim_messages`: LangChain's `trim_messages`
  (strategy "last") with the same token counter.

A fact survives when the last plan holds its turn as text, or shows the page drawing its key at a
tier where tesseract reads the key back exactly (the page image derived for that tier as the backend
derives it, upscaled as `optimem bench legibility` does). Every plan counts the DeepSeek-OCR prompt
template. Also reported: each tier's character accuracy on chat pages (headers and rules included)
and text tokens per chat page. Tesseract is a proxy for what DeepSeek-OCR reads, not the model.
"""

from __future__ import annotations

import argparse
import random
import re
from typing import Any

STRATEGIES = ("optimem", "optimem strict", "optimem before", "truncation", "trim_messages")
KEYS = (
    "Biscuit", "Marigold", "Tenerife", "Okonkwo", "Valparaiso", "Quillon", "Saffron", "Brindisi", "Hollins",
    "Zephyrine", "Larkspur", "Osterley", "Pemberton", "Kilimanjaro", "Rosalind", "Tamworth", "Juniper",
    "Carraway", "Wexford", "Galloway", "Esperanza", "Fennimore", "Ishikawa", "Dunmore", "Lucerne", "Matisse",
    "Nightingale", "Orkney", "Penrose", "Quenby", "Rutherford", "Sorrento", "Thistle", "Umbria", "Vivaldi",
    "Winslow", "Yarrow", "Zanzibar", "Abernathy", "Bellamy", "Castellan", "Delacroix", "Everly", "Fitzroy",
)
FACTS = (
    "Oh, I never told you: my new puppy is called {k}.",
    "We finally booked the holiday, we are going to {k} in the spring.",
    "My grandmother's maiden name was {k}, I found out last week.",
    "The book club picked {k} as the theme for next month.",
    "Our new neighbour, Mr {k}, brought us a cake yesterday.",
    "I signed up for pottery classes at the {k} studio downtown.",
    "The painting in my hallway is by an artist called {k}.",
)
_SUBJ = ("I", "my sister", "the kids", "we", "my boss", "our team", "my friend from school", "the coach", "mum")
_VERB = ("spent the weekend", "talked for hours", "finally cleaned the garage", "went for a long walk",
         "tried a new recipe", "watched an old film", "started running again", "argued about money",
         "visited the market", "planted tomatoes", "fixed the bike", "baked bread", "painted the fence")
_TAIL = ("and it was lovely", "which took forever", "although it rained the whole time", "with the dog",
         "after work", "before dinner", "and I feel great about it", "but honestly I was exhausted",
         "because the weather was so nice", "like we used to", "for the first time in years")
_REPLY = ("That sounds wonderful!", "Oh no, really?", "I love that.", "Tell me more.", "Same here, honestly.",
          "How did that go?", "You deserve a break.", "Ha, that is so you.", "I remember you said that.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budgets", default="2048,4096,8192", help="comma-separated token budgets")
    p.add_argument("--turns", type=int, default=400, help="turns per generated conversation")
    p.add_argument("--conversations", type=int, default=2, help="generated conversations (plus the bundled one)")
    p.add_argument("--no-bundled", action="store_true", help="leave the bundled conversation out")
    p.add_argument("--accuracy-pages", type=int, default=4, help="pages per conversation read at every tier")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--export-views", metavar="DIR", help="write the tier views to read and stop (to OCR elsewhere)")
    p.add_argument("--ocr-texts", metavar="DIR", help="tesseract readings made elsewhere (`main`); the rest run here")


def generated(seed: int, n_turns: int, fact_every: int = 10) -> tuple[list[dict], list[tuple[int, str]]]:
    """A two-person chat with a fact (a unique key word) every `fact_every` turns or so."""
    rng = random.Random(seed)
    keys = list(KEYS)
    rng.shuffle(keys)
    turns, facts = [], []
    next_fact = rng.randint(2, fact_every)
    for i in range(n_turns):
        sentences = []
        if i % 2 == 1 and rng.random() < 0.6:
            sentences.append(rng.choice(_REPLY))
        for _ in range(rng.randint(1, 6)):
            s = f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_TAIL)}."
            sentences.append(s[0].upper() + s[1:])
        if i == next_fact and keys:
            k = keys.pop()
            sentences.insert(rng.randint(0, len(sentences)), rng.choice(FACTS).format(k=k))
            facts.append((i, k))
            next_fact = i + rng.randint(fact_every - 3, fact_every + 3)
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": " ".join(sentences)})
    return turns, facts


def bundled(max_facts: int = 40) -> tuple[list[dict], list[tuple[int, str]]]:
    """The bundled conversation; its facts are identifiers and long numbers the user gave (what
    `detect_exact` flags, no spaces), at the turn each first appears, at most `max_facts` spread evenly."""
    from importlib import resources

    from optimem.policies.exact import _PATTERNS
    from optimem.renderers import load_transcript

    turns = [{"role": t.role, "content": t.content}
             for t in load_transcript(str(resources.files("optimem").joinpath("data/example_chat.jsonl")))]
    seen: dict[str, int] = {}
    for i, t in enumerate(turns):
        if t["role"] != "user":
            continue
        for name, pat in _PATTERNS:
            if name == "code":
                continue
            for m in pat.finditer(t["content"]):
                key = m.group(0).rstrip(".,;:")
                if len(key) >= 7 and " " not in key and not any(key in k for k in seen):
                    seen.setdefault(key, i)
    facts = sorted((i, k) for k, i in seen.items())
    step = max(len(facts) / max_facts, 1.0)
    return turns, [facts[int(j * step)] for j in range(min(max_facts, len(facts)))]


# -- planning as a chat loop does ---------------------------------------------------------------------


def _sealed_at(layouts: list[Any]) -> list[int]:
    """How many turns a chat loop has added when each page gets sealed (its successor has begun)."""
    out = []
    for k in range(len(layouts)):
        if k + 1 < len(layouts):
            out.append(layouts[k + 1].spans[0].turn + 1)
        else:
            out.append(1 << 30)  # the last page is still open at the end
    return out


def chat_loop(records, pages, sealed_at, budget: int, strategy: str, ladder, overhead) -> dict:
    """Plan after every turn; returns the last plan and the budget use over the loop."""
    from optimem.policies import Planner, Policy, PolicyError

    fill = strategy == "optimem"
    planner = Planner(ladder, Policy(fill_budget=fill), overhead)
    added = 0
    last = None
    refused = 0
    used = []
    for n in range(1, len(records) + 1):
        planner.extend([records[n - 1]])
        new = []
        while added < len(pages) and sealed_at[added] <= n:
            new.append(pages[added])
            added += 1
        if new:
            planner.extend(pages=new)
        try:
            p = planner.plan(budget)
        except PolicyError:
            refused += 1
            continue
        planner.set_floors(p.tiers() if strategy == "optimem before" else p.floors())
        used.append(p.total_tokens / budget)
        last = (n, p)
    return {"plan": last[1] if last else None, "planned_at": last[0] if last else 0, "refused": refused,
            "mean_budget_use": sum(used) / max(len(used), 1)}


def truncation_kept(tokens: list[int], budget: int, overhead) -> set[int]:
    room = budget - overhead.fixed
    kept: set[int] = set()
    for i in range(len(tokens) - 1, -1, -1):
        cost = tokens[i] + overhead.per_turn
        if cost > room:
            break
        room -= cost
        kept.add(i)
    return kept


def trim_kept(turns: list[dict], tokens: list[int], budget: int, overhead) -> set[int] | None:
    try:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, trim_messages
    except ImportError:
        return None
    kind = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage, "tool": HumanMessage}
    msgs = [kind[t["role"]](content=t["content"], id=str(i)) for i, t in enumerate(turns)]
    cost = {str(i): tokens[i] + overhead.per_turn for i in range(len(turns))}
    kept = trim_messages(msgs, max_tokens=budget - overhead.fixed, strategy="last", allow_partial=False,
                         token_counter=lambda ms: sum(cost[m.id] for m in ms))
    return {int(m.id) for m in kept}


# -- reading pages back ---------------------------------------------------------------------------


def read_page(png_path: str, font_px: int, master_px: int, tesseract: str = "tesseract") -> str:
    """Tesseract's reading of one tier view: upscaled as `optimem.bench.legibility` does (~30 px glyphs,
    at most 2400 px a side), psm 6, English. Needs only Pillow and the tesseract binary, so the OCR can
    run on another machine (see `main`)."""
    import os
    import subprocess
    import tempfile

    from PIL import Image

    img = Image.open(png_path).convert("L")
    glyph = font_px * img.size[0] / master_px
    scale = min(max(1.0, 30.0 / glyph), max(1.0, 2400 / img.size[0]))
    if scale > 1.0:
        img = img.resize((int(img.size[0] * scale), int(img.size[1] * scale)), Image.Resampling.BICUBIC)
    fd, tmp = tempfile.mkstemp(suffix=".png")
    os.close(fd)
    try:
        img.save(tmp)
        out = subprocess.run([tesseract, tmp, "-", "--psm", "6", "-l", "eng"], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        return out.stdout
    finally:
        os.unlink(tmp)


def read_dir(src: str, dst: str, workers: int, tesseract: str = "tesseract") -> int:
    """Read every view listed in SRC/manifest.json into DST/<name>.txt; returns how many were read."""
    import json
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    manifest = json.loads((Path(src) / "manifest.json").read_text())
    Path(dst).mkdir(parents=True, exist_ok=True)

    def one(item):
        name, meta = item
        text = read_page(str(Path(src) / f"{name}.png"), meta["font_px"], meta["master_px"], tesseract)
        (Path(dst) / f"{name}.txt").write_text(text)

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        list(pool.map(one, manifest.items()))
    return len(manifest)


_HEADER = re.compile(r"^(User|Assistant|System|Tool)( \(continued\))?:$")


def turn_text_accuracy(ocr: str, page_text: str) -> tuple[float, float]:
    """(accuracy over the turns' text, share of the page's characters in headers): the reading is
    aligned with the whole page (Levenshtein opcodes, whitespace collapsed) and only edits landing on
    turn text count, so a header and its rule read as garbage do not count against the turns."""
    from rapidfuzz.distance import Levenshtein

    truth, header = [], []
    for line in page_text.split("\n"):
        line = _norm(line)
        if not line:
            continue
        if truth:
            truth.append(" ")
            header.append(False)
        is_header = bool(_HEADER.match(line))
        truth.extend(line)
        header.extend([is_header] * len(line))
    b = "".join(truth)
    content = sum(1 for h in header if not h)
    if not content:
        return 1.0, 1.0
    def by_header(j: int) -> bool:  # the rule drawn after a header line sits between it and the turn text
        return header[min(j, len(b) - 1)] or (j > 0 and header[j - 1]) or (j > 1 and header[j - 2])

    errors = 0
    for tag, i1, i2, j1, j2 in Levenshtein.opcodes(ocr, b):
        if tag == "equal":
            continue
        if tag == "replace":
            # a run of replacements may straddle a header and turn text: count per truth character
            errors += sum(1 for j in range(j1, j2) if not header[j]) + max(0, (i2 - i1) - (j2 - j1)) * (not by_header(j1))
        elif tag == "delete":  # read but not on the page
            errors += (i2 - i1) * (not by_header(j1))
        else:  # insert: on the page but not read
            errors += sum(1 for j in range(j1, j2) if not header[j])
    return max(0.0, 1 - errors / content), 1 - content / len(b)


def _norm(text: str) -> str:
    text = text.replace("\u2014", "-").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip()


def _read_views(jobs: dict, args: argparse.Namespace, font_px: int, master_px: int, backend) -> dict | None:
    """Tesseract's text per (conversation, page, tier): from --ocr-texts where present, else read here;
    with --export-views, the views are written out instead and None is returned."""
    import io
    import json
    import tempfile
    from pathlib import Path

    from PIL import Image

    names = {k: f"{k[0]}__p{k[1]}__{k[2]}" for k in jobs}
    out: dict = {}
    if args.ocr_texts:
        for k, name in names.items():
            f = Path(args.ocr_texts) / f"{name}.txt"
            if f.exists():
                out[k] = _norm(f.read_text())
    todo = {k: v for k, v in jobs.items() if k not in out}
    if not todo:
        return out
    export = args.export_views
    folder = Path(export) if export else Path(tempfile.mkdtemp(prefix="retention-"))
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for k, (png, tier) in todo.items():
        backend.ladder.view(Image.open(io.BytesIO(png)), tier).convert("L").save(folder / f"{names[k]}.png")
        manifest[names[k]] = {"font_px": font_px, "master_px": master_px}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if export:
        return None
    read_dir(str(folder), str(folder / "texts"), args.workers)
    for k in todo:
        out[k] = _norm((folder / "texts" / f"{names[k]}.txt").read_text())
    return out


def run(args: argparse.Namespace) -> dict:
    from rapidfuzz.distance import Levenshtein

    from optimem.backends import NoModelBackend
    from optimem.records import page_infos, stored_turn_infos
    from optimem.policies import Overhead
    from optimem.renderers import RenderSettings, render_transcript

    backend = NoModelBackend()
    ladder = backend.ladder.costs
    overhead = getattr(backend, "template_overhead", None) or Overhead()
    font_px = RenderSettings().font_px
    budgets = [int(b) for b in args.budgets.split(",")]
    convs = [(f"generated-{s}", *generated(s, args.turns)) for s in range(1, args.conversations + 1)]
    if not args.no_bundled:
        convs.append(("bundled", *bundled()))

    class _T:  # what stored_turn_infos reads
        def __init__(self, i, t):
            self.id, self.content, self.pinned, self.created = i, t["content"], False, None

    rows, jobs, prepared = [], {}, []
    for name, turns, facts in convs:
        pages = render_transcript(turns)
        sealed = [p for p in pages if p.full] or pages[:0]
        records = stored_turn_infos([_T(i, t) for i, t in enumerate(turns)])
        infos = page_infos(sealed)
        sealed_at = _sealed_at(sealed)
        tokens = [r.tokens for r in records]
        # the page drawing each fact's key
        fact_page = {}
        for turn, key in facts:
            for p in sealed:
                if any(s.turn == turn for s in p.spans) and key in p.text:
                    fact_page[(turn, key)] = p.index
                    break
        prepared.append((name, turns, facts, sealed, records, infos, sealed_at, tokens, fact_page))
        step = max(len(sealed) // max(args.accuracy_pages, 1), 1)
        for p in sealed[::step][: args.accuracy_pages]:
            for tier in ladder.names:
                jobs[(name, p.index, tier)] = (p.png_bytes(), tier)
    plans = {}
    for name, turns, facts, sealed, records, infos, sealed_at, tokens, fact_page in prepared:
        for budget in budgets:
            for strategy in STRATEGIES[:3]:
                res = chat_loop(records, infos, sealed_at, budget, strategy, ladder, overhead)
                plans[(name, budget, strategy)] = res
                p = res["plan"]
                if p is None:
                    continue
                for (turn, key), page in fact_page.items():
                    loc = p.where(turn)
                    if loc.kind != "text":
                        tier = dict(loc.pages).get(page)
                        if tier and tier != "dropped":
                            jobs[(name, page, tier)] = (sealed[page].png_bytes(), tier)
    ocr = _read_views(jobs, args, font_px, RenderSettings().page_px, backend)
    if ocr is None:
        return {"exported": len(jobs), "dir": args.export_views,
                "next": f"python optimem/bench/retention.py {args.export_views} OUT_DIR, then --ocr-texts OUT_DIR"}
    for name, turns, facts, sealed, records, infos, sealed_at, tokens, fact_page in prepared:
        total_text = sum(tokens)
        for budget in budgets:
            for strategy in STRATEGIES:
                present = readable = 0
                row: dict[str, Any] = {"conversation": name, "turns": len(turns), "history_tokens": total_text,
                                       "facts": len(facts), "budget": budget, "strategy": strategy}
                if strategy.startswith("optimem"):
                    res = plans[(name, budget, strategy)]
                    p = res["plan"]
                    if p is None:
                        row["note"] = "every call refused"
                        rows.append(row)
                        continue
                    for turn, key in facts:
                        loc = p.where(turn)
                        if loc.kind == "text":
                            present += 1
                            readable += 1
                        elif loc.kind == "page":
                            present += 1
                            page = fact_page.get((turn, key))
                            tier = dict(loc.pages).get(page) if page is not None else None
                            if tier and tier != "dropped" and key in ocr.get((name, page, tier), ""):
                                readable += 1
                    tiers: dict[str, int] = {}
                    for _, t in p.page_tiers:
                        tiers[t] = tiers.get(t, 0) + 1
                    row.update({"last_planned_turn": res["planned_at"] - 1,
                                "tokens_used": p.total_tokens, "budget_use": round(p.total_tokens / budget, 3),
                                "mean_budget_use": round(res["mean_budget_use"], 3), "refused_calls": res["refused"],
                                "text_tokens_represented": p.text_tokens_represented, "pages_by_tier": tiers})
                else:
                    kept = (truncation_kept(tokens, budget, overhead) if strategy == "truncation"
                            else trim_kept(turns, tokens, budget, overhead))
                    if kept is None:
                        continue
                    present = readable = sum(1 for turn, _ in facts if turn in kept)
                    used = sum(tokens[i] + overhead.per_turn for i in kept) + overhead.fixed
                    row.update({"tokens_used": used, "budget_use": round(used / budget, 3),
                                "text_tokens_represented": sum(tokens[i] for i in kept)})
                row.update({"present": round(present / max(len(facts), 1), 3),
                            "readable": round(readable / max(len(facts), 1), 3)})
                rows.append(row)
    accuracy = []
    for (name, page, tier), text in sorted(ocr.items()):
        page_text = next(p.text for p in next(x for x in prepared if x[0] == name)[3] if p.index == page)
        truth = _norm(page_text)
        turns_acc, header_share = turn_text_accuracy(text, page_text)
        accuracy.append({"conversation": name, "page": page, "tier": tier,
                         "accuracy": round(max(0.0, 1 - Levenshtein.distance(text, truth) / max(len(truth), 1)), 4),
                         "turn_text_accuracy": round(turns_acc, 4), "header_chars_share": round(header_share, 4)})
    per_tier = {}
    for tier in ladder.names:
        rows_t = [a for a in accuracy if a["tier"] == tier]
        if rows_t:
            vals = [a["accuracy"] for a in rows_t]
            turn_vals = [a["turn_text_accuracy"] for a in rows_t]
            per_tier[tier] = {"pages": len(vals), "mean": round(sum(vals) / len(vals), 4), "min": min(vals),
                              "turn_text_mean": round(sum(turn_vals) / len(turn_vals), 4),
                              "turn_text_min": min(turn_vals)}
    per_page = {}
    for x in prepared:
        toks = [p.text_tokens for p in x[3]]
        per_page[x[0]] = {"pages": len(toks), "mean": round(sum(toks) / max(len(toks), 1), 1),
                          "min": min(toks, default=0), "max": max(toks, default=0)}
    return {
        "table": rows,
        "ocr_accuracy_by_tier": per_tier,
        "ocr_pages": accuracy,
        "text_tokens_per_chat_page": per_page,
        "template_overhead": {"fixed": overhead.fixed, "per_page": overhead.per_page, "per_turn": overhead.per_turn},
        "engine": "tesseract 5 binary, psm 6, eng, OMP_THREAD_LIMIT=1; tier views derived as the backend derives them",
        "ocr_texts_from": "--ocr-texts (the same tesseract binary run on another machine)" if args.ocr_texts else "read here",
        "proxy": "tesseract is not DeepSeek-OCR: a fact counts as readable when tesseract reads its key word back exactly",
    }


def main(argv: list[str] | None = None) -> int:
    """`python optimem/bench/retention.py SRC DST [WORKERS]`: read exported views with tesseract, on a
    machine with more cores (only Pillow and the tesseract binary needed)."""
    import os
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        sys.stderr.write(main.__doc__ + "\n")
        return 2
    n = read_dir(args[0], args[1], int(args[2]) if len(args) == 3 else os.cpu_count() or 1,
                 os.environ.get("TESSERACT", "tesseract"))
    sys.stderr.write(f"read {n} views\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
