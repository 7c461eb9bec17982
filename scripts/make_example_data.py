"""Writes optimem/data/example_chat.jsonl and example_chat_facts.json, deterministically.

The bundled example is one long working session between an engineer and an assistant: a trip to
plan (with booking references that must stay exact), a database migration to debug (code, a
traceback, a Markdown table, a tool result as JSON), a few turns in Chinese, Japanese and Korean, and
late recap questions about facts from the start. Run: python scripts/make_example_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "optimem" / "data"
rng = random.Random(20261123)

CITIES = ["Lisbon", "Porto", "Seville", "Granada", "Valencia", "Barcelona", "Lyon", "Turin", "Bologna", "Ljubljana"]
TABLES = ["orders", "customers", "invoices", "shipments", "payments", "refunds", "inventory", "suppliers"]
ERRORS = [
    ("IntegrityError", "duplicate key value violates unique constraint \"{t}_pkey\""),
    ("OperationalError", "could not obtain lock on relation \"{t}\""),
    ("DataError", "value too long for type character varying(32) in column \"{t}.reference\""),
    ("ProgrammingError", "column \"{t}.legacy_id\" does not exist"),
]
PROSE = [
    "The main risk is that the batch job and the live writers touch the same rows, so we either pause writes or copy in two passes.",
    "I would keep the old table readable for a week after the cut-over; rollback is then a rename, not a restore.",
    "Measure first: the slow part may be the index rebuild rather than the copy itself, and that changes the plan.",
    "A dry run against last night's snapshot tells us the real duration and whether the constraints hold.",
    "Keep the migration idempotent so that a retry after a crash does not double-insert anything.",
    "The afternoon is free, so a walk along the river and an early dinner near the old town would fit well.",
    "Trains are usually faster than flights for distances under five hundred kilometres once you count the airport time.",
    "Museums on Mondays are often closed, so it is worth checking the opening days before fixing the order of the visits.",
    "If the weather turns, the covered market is a good plan B and it is close to the hotel.",
    "Booking the return leg now is cheaper, but keep the flexible fare in case the conference runs late.",
]
ZH = [
    "我们先在快照上做一次演练，确认迁移需要多长时间，再决定是否在周末执行。",
    "旅行的第二天可以去老城区走走，下午参观博物馆，晚上在河边吃饭。",
    "请把订单表的外键约束先禁用，等数据复制完成以后再重新启用并校验。",
]
JA = "移行は二段階で行い、最初のコピーの後に差分だけを同期するのが安全だと思います。"
KO = "주문 테이블은 마지막에 옮기고, 그 전에 인덱스를 다시 만드는 시간을 측정합시다."

FACTS = {
    "booking": "QX7-4431Z",
    "hotel_conf": "HTL-88213-LIS",
    "train": "AV 02146",
    "ticket": "MIG-2291",
    "snapshot": "snap-2026-11-21T03:00Z-7f3a9c",
    "budget_eur": "1,840",
}


def code_block(table: str) -> str:
    return (
        "```python\n"
        f"def copy_{table}(src, dst, batch=5000):\n"
        "    last_id = 0\n"
        "    while True:\n"
        f"        rows = src.fetch(\"SELECT * FROM {table} WHERE id > %s ORDER BY id LIMIT %s\", (last_id, batch))\n"
        "        if not rows:\n"
        "            break\n"
        f"        dst.insert_many(\"{table}\", rows)\n"
        "        last_id = rows[-1][\"id\"]\n"
        "    return last_id\n"
        "```"
    )


def traceback(table: str) -> str:
    err, msg = rng.choice(ERRORS)
    return (
        "Traceback (most recent call last):\n"
        '  File "migrate.py", line 88, in <module>\n'
        f"    copy_{table}(src, dst)\n"
        '  File "migrate.py", line 41, in copy_' + table + "\n"
        f'    dst.insert_many("{table}", rows)\n'
        f"psycopg.errors.{err}: {msg.format(t=table)}"
    )


def table_md(rows: int) -> str:
    lines = ["| table | rows | copy (min) | index (min) |", "|---|---|---|---|"]
    for t in TABLES[:rows]:
        lines.append(f"| {t} | {rng.randint(10_000, 9_000_000):,} | {rng.randint(2, 90)} | {rng.randint(1, 40)} |")
    return "\n".join(lines)


def prose(n: int) -> str:
    return " ".join(rng.choice(PROSE) for _ in range(n))


def main() -> None:
    turns: list[dict] = [{"role": "system", "content": "You are a careful assistant helping an engineer plan a trip and a database migration over one long session."}]
    facts: list[dict] = []

    def add(role: str, content: str) -> int:
        turns.append({"role": role, "content": content})
        return len(turns) - 1

    i = add("user", f"I'm going to Lisbon for a conference next month. My flight booking reference is {FACTS['booking']} and my budget for the whole trip is EUR {FACTS['budget_eur']}. Can you help me plan?")
    facts.append({"question": "What was the flight booking reference?", "answer": FACTS["booking"], "turn": i})
    facts.append({"question": "What was the budget for the whole trip, in euros?", "answer": FACTS["budget_eur"], "turn": i})
    add("assistant", "Of course. " + prose(4) + "\n\n1. Arrival day: check in, light walk.\n2. Conference days: keep evenings free.\n3. Last day: a day trip by train.")
    i = add("user", f"The hotel confirmation number is {FACTS['hotel_conf']}. For the day trip I booked train {FACTS['train']} to Porto.")
    facts.append({"question": "What was the hotel confirmation number?", "answer": FACTS["hotel_conf"], "turn": i})
    facts.append({"question": "Which train was booked for the day trip?", "answer": FACTS["train"], "turn": i})
    add("assistant", "Noted: " + prose(3))
    i = add("user", f"Separately, at work I have to migrate our order database this week. The ticket is {FACTS['ticket']} and the snapshot to test on is {FACTS['snapshot']}.")
    facts.append({"question": "What was the migration ticket number?", "answer": FACTS["ticket"], "turn": i})
    facts.append({"question": "Which snapshot should the migration be tested on?", "answer": FACTS["snapshot"], "turn": i})
    add("assistant", prose(5) + "\n\n" + table_md(5))

    step = 0
    while len(turns) < 214:
        step += 1
        table = TABLES[step % len(TABLES)]
        city = CITIES[step % len(CITIES)]
        kind = step % 12
        if kind == 0:
            add("user", f"Running the copy for `{table}` failed:\n\n{traceback(table)}\n\nWhat now?")
            add("assistant", prose(rng.randint(2, 5)) + "\n\nHere is a safer version:\n\n" + code_block(table))
        elif kind == 1:
            add("tool", json.dumps({"tool": "db.stats", "table": table, "rows": rng.randint(10_000, 9_000_000),
                                    "size_mb": rng.randint(10, 90_000), "last_vacuum": f"2026-11-{rng.randint(1, 22):02d}"}))
            add("assistant", f"The `{table}` table is larger than expected. " + prose(rng.randint(2, 6)))
        elif kind == 2:
            add("user", f"What could we do in {city} if we have one free afternoon?")
            add("assistant", "\n\n".join(prose(rng.randint(3, 8)) for _ in range(rng.randint(1, 4))))
        elif kind == 3:
            add("user", rng.choice(ZH))
            add("assistant", rng.choice(ZH) + " " + rng.choice(ZH))
        elif kind == 4:
            add("user", "Can you summarise the timings so far in a table?")
            add("assistant", table_md(rng.randint(3, 8)) + "\n\n" + prose(2))
        elif kind == 5 and step < 60:
            add("user", JA)
            add("assistant", "はい、その方が安全です。 " + prose(2))
        elif kind == 6 and step < 80:
            add("user", KO)
            add("assistant", "네, 좋습니다. " + prose(2))
        else:
            add("user", prose(rng.randint(1, 4)) + " What do you think?")
            paragraphs = [prose(rng.randint(3, 9)) for _ in range(rng.randint(1, 5))]
            add("assistant", "\n\n".join(paragraphs))

    add("user", "Before we wrap up: what was my flight booking reference again, and which snapshot did we test on?")
    add("assistant", f"Your flight booking reference is {FACTS['booking']} and the snapshot was {FACTS['snapshot']}.")
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "example_chat.jsonl", "w", encoding="utf-8") as f:
        for t in turns:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    (OUT / "example_chat_facts.json").write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
