"""`optimem ask QUESTION --session S [--model DIR] [--budget N] [-k K] [--store URL] [--json]`: answer a
question over an ingested document, citing pages. Without --model it shows the pages it would send, each
with its printed page label and the passage that matched best.

Read-only: the store and the session must exist (`optimem ingest` makes them)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from optimem.cli import common

# words that say nothing about where an answer is; kept out of the snippet scoring
_STOP = frozenset("""a an and are as at be by can do does for from has have how i in is it its me my of on or
that the their this to was what when where which who why will with you your""".split())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", help="the question, in quotes")
    p.add_argument("--session", required=True, help="the session the document was ingested into")
    p.add_argument("--store", default=None, help="store URL (default: the SQLite file in ~/.local/share/optimem)")
    p.add_argument("--model", default=None, help="DeepSeek-OCR checkpoint directory: also generate an answer")
    p.add_argument("--budget", type=common.int_at_least(1, "--budget"), default=4096,
                   help="context tokens for pages, question and answer")
    p.add_argument("--max-new-tokens", type=common.int_at_least(1, "--max-new-tokens"), default=256,
                   help="tokens reserved for the answer (part of the budget)")
    p.add_argument("-k", type=common.int_at_least(1, "-k"), default=8,
                   help="pages retrieved before the budget decides")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from optimem.docqa import DocumentMemory
    from optimem.progress import stderr_console

    store = common.open_existing_store(args.store)
    common.check_session_exists(store, args.session)
    console = stderr_console()
    backend = None
    if args.model:
        backend = common.load_backend(args.model, console)
    docs = DocumentMemory(args.session, store, backend=backend)
    if backend is None:
        ans = docs.ask(args.question, budget=args.budget, k=args.k, max_new_tokens=args.max_new_tokens)
    else:
        ans = common.with_model_progress(console, backend, lambda: docs.ask(
            args.question, budget=args.budget, k=args.k, max_new_tokens=args.max_new_tokens))
    meta = {p.index: p for p in store.get_pages(args.session, with_png=False)}
    cited = []
    for page, tier, score in ans.pages:
        sp = meta.get(page)
        number, label, source = page_label(sp.meta if sp else {}, page)
        cited.append({"page": page, "tier": tier, "score": round(score, 4), "source": source, "page_number": number,
                      "label": label, "snippet": best_snippet(sp.text if sp else "", args.question)})
    if args.json:
        doc = ans.to_json()
        doc["pages"] = cited
        json.dump(doc, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if not cited:
        print(f"no page matches the words of {args.question!r}" if not ans.note or "match" in ans.note else ans.note)
        return 0
    for c in cited:
        printed = f" (printed \"{c['label']}\")" if c["label"] and c["label"] != str(c["page_number"]) else ""
        print(f"{c['source'] + ' ' if c['source'] else ''}p. {c['page_number']}{printed}: {c['tier']}, "
              f"bm25 {c['score']:.3f}")
        if c["snippet"]:
            print(f"    {c['snippet']}")
    if ans.dropped:
        print(f"({len(ans.dropped)} more matching page(s) dropped to fit the budget)")
    print(ans.answer if ans.answer is not None else f"(no answer generated: {ans.note}; {ans.tokens} tokens planned; "
          "pass --model DIR to answer)")
    return 0


def page_label(meta: dict, index: int) -> tuple[int, str | None, str | None]:
    """(1-based page number in its document, the label printed on it if the PDF defines one, source file).
    Pages of text documents and PDFs without labels are numbered from 1."""
    number = int(meta.get("page", index)) + 1
    label = meta.get("label") or None
    return number, label, meta.get("source")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def best_snippet(text: str, question: str, width: int = 220) -> str:
    """The sentence of `text` that best matches the question, cut to about `width` characters around its
    first match; "" when nothing matches. A question word counts more the rarer it is on the page (so
    "bolts" beats "pump" on a pump's page); plurals match singulars."""
    terms = {_stem(w) for w in re.findall(r"\w+", question.lower()) if w not in _STOP and (len(w) > 1 or not w.isascii())}
    if not terms or not text:
        return ""
    page_words = [_stem(w) for w in re.findall(r"\w+", text.lower())]
    weight = {t: 1.0 / page_words.count(t) for t in terms if t in page_words}
    if not weight:
        return ""
    # paragraphs (blank lines), their wrapped lines joined, then sentences
    pieces = [sent for para in re.split(r"\n\s*\n", text)
              for sent in re.split(r"(?<=[.!?。！？])\s+", " ".join(para.split()))]
    best, best_score = "", 0.0
    for piece in pieces:
        found = {_stem(w) for w in re.findall(r"\w+", piece.lower())} & weight.keys()
        score = sum(weight[t] for t in found) * (0.9 if piece.startswith("#") else 1.0)  # a heading only names
        if score > best_score:
            best, best_score = piece, score
    if len(best) <= width:
        return best
    first = min((m.start() for t in weight for m in [re.search(rf"\b{re.escape(t)}", best, re.I)] if m), default=0)
    start = max(0, min(first - width // 3, len(best) - width))
    cut = best[start:start + width]
    return ("…" if start else "") + cut + ("…" if start + width < len(best) else "")
