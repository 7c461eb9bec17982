"""Writes optimem/data/manual.md and manual_questions.json, deterministically (stdlib only).

A fictional plant operations manual with unique, checkable facts in every section (torques, part
numbers, service intervals, engineers, dates) and questions about them, some phrased in other words
than the text, for the document-QA retrieval benchmark. Run: python scripts/make_manual.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "optimem" / "data"

SYSTEMS = ["cooling loop", "feed pump", "boiler", "condenser", "air compressor", "water treatment", "conveyor",
           "hydraulic press", "steam turbine", "chiller", "dust extractor", "fire pump"]
PEOPLE = ["Ana Ribeiro", "Tomas Lindqvist", "Mei Chen", "Kofi Mensah", "Lucia Ferrari", "Jonas Weber", "Priya Nair",
          "Omar Haddad", "Sofia Novak", "Daniel Okafor"]
FILLER = [
    "Before any work, isolate the unit, lock the breaker and verify zero energy with the test lamp.",
    "Record every reading in the shift log with the time and the operator's initials.",
    "Use only the lubricants listed in the consumables annex; mixing grades shortens bearing life.",
    "If a reading is outside the band, stop, inform the shift lead and do not restart without approval.",
    "Clean the area after the job and return the tools to the shadow board.",
    "Spare parts are drawn from the central store against a work order number.",
]


def manual() -> tuple[str, list[dict]]:
    """A fictional plant operations manual with unique, checkable facts in every section, and
    questions about them phrased partly in other words than the text."""
    r = random.Random(7)
    parts, questions = ["# Riverside Plant Operations Manual\n"], []
    for chap, system in enumerate(SYSTEMS, start=1):
        parts.append(f"\n# Chapter {chap}: {system.title()}\n")
        for sec in range(1, 13):
            tag = f"{system[:3].upper()}-{chap}{sec:02d}"
            torque = r.randint(20, 400)
            interval = r.choice([250, 500, 750, 1000, 1500, 2000])
            owner = r.choice(PEOPLE)
            part = f"{r.choice('ABCDEFGH')}{r.randint(1000, 9999)}-{r.randint(10, 99)}"
            date = f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
            heading = f"## {chap}.{sec} {system.title()} unit {tag}"
            body = (
                f"Unit {tag} belongs to the {system}. Its mounting bolts are tightened to {torque} Nm. "
                f"The gasket kit is part number {part}. Service the unit every {interval} operating hours. "
                f"The responsible engineer is {owner}; the last overhaul was on {date}. "
                + " ".join(r.choice(FILLER) for _ in range(18))
            )
            parts.append(f"{heading}\n\n{body}\n")
            kind = r.randrange(4)
            if kind == 0:
                q = (f"How tight should the mounting bolts of unit {tag} be?", f"{torque} Nm", f"tightened to {torque} Nm")
            elif kind == 1:
                q = (f"Which gasket kit does {tag} in the {system} use?", part, f"part number {part}")
            elif kind == 2:
                q = (f"After how many running hours is unit {tag} serviced?", f"{interval}", f"every {interval} operating hours")
            else:
                q = (f"Who is the engineer in charge of {tag}?", owner, f"responsible engineer is {owner}")
            if len(questions) < 144 and r.random() < 0.45:
                questions.append({"question": q[0], "answer": q[1], "section": heading[3:], "needle": q[2]})
    return "".join(parts), questions


def write_manual() -> None:
    text, questions = manual()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "manual.md").write_text(text, encoding="utf-8")
    (OUT / "manual_questions.json").write_text(json.dumps(questions, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_manual()
