"""Writes the bundled example data under optimem/data/, deterministically (stdlib only, fixed seed).

- `example_chat.jsonl`: one long working session between an engineer and an assistant (~220 turns,
  ~60-90k DeepSeek-OCR text tokens): a conference trip to Lisbon (booking references that must stay
  exact), a PostgreSQL orders migration (SQL, Python code, tracebacks, logs, Markdown tables, tool results
  as JSON), a few turns in Simplified Chinese and one each in Japanese and Korean, and late recap
  questions about facts from the first turns. Line 0 is the system message.
- `example_chat_facts.json`: the early facts, `{"question", "answer", "turn"}` where `turn` is the
  0-based line index in example_chat.jsonl (0 = system message) and `answer` is a substring of it.

Run: python scripts/make_example_data.py [--out DIR]   (files are rewritten byte-identically)

The bundled manual (manual.md, manual_questions.json) comes from scripts/make_manual.py.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "optimem" / "data"
SEED = 20261123

# ---------------------------------------------------------------------------------------------------
# The conversation
# ---------------------------------------------------------------------------------------------------

FACTS = {
    "booking": "QX7-4431Z",
    "flight": "TP 1351",
    "budget_eur": "1,840",
    "hotel_conf": "HTL-88213-LIS",
    "hotel": "Casa Alfama Riverside",
    "train": "AV 02146",
    "ticket": "MIG-2291",
    "snapshot": "snap-2026-11-21T03:00Z-7f3a9c",
    "oncall": "Priya Raman",
    "pager": "x4417",
    "window": "Saturday 02:00-05:00 UTC",
    "talk_room": "Room B2",
    "talk_time": "Thursday 10 December at 14:30",
    "adapter_order": "112-4409871-2290331",
    "orders_rows": "48,213,902",
    "last_good": "9f1c2ab",
}

TABLES = ["orders", "order_items", "customers", "invoices", "shipments", "payments", "refunds", "inventory",
          "suppliers", "addresses", "coupons", "audit_log"]

TRIP_PROSE = [
    "Lisbon is hilly and the pavements are polished limestone, so comfortable shoes with some grip matter more than anything else you pack.",
    "Tram 28 is charming but packed from mid-morning; if you want to ride it, board at Martim Moniz before nine.",
    "The Alfama streets are a maze, which is half the fun; offline maps help because the signal drops between the old walls.",
    "Dinner in Lisbon starts late, around eight or half past, so a pastry and a coffee in the late afternoon bridges the gap.",
    "A Viva Viagem card loaded with zapping credit covers the metro, trams, buses and the Cascais and Sintra trains.",
    "Belém is best early: the monastery queue grows quickly after ten, and the custard tarts are warm first thing.",
    "The viewpoints face west, so the light is best in the hour before sunset; Senhora do Monte is the least crowded.",
    "December is mild, usually between 10 and 16 degrees, but showers come in fast from the Atlantic, so carry a light rain jacket.",
    "The conference venue is by the river in Parque das Nações, about twenty-five minutes from Alfama on the red and green metro lines.",
    "If you land before noon you can drop the bag at the hotel and still have the afternoon for a slow first walk.",
    "Porto is three hours by train, so a day trip works if you take the first departure and come back on the evening one.",
    "Sintra gets crowded at weekends; on a weekday, the Pena Palace gardens are quiet before eleven.",
    "Tipping is modest in Portugal: rounding up or leaving five to ten percent for good table service is plenty.",
    "Most museums are closed on Mondays, so put the walking and the viewpoints on that day and the museums on Tuesday.",
    "The Time Out Market is convenient for a quick lunch between sessions, though the hall gets loud around one.",
    "A taxi or ride-hailing car from the airport to Alfama costs roughly 15 to 20 euros outside rush hour.",
    "Keep some coins for the funiculars and the small cafés; a few places still prefer cash for anything under five euros.",
    "The LX Factory area has good bookshops and is a pleasant evening if you want somewhere less touristic.",
    "Fado houses in Alfama usually have a minimum spend; booking a table for the second set avoids the tour groups.",
    "Cascais is forty minutes on the coastal train and makes a calm half day if you need a break from the city.",
    "Pharmacies are marked with a green cross and the staff are used to helping with basics in English.",
    "Sunday mornings are quiet, which makes them the best time for photographs of the old town without crowds.",
]

MIG_PROSE = [
    "The main risk is that the batch copy and the live writers touch the same rows, so we either pause writes or copy in two passes.",
    "I would keep the old table readable for a week after the cut-over; rollback is then a rename, not a restore.",
    "Measure first: the slow part may be the index rebuild rather than the copy itself, and that changes the plan.",
    "A dry run against the snapshot tells us the real duration and whether the constraints hold on real data.",
    "Keep every step idempotent so that a retry after a crash does not double-insert anything.",
    "Building the indexes after the bulk load is usually two to four times faster than maintaining them during it.",
    "Logical replication would let us copy while the shop stays open, but it needs primary keys on every table, and audit_log has none.",
    "The sequences must be bumped past the highest copied id before writers switch, otherwise the first new order collides.",
    "Foreign keys can be created as NOT VALID and validated afterwards, which takes a weaker lock and keeps the shop responsive.",
    "I would copy the small reference tables first; they finish in seconds and let us test the whole path end to end.",
    "Checksums per id range are cheap and catch silent truncation, which a row count alone would miss.",
    "The connection pooler should be drained, not killed, so that in-flight checkouts finish cleanly.",
    "Write the runbook so that someone who was not in this conversation could execute it at three in the morning.",
    "We should agree on a go/no-go time: if the copy has not finished by then, we roll back rather than improvise.",
    "COPY with binary format avoids most of the text parsing cost and keeps numeric precision exact.",
    "Vacuum and analyse on the new cluster before traffic arrives, or the planner starts with no statistics at all.",
    "Autovacuum on the target can be relaxed during the load and restored right after, which saves a lot of I/O.",
    "The replica lag alarm will fire during the bulk load; silence it for the window rather than ignoring it for good.",
    "A feature flag for the read path lets us point the reporting service at the new cluster before the shop itself.",
    "Timestamps are the usual trap: the old schema stores them without time zone, the new one with, and the conversion has to assume UTC explicitly.",
    "Large text columns such as the gift messages are toasted, so their copy cost is not visible in the row counts.",
    "If a batch fails, log the id range and move on; a second pass can retry the failed ranges once the rest is done.",
    "The money columns are numeric(12,2) on both sides, so there is no float rounding to worry about in the copy itself.",
    "I would not run the migration from a laptop; a small VM next to the database avoids the network round trips and a closed lid.",
    "Stats from pg_stat_statements on the old cluster show which queries the new indexes must serve on day one.",
    "Deferring the unique constraint until the end lets the batches arrive in any order, which makes parallel copy possible.",
]

DEBUG_PROSE = [
    "The traceback points at the last frame, but the real cause is one level up, where the value is built.",
    "This fails only on some batches because only some rows have the field missing; the first ten thousand happen to be clean.",
    "Adding a test with the exact row that failed will keep this from coming back when someone refactors the loop.",
    "I would log the id range with every exception so that the failed batch can be replayed on its own.",
    "The fix is small, but it changes behaviour for rows that were silently skipped before, so check the counts after the rerun.",
    "Catching the broad Exception here hid the first error and surfaced a confusing second one later.",
    "The driver returns Decimal for numeric columns; mixing it with float arithmetic is where the cents drift.",
    "Server-side cursors keep memory flat; the default client-side cursor loads the whole result set first.",
    "Run it once with a batch size of one hundred against the snapshot to confirm the fix before the full run.",
    "Python's own datetime refuses to compare naive and aware values, which is a good thing: it caught a real bug.",
]

CHATTER = [
    "ok, running it now",
    "Thanks, that worked.",
    "Give me a minute, the VPN dropped.",
    "Done. 4 min 12 s for that batch.",
    "Makes sense.",
    "Good, moving on.",
    "Coffee break, back in ten.",
    "Right, I'll note that in the runbook.",
    "Hm, let me check the logs first.",
    "Perfect, exactly what I needed.",
    "That's faster than I expected.",
    "Let's park that until after the window.",
]

ACKS = [
    "Great. Ping me with the numbers when it finishes and we will decide the next step.",
    "Good. I will keep the running notes up to date so the runbook reflects what we actually did.",
    "Take your time. When you are back, the next item is the sequence check.",
    "Noted. That also confirms the batch size is fine for the larger tables.",
    "Sounds good. If anything looks off in the logs, paste the last fifty lines here.",
    "Perfect. One thing less to worry about on Saturday.",
]

ZH = [
    ("陈伟刚刚在群里问迁移的进度，我们能不能先给上海团队一个简短的中文说明？",
     "可以。简要说明如下：目前我们已经在快照上完成了两次演练，订单表的复制大约需要两小时，索引重建另外需要四十分钟。"
     "正式迁移安排在周六凌晨的维护窗口，期间商城会暂停下单。如果复制在截止时间前没有完成，我们会直接回滚，旧库保持可读一周。"
     "上海团队需要做的是：周五晚上之前确认报表任务已经暂停，并在周六上午检查一下对账结果。"),
    ("上海那边的报表服务每天凌晨三点会跑一个大查询，会不会和迁移冲突？",
     "会有冲突。那个查询会长时间持有订单表的共享锁，而我们在最后一步需要短暂的排他锁。"
     "建议请陈伟把周六的报表任务推迟到上午九点以后，或者临时改成读取只读副本。这样迁移窗口内就不会有长事务。"),
    ("请帮我把回滚步骤用中文写成三条，发给值班的同事。",
     "1. 停止新库的写入，把连接池切回旧库的地址。\n2. 把旧表从 orders_old 重命名回 orders，并确认序列的当前值没有被改动。\n"
     "3. 通知上海团队恢复报表任务，并在工单里记录回滚的时间和原因。"),
    ("数据校验的结果怎么用中文总结比较好？",
     "可以这样写：我们按主键区间对十二张表逐段计算了校验和，所有区间都一致；行数与源库完全相同；"
     "金额字段抽查了五千条，没有发现精度差异。唯一的例外是审计日志表，因为它没有主键，我们改用按时间分段的方式核对。"),
    ("陈伟说他们那边的时区是东八区，迁移窗口换算过去是几点？",
     "维护窗口是协调世界时周六两点到五点，换算成北京时间是周六上午十点到下午一点。"
     "也就是说上海团队在窗口期间是工作时间，如果有问题可以直接在群里联系他们。"),
    ("顺便问一下，里斯本有什么适合带回去给同事的小礼物？",
     "里斯本比较受欢迎的是沙丁鱼罐头，包装很漂亮，而且不怕压；另外还有蛋挞造型的小饰品、软木制品和手绘瓷砖。"
     "如果想要吃的，机场也能买到波特酒和杏仁糖，但价格会比城里贵一些。"),
]

JA = ("ベンダーの田中さんから連絡がありました。新しいストレージの性能試験の結果について、日本語で返信したいです。要点は「ランダム書き込みは想定どおり、シーケンシャル読み込みは少し遅い」です。",
      "田中様\n\nお世話になっております。性能試験の結果をお送りいただき、ありがとうございました。"
      "ランダム書き込みについては想定どおりの数値が出ており、問題ないと考えております。"
      "一方で、シーケンシャル読み込みが仕様値より約一割低いため、設定またはファームウェアの版数をご確認いただけますでしょうか。"
      "土曜日の移行作業の前に原因がわかれば大変助かります。\n\nどうぞよろしくお願いいたします。")

KO = ("서울 사무실의 박지우 씨가 한국어로 물어봤어요: \"토요일 작업 중에 결제 서비스는 멈추나요?\" 어떻게 답하면 좋을까요?",
      "이렇게 답하시면 됩니다:\n\n지우 씨, 토요일 작업 시간(UTC 02:00-05:00, 한국 시간 11:00-14:00) 동안 신규 주문은 잠시 멈추지만 "
      "결제 서비스 자체는 계속 동작합니다. 이미 진행 중인 환불과 정산은 영향을 받지 않고, 작업이 끝나면 바로 알려드리겠습니다.")

CITY_PLACES = {
    "Lisbon": ["the Alfama", "Sao Jorge Castle", "the Jeronimos Monastery", "Belem Tower", "LX Factory",
               "the Gulbenkian Museum", "Miradouro da Senhora do Monte", "the Time Out Market", "the Tile Museum"],
    "Porto": ["the Ribeira waterfront", "Livraria Lello", "the Dom Luis I bridge", "the Serralves gardens",
              "the Bolhao market", "the port cellars in Gaia"],
    "Sintra": ["Pena Palace", "Quinta da Regaleira", "the Moorish Castle", "Monserrate"],
    "Cascais": ["the Boca do Inferno cliffs", "the marina", "the Paula Rego museum", "the beach promenade to Estoril"],
}

EXPLAIN = [
    ("Remind me why vacuum matters so much right after a bulk load?",
     "PostgreSQL never overwrites a row in place. An update writes a new version and marks the old one dead; a delete "
     "only marks. Vacuum is what reclaims the dead versions and, just as important after a load, what sets the visibility "
     "map bits that let index-only scans skip the heap.\n\nAfter a bulk COPY every row is brand new, so three things are "
     "missing at once: planner statistics (no ANALYZE has run, so the planner guesses row counts from the table size), "
     "visibility map bits (so index-only scans fall back to heap fetches), and frozen transaction ids (so the first "
     "anti-wraparound vacuum, weeks later, rewrites the whole table at a bad moment).\n\nThat is why the runbook ends "
     "with `VACUUM (FREEZE, ANALYZE)` on the large tables before traffic arrives. On `orders` it took 11 minutes in the "
     "second dry run, which the window can afford; skipping it would cost far more on Monday morning."),
    ("What's the actual difference between logical replication and what we're doing?",
     "We are doing an offline copy: writes stop, we copy a consistent state, verify it, and switch. It is simple, easy "
     "to verify and needs a window.\n\nLogical replication decodes the write-ahead log of the old cluster into row "
     "changes and applies them to the new one while the shop keeps running. The initial copy happens in the "
     "background, then the subscriber catches up and stays in sync until you switch. The downtime is the switch itself, "
     "seconds rather than hours.\n\nThe price: every replicated table needs a primary key or a replica identity, DDL is "
     "not replicated, sequences are not replicated (you set them by hand at the switch), and large objects are not "
     "supported. `audit_log` has no primary key and we would have to add one, which is itself a table rewrite. For a "
     "three-hour window on a Saturday night the offline copy is the less risky choice; for the next migration, with "
     "the keys fixed, logical replication is worth it."),
    ("Why NOT VALID on the foreign keys? Doesn't that leave bad data in?",
     "No, it splits the work in two. `ADD CONSTRAINT ... NOT VALID` is instant: it takes a brief lock, and from that "
     "moment every new or updated row is checked. The existing rows are not checked yet.\n\n`VALIDATE CONSTRAINT` then "
     "scans the existing rows, but it only takes a SHARE UPDATE EXCLUSIVE lock, which does not block reads or writes. "
     "If a row violates the constraint, validation fails and tells you which key, and the constraint simply stays NOT "
     "VALID until you fix the data. Nothing bad gets in either way; you just do not block the shop while checking.\n\n"
     "Adding the constraint in one step would take the stronger lock for the whole scan, about nine minutes on "
     "`order_items` in the dry run."),
    ("Explain the sequence thing once more, I want to write it down properly.",
     "Each `serial`/`identity` column draws its values from a sequence, which is a separate object from the table. COPY "
     "writes the id values explicitly, so it never touches the sequence: after the copy, the table holds ids up to, say, "
     "48 million, but the sequence still says 1.\n\nThe first insert from the shop would then ask the sequence for the "
     "next value, get 2, and collide with an existing row. So, after each table's copy and before writers switch:\n\n"
     "```sql\nSELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT max(id) FROM orders));\n```\n\n"
     "I add a margin of a thousand in the runbook, so that if any stray write lands on the old cluster during the switch, "
     "its id does not collide when we replay it. Gaps in ids are harmless; collisions are not."),
    ("How do I explain the rollback plan to my manager in three sentences?",
     "\"If anything goes wrong before 04:00 UTC we switch the shop back to the old database, which we never modify "
     "during the migration, so rollback is a configuration change that takes about five minutes. After 04:00 we "
     "commit to the new cluster and fix forward, with the old one kept read-only for a week as a reference. "
     "Either way no order data can be lost, because writes are paused during the copy and verified before we switch.\""),
    ("What's TOAST and why does it make the gift_message column slow?",
     "TOAST is how PostgreSQL stores values too large for a normal 8 kB page: values over about 2 kB are compressed and, "
     "if still large, moved out of line into a side table, with only a pointer left in the row.\n\nFor the copy this "
     "means two things. The row count of `orders` says nothing about the bytes: a tenth of the rows carry long gift "
     "messages or serialized carts that live in the TOAST table, and reading them is an extra index lookup per value. "
     "And the new cluster recompresses them; PostgreSQL 16 can use lz4 instead of pglz, which we enabled, and which is "
     "why the target is 18 percent smaller than the source.\n\nNone of it is a correctness problem; it is only why "
     "`orders` copies at half the rows per second of `order_items`."),
]

ITINERARY_DAYS = [
    ("Mon 7 Dec", "Arrival", ["land 10:40, taxi to the hotel", "lunch at a tasca near the hotel", "walk up to Sao Jorge Castle",
                               "sunset at Miradouro de Santa Luzia", "early dinner, early night"]),
    ("Tue 8 Dec", "Conference day 1", ["metro to Oriente by 08:30", "keynote 09:00", "sessions until 17:30",
                                       "speaker reception 19:00"]),
    ("Wed 9 Dec", "Conference day 2", ["sessions from 09:30", "lunch with the storage vendor", "walk along the river",
                                       "dinner in Principe Real"]),
    ("Thu 10 Dec", "Talk day", ["slides run-through 08:00", "light early lunch", f"talk {FACTS['talk_room']} 14:30",
                                "conference dinner 20:00"]),
    ("Fri 11 Dec", "Porto and home", [f"train {FACTS['train']} 07:09 from Santa Apolonia", "Ribeira and the bridge",
                                      "port cellar visit", "return train 17:50", "evening flight home"]),
]

TABLE_COLS = {"orders": ["customer_id", "created_at", "status", "total_cents"], "order_items": ["order_id", "sku", "quantity"],
              "customers": ["email", "phone", "created_at"], "invoices": ["order_id", "issued_at", "number"],
              "shipments": ["order_id", "carrier", "tracking_code"], "payments": ["order_id", "provider_ref", "captured_at"],
              "refunds": ["payment_id", "reason", "amount_cents"], "inventory": ["sku", "warehouse_id", "updated_at"],
              "suppliers": ["vat_number", "country"], "addresses": ["customer_id", "postcode"],
              "coupons": ["code", "expires_at"], "audit_log": ["logged_at", "actor", "action"]}

FINDINGS = [
    "`{t}` copied at {rate:,} rows/s, {pct}% {cmp} than `{t2}`, which has narrower rows",
    "{dead}% of the pages of `{t}` were dead tuples before the copy, so the source is bigger on disk than the data it holds",
    "the largest index on `{t}` is `{t}_{col}_idx` at {gb} GB, and building it took {mins} minutes on its own",
    "{n:,} rows of `{t}` have a NULL `{col}`, all of them created before {year}",
    "range {lo:,}-{hi:,} of `{t}` differed on the first checksum pass and matched on the retry, so it was a read during a write, not corruption",
    "the average row of `{t}` is {b} bytes, and {toast}% of the rows keep a value in the TOAST table",
    "`{t}.{col}` has {n:,} distinct values, so the planner will prefer the index for equality lookups but not for ranges",
    "the sequence of `{t}` stood at {n:,} after the copy, {gap:,} below `max(id)`, exactly the case the setval step exists for",
    "`{t}` has {fk} foreign keys; validating them after the load took {mins} minutes in total",
    "autovacuum last touched `{t}` {days} days ago, which explains the bloat",
    "the new cluster stores `{t}` in {gb} GB instead of {gb2} GB thanks to lz4 compression and no bloat",
    "{n:,} rows of `{t}` failed the stricter `{col}` check on the new schema and went to the quarantine table",
]

RECS = [
    "I would copy `{t}` in ranges of {step:,} ids instead of 250,000, which keeps each transaction under a minute",
    "build `{t}_{col}_idx` with `maintenance_work_mem = '{mem}GB'` for the session; the default sorts on disk",
    "add the `{t}` quarantine count to the go/no-go checklist so that someone decides on it consciously",
    "move `{t}` earlier in the order, so that a failure there shows up while there is still time in the window",
    "run the `{t}` copy with two workers split by id parity; the disk has headroom for it",
    "ask the owners of `{t}` whether the rows before {year} are still needed at all; archiving them would halve the copy",
    "keep the `{t}` checksums in the ticket so that the numbers from Saturday can be compared with the dry runs",
    "set `{t}` to `UNLOGGED` during the load and back to `LOGGED` afterwards only if we also accept a full re-copy on crash, which I would not",
]

RESTAURANTS = ["Tasca do Ze Manel", "O Cantinho da Graca", "Casa Lusitana", "A Marisqueira do Rio", "Taberna Rosa",
               "O Pateo Azul", "Adega Sao Vicente", "Cafe Estrela", "Zeca's Bifanas", "Casa Ribeira"]
DISHES = [("bacalhau a bras", 15), ("arroz de marisco for two", 42), ("polvo a lagareiro", 22), ("caldo verde", 5),
          ("a bifana and a beer", 6), ("ameijoas a Bulhao Pato", 16), ("grilled sardines", 13), ("a prego in bread", 7),
          ("cataplana de peixe for two", 48), ("a francesinha", 14), ("pastel de nata and a bica", 3),
          ("grilled sea bass", 19)]
AREAS = ["Alfama", "Graca", "Mouraria", "Baixa", "Chiado", "Principe Real", "Cais do Sodre", "Campo de Ourique"]

TEAM = [FACTS["oncall"], "Chen Wei", "Tom Becker", "Aisha Mensah", "Lars Eriksen", "Julia Costa", "Omar Siddiqui"]
THREAD_LINES = [
    "the reporting job on `{t}` is paused from Friday 22:00, I'll un-pause it Saturday after the all-clear",
    "can we get the row counts for `{t}` before and after in the ticket? finance will ask on Monday",
    "FYI the new cluster had a failover test at {hh}:{mm} yesterday, all fine, {s}s of unavailability",
    "I still see the old connection string in the `{t}` export cron, fixing it now",
    "who owns the `{t}` quarantine table after the migration? we shouldn't keep it forever",
    "storage says the new volume is at {pct}% after the second dry run",
    "do we need the maintenance banner in all locales or only EN/DE/PT?",
    "reminder: no deploys after Friday 18:00, the freeze is in the calendar",
    "the checksum job for `{t}` took {m} minutes on my machine, is that expected?",
    "I can take the bridge call from 01:30, will be on until it's done",
    "`{t}` has a trigger that writes to audit_log, are we disabling triggers during COPY?",
    "customer support wants a one-line explanation for the checkout pause, can someone write it?",
    "pgbouncer config for the new cluster is in review, PR #{pr}",
    "I tested the rollback on staging: {m} minutes end to end, banner included",
    "the vendor confirmed the firmware update for the new storage is not needed before Saturday",
    "monitoring dashboards for the new cluster are ready, link in the channel topic",
    "do we keep `{t}` partitioned by month on the new side or is that a later project?",
    "the test order script works against staging, it cleans up after itself",
    "ok from my side for the go/no-go at 04:00, I'll be awake anyway",
    "heads up, the Seoul office has a promotion starting Monday, traffic will be 2x",
]


def pick(rng: random.Random, bank: list[str], n: int) -> str:
    # sample without replacement so no paragraph repeats a sentence
    return " ".join(rng.sample(bank, min(n, len(bank))))


def paragraphs(rng: random.Random, bank: list[str], count: int, lo: int = 3, hi: int = 6) -> str:
    return "\n\n".join(pick(rng, bank, rng.randint(lo, hi)) for _ in range(count))


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def timing_table(rng: random.Random, tables: list[str]) -> str:
    rows = []
    for t in tables:
        n = rng.randint(20_000, 9_000_000)
        rows.append([f"`{t}`", f"{n:,}", f"{rng.randint(1, 95)} min", f"{rng.randint(1, 40)} min",
                     rng.choice(["ok", "ok", "ok", "retry 1 range", "checksum ok", "slow disk"])])
    return md_table(["table", "rows", "copy", "indexes", "status"], rows)


def sha(rng: random.Random, n: int = 64) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def finding(rng: random.Random, t: str, fi: int, ri: int) -> str:
    """One observation about a table with its own numbers, plus what to do about it: the numbers differ
    every time, so the long middle of the conversation does not repeat itself."""
    t2 = rng.choice([x for x in TABLE_COLS if x != t])
    gb = round(rng.uniform(0.2, 40), 1)
    vals = dict(t=t, t2=t2, col=rng.choice(TABLE_COLS[t]), rate=rng.randint(9_000, 120_000), pct=rng.randint(5, 70),
                cmp=rng.choice(["slower", "faster"]), dead=rng.randint(2, 35), gb=gb, gb2=round(gb * rng.uniform(1.1, 1.6), 1),
                mins=rng.randint(2, 48), n=rng.randint(120, 4_000_000), year=rng.randint(2014, 2021),
                lo=rng.randint(1, 40) * 250_000 + 1, b=rng.randint(60, 900), toast=rng.randint(1, 30),
                gap=rng.randint(1_000, 900_000), fk=rng.randint(1, 4), days=rng.randint(3, 60),
                step=rng.choice([50_000, 100_000, 125_000]), mem=rng.choice([2, 4, 8]))
    vals["hi"] = vals["lo"] + 249_999
    f = FINDINGS[fi].format(**vals)
    r = RECS[ri].format(**vals)
    return f[0].upper() + f[1:] + "; " + r + "."


def analysis(rng: random.Random, tables: list[str], extra: int = 1) -> str:
    paras = []
    for t in tables:
        k = rng.randint(3, 5)
        # distinct observations and distinct advice within one paragraph
        pairs = zip(rng.sample(range(len(FINDINGS)), k), rng.sample(range(len(RECS)), k))
        paras.append(" ".join(finding(rng, t, fi, ri) for fi, ri in pairs) + " " + pick(rng, MIG_PROSE, extra))
    return "\n\n".join(p.strip() for p in paras)


def dining(rng: random.Random) -> str:
    out = []
    for r in rng.sample(RESTAURANTS, rng.randint(2, 3)):
        dish, price = rng.choice(DISHES)
        out.append(f"{r} in {rng.choice(AREAS)} does {dish} for about EUR {price}; "
                   + rng.choice(["book ahead for Friday", "no reservations, go before eight", "cash is easier there",
                                 "ask for a table upstairs", "lunch is better value than dinner", "the house wine is good"]) + ".")
    return " ".join(out)


def explain_plan(rng: random.Random, t: str) -> str:
    col = rng.choice(TABLE_COLS[t])
    rows = rng.randint(100, 90_000)
    loops = rng.randint(1, 3)
    ms = round(rng.uniform(0.5, 4_000), 3)
    return (f"Limit  (cost=0.57..{rng.randint(100, 9000)}.{rng.randint(10, 99)} rows=50 width={rng.randint(60, 400)}) "
            f"(actual time=0.041..{ms} rows=50 loops=1)\n"
            f"  ->  Nested Loop  (cost=0.57..{rng.randint(10000, 900000)}.{rng.randint(10, 99)} rows={rows} width=212) "
            f"(actual time=0.040..{ms - 0.2:.3f} rows=50 loops=1)\n"
            f"        ->  Index Scan Backward using {t}_{col}_idx on {t} o  (cost=0.43..{rng.randint(1000, 90000)}.12 "
            f"rows={rows} width=96) (actual time=0.021..{ms / 3:.3f} rows={rng.randint(50, 5000)} loops=1)\n"
            f"              Filter: (status = ANY ('{{paid,shipped}}'::text[]))\n"
            f"              Rows Removed by Filter: {rng.randint(0, 80_000):,}\n"
            f"        ->  Index Scan using customers_pkey on customers c  (cost=0.43..8.45 rows=1 width=116) "
            f"(actual time=0.004..0.004 rows=1 loops={loops * 50})\n"
            f"              Index Cond: (id = o.customer_id)\n"
            f"Planning Time: {rng.uniform(0.1, 3):.3f} ms\nExecution Time: {ms + 0.1:.3f} ms")


def log_block(rng: random.Random, table: str, lines: int) -> str:
    hour = rng.randint(2, 3)
    minute = rng.randint(0, 20)
    day = rng.randint(23, 26)
    out = []
    lo = 1
    for _ in range(lines):
        minute += rng.randint(1, 4)
        hi = lo + 250_000 - 1
        secs = round(rng.uniform(18, 95), 1)
        level = "INFO"
        msg = f"{table} {lo}-{hi} copied {rng.randint(240_000, 250_000)} rows in {secs}s ({int(250_000 / secs):,} rows/s)"
        r = rng.random()
        if r < 0.06:
            level, msg = "WARNING", f"{table} {lo}-{hi} slow: checkpoint in progress, {secs}s"
        elif r < 0.09:
            level, msg = "ERROR", f"{table} {lo}-{hi} failed: could not receive data from server: Connection timed out"
        out.append(f"2026-11-{day} {hour + minute // 60:02d}:{minute % 60:02d}:{rng.randint(0, 59):02d},"
                   f"{rng.randint(0, 999):03d} {level} {msg}")
        lo = hi + 1
    return "\n".join(out)


def slack_thread(rng: random.Random) -> str:
    hh, mm = rng.randint(8, 17), rng.randint(0, 59)
    out = []
    for line in rng.sample(THREAD_LINES, rng.randint(5, 10)):
        mm += rng.randint(1, 9)
        hh, mm = hh + mm // 60, mm % 60
        text = line.format(t=rng.choice(TABLES), hh=rng.randint(0, 23), mm=f"{rng.randint(0, 59):02d}", s=rng.randint(3, 40),
                           pct=rng.randint(30, 70), m=rng.randint(4, 55), pr=rng.randint(1800, 2400))
        out.append(f"[{hh:02d}:{mm:02d}] {rng.choice(TEAM)}: {text}")
    return "\n".join(out)


DEBUG_CASES = [
    # (user intro, code, traceback tail, explanation, fixed code)
    ("The copy script died on `{t}` after a few hundred batches:",
     "def copy_{t}(src, dst, batch=5000):\n    last_id = 0\n    while True:\n        rows = src.fetch(\n"
     "            \"SELECT * FROM {t} WHERE id > %s ORDER BY id LIMIT %s\", (last_id, batch))\n"
     "        if not rows:\n            break\n        dst.insert_many(\"{t}\", rows)\n        last_id = rows[-1][\"id\"]\n",
     "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint \"{t}_pkey\"\n"
     "DETAIL:  Key (id)=({n}) already exists.",
     "The batch that failed had already been inserted by the previous attempt: the script was restarted after the VPN dropped, "
     "but `last_id` starts from zero every time. Make the copy resumable by reading the highest id already in the target, "
     "and make the insert tolerate a replay.",
     "def copy_{t}(src, dst, batch=5000):\n    last_id = dst.scalar(\"SELECT coalesce(max(id), 0) FROM {t}\")\n"
     "    while True:\n        rows = src.fetch(\n            \"SELECT * FROM {t} WHERE id > %s ORDER BY id LIMIT %s\", (last_id, batch))\n"
     "        if not rows:\n            return last_id\n"
     "        dst.insert_many(\"{t}\", rows, on_conflict=\"(id) DO NOTHING\")\n        last_id = rows[-1][\"id\"]\n"
     "        log.info(\"copied {t} up to id %s\", last_id)\n"),
    ("The timestamp conversion blew up while copying `{t}`:",
     "def to_target(row):\n    created = row[\"created_at\"]\n    if created < CUTOVER:\n        row[\"archived\"] = True\n    return row\n",
     "TypeError: can't compare offset-naive and offset-aware datetimes",
     "The old schema stores `created_at` as `timestamp without time zone`, so the driver gives you naive datetimes, while "
     "`CUTOVER` is built with `tzinfo=timezone.utc`. Python refuses to guess. The old database has always written UTC, "
     "so attach UTC explicitly at the boundary, in one place, rather than stripping the zone from `CUTOVER`.",
     "from datetime import timezone\n\ndef to_target(row):\n    created = row[\"created_at\"]\n"
     "    if created.tzinfo is None:\n        # the legacy cluster always wrote UTC without saying so\n"
     "        created = created.replace(tzinfo=timezone.utc)\n    row[\"created_at\"] = created\n"
     "    row[\"archived\"] = created < CUTOVER\n    return row\n"),
    ("Reading the supplier CSV export for `{t}` fails:",
     "import csv\n\nwith open(\"exports/{t}.csv\") as f:\n    for rec in csv.DictReader(f):\n        load(rec)\n",
     "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9 in position 4117: invalid continuation byte",
     "The export is not UTF-8: byte 0xe9 on its own is `é` in Latin-1 / Windows-1252, which is what the old ERP writes. "
     "Open it with the encoding it really has and normalise to UTF-8 on the way in. `newline=\"\"` is what the csv module "
     "wants, otherwise quoted fields with line breaks get split.",
     "import csv\n\nwith open(\"exports/{t}.csv\", encoding=\"cp1252\", newline=\"\") as f:\n"
     "    for lineno, rec in enumerate(csv.DictReader(f), start=2):\n        try:\n            load(rec)\n"
     "        except ValueError as exc:\n            raise ValueError(f\"exports/{t}.csv line {{lineno}}: {{exc}}\") from exc\n"),
    ("The totals check for `{t}` is off by a few cents and I can't see why:",
     "total = 0.0\nfor row in rows:\n    total += float(row[\"amount\"]) * (1 + row[\"vat_rate\"])\nassert round(total, 2) == expected\n",
     "AssertionError: 1843207.3399999999 != Decimal('1843207.35')",
     "Two things: the float accumulation drifts, and the rounding is applied once to the sum instead of per line, which is "
     "what the invoicing code does. Keep everything in `Decimal` and round each line with ROUND_HALF_UP like the invoices.",
     "from decimal import Decimal, ROUND_HALF_UP\n\nCENT = Decimal(\"0.01\")\ntotal = Decimal(\"0\")\nfor row in rows:\n"
     "    line = (row[\"amount\"] * (1 + row[\"vat_rate\"])).quantize(CENT, rounding=ROUND_HALF_UP)\n"
     "    total += line\nassert total == expected, (total, expected)\n"),
    ("The async validator for `{t}` hangs and then times out:",
     "async def validate(ids):\n    async with pool.acquire() as conn:\n        tasks = [check(conn, i) for i in ids]\n"
     "        return await asyncio.gather(*tasks)\n",
     "asyncpg.exceptions._base.InterfaceError: cannot perform operation: another operation is in progress\n"
     "TimeoutError",
     "One connection can only run one query at a time; `gather` fires all checks on the same connection at once. "
     "Either give each task its own connection from the pool, bounded by a semaphore, or run the checks in one query "
     "with `= ANY($1)`. The second is faster by far.",
     "async def validate(ids):\n    async with pool.acquire() as conn:\n        rows = await conn.fetch(\n"
     "            \"SELECT id, checksum FROM {t} WHERE id = ANY($1::bigint[])\", list(ids))\n"
     "    return {{r[\"id\"]: r[\"checksum\"] for r in rows}}\n"),
    ("Pagination in the export job skips rows of `{t}`:",
     "offset = 0\nwhile True:\n    page = db.fetch(\"SELECT * FROM {t} ORDER BY updated_at LIMIT 1000 OFFSET %s\", (offset,))\n"
     "    if not page:\n        break\n    write(page)\n    offset += 1000\n",
     "# no exception: 3,112 rows missing from the export, found by the row-count check",
     "`updated_at` is not unique and rows change while the job runs, so OFFSET pages shift underneath you: a row that is "
     "updated moves to the end and another one slides into the gap. Page by a unique, stable key (keyset pagination) "
     "and the export is both correct and much faster, because OFFSET re-reads everything before it.",
     "last = (datetime.min.replace(tzinfo=timezone.utc), 0)\nwhile True:\n    page = db.fetch(\n"
     "        \"SELECT * FROM {t} WHERE (updated_at, id) > (%s, %s) ORDER BY updated_at, id LIMIT 1000\", last)\n"
     "    if not page:\n        break\n    write(page)\n    last = (page[-1][\"updated_at\"], page[-1][\"id\"])\n"),
    ("The JSON payload column in `{t}` breaks the loader:",
     "for row in rows:\n    meta = json.loads(row[\"payload\"])\n    row[\"channel\"] = meta[\"channel\"]\n",
     "KeyError: 'channel'",
     "About two percent of the payloads predate the mobile app and have no `channel` key at all; the old code defaulted "
     "them to `web` in the reporting layer. Do the same here, explicitly, and count how many rows took the default so "
     "the number appears in the migration log instead of disappearing.",
     "defaulted = 0\nfor row in rows:\n    meta = json.loads(row[\"payload\"]) if row[\"payload\"] else {{}}\n"
     "    if \"channel\" not in meta:\n        defaulted += 1\n    row[\"channel\"] = meta.get(\"channel\", \"web\")  # pre-2019 rows: web only\n"
     "log.info(\"{t}: %d rows defaulted to channel=web\", defaulted)\n"),
]

LONG_MODULE = '''"""migrate.py: copy the shop database to the new cluster, table by table (ticket {ticket})."""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from dataclasses import dataclass

import psycopg

log = logging.getLogger("migrate")

TABLES = {tables}
BATCH = 5000


@dataclass(frozen=True)
class Range:
    table: str
    lo: int
    hi: int


def id_ranges(conn: psycopg.Connection, table: str, step: int = 250_000) -> list[Range]:
    lo, hi = conn.execute(f"SELECT min(id), max(id) FROM {{table}}").fetchone()
    if lo is None:
        return []
    return [Range(table, a, min(a + step - 1, hi)) for a in range(lo, hi + 1, step)]


def checksum(conn: psycopg.Connection, r: Range) -> str:
    rows = conn.execute(
        f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {{r.table}} t WHERE id BETWEEN %s AND %s",
        (r.lo, r.hi),
    ).fetchone()
    return rows[0] or "empty"


def copy_range(src: psycopg.Connection, dst: psycopg.Connection, r: Range) -> int:
    copied = 0
    with src.cursor(name=f"c_{{r.table}}_{{r.lo}}") as cur:
        cur.execute(f"SELECT * FROM {{r.table}} WHERE id BETWEEN %s AND %s ORDER BY id", (r.lo, r.hi))
        cols = [d.name for d in cur.description]
        with dst.cursor().copy(f"COPY {{r.table}} ({{', '.join(cols)}}) FROM STDIN (FORMAT BINARY)") as cp:
            for row in cur:
                cp.write_row(row)
                copied += 1
    return copied


def migrate_table(src, dst, table: str, verify: bool) -> dict:
    started = time.monotonic()
    failed: list[Range] = []
    total = 0
    for r in id_ranges(src, table):
        try:
            with dst.transaction():
                total += copy_range(src, dst, r)
        except psycopg.Error as exc:
            log.error("%s %s-%s failed: %s", table, r.lo, r.hi, exc)
            failed.append(r)
            continue
        if verify and checksum(src, r) != checksum(dst, r):
            log.error("%s %s-%s checksum mismatch", table, r.lo, r.hi)
            failed.append(r)
    dst.execute(f"SELECT setval(pg_get_serial_sequence('{{table}}', 'id'), coalesce(max(id), 1)) FROM {{table}}")
    return {{"table": table, "rows": total, "failed": [(r.lo, r.hi) for r in failed],
            "seconds": round(time.monotonic() - started, 1)}}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--verify", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    report = []
    with psycopg.connect(args.src) as src, psycopg.connect(args.dst) as dst:
        for table in args.only or TABLES:
            report.append(migrate_table(src, dst, table, args.verify))
            log.info("done %s", report[-1])
    bad = [r for r in report if r["failed"]]
    digest = hashlib.sha256(repr(report).encode()).hexdigest()[:12]
    log.info("report digest %s, %d tables with failed ranges", digest, len(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
'''

REVIEW_POINTS = [
    "`id_ranges` assumes dense ids; `audit_log` has no `id` column at all, so it needs its own path (by `logged_at` day).",
    "The named server-side cursor is right for memory, but it must live inside a transaction on `src`; with autocommit off that holds, keep it that way.",
    "`copy_range` and the checksum read the source at two different moments; if writers are still active the checksums will disagree for honest reasons. Run `--verify` only after writes are paused.",
    "`setval` with `coalesce(max(id), 1)` leaves an empty table's sequence at 1 with is_called true, so the first insert gets 2. Harmless, but worth a comment.",
    "A failed range is logged and skipped, which is what we want, but the exit code only says 'something failed'. Write the failed ranges to a JSON file so the retry can read them.",
    "`string_agg(t::text ...)` depends on the column order and the text format being identical on both sides; both clusters are 16.x after the upgrade so that holds, but pin `DateStyle` and `extra_float_digits` in the session to be safe.",
    "The binary COPY needs the column types to match exactly; `customers.phone` is `varchar(32)` on the old side and `text` on the new one, which binary COPY accepts, but `numeric` vs `double precision` would not.",
    "There is no progress output for the long tables; a line every range with rows per second would tell us on Saturday whether we are on schedule.",
    "`repr(report)` for the digest is fine for a log line but not stable across Python versions; use `json.dumps(report, sort_keys=True)` if the digest is meant to be compared later.",
    "Consider `--jobs N` with one process per table for the small tables; the big ones should stay sequential so they do not fight over I/O.",
]

TOOL_RESULTS = [
    lambda rng, t: {"tool": "db.table_stats", "cluster": "legacy-pg12", "table": t, "rows": rng.randint(20_000, 9_000_000),
                    "size_mb": rng.randint(40, 60_000), "index_mb": rng.randint(10, 20_000),
                    "last_autovacuum": f"2026-11-{rng.randint(1, 22):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
                    "dead_tuples_pct": round(rng.uniform(0.1, 14.0), 1)},
    lambda rng, t: {"tool": "run_query", "query": f"SELECT count(*), min(id), max(id) FROM {t}",
                    "rows": [[rng.randint(20_000, 9_000_000), 1, rng.randint(9_000_000, 60_000_000)]],
                    "elapsed_ms": rng.randint(40, 9_000)},
    lambda rng, t: {"tool": "checksum_compare", "table": t, "ranges": rng.randint(4, 200),
                    "mismatched": 0, "source_digest": (d := sha(rng)), "target_digest": d},
    lambda rng, t: {"tool": "disk_usage", "host": "pg16-new-01", "mount": "/var/lib/postgresql",
                    "size_gb": 2048, "used_gb": rng.randint(300, 1400), "inodes_used_pct": rng.randint(1, 9)},
    lambda rng, t: {"tool": "weather.forecast", "city": "Lisbon", "days": [
        {"date": f"2026-12-{d:02d}", "min_c": rng.randint(8, 12), "max_c": rng.randint(14, 18),
         "rain_mm": round(rng.uniform(0, 9), 1)} for d in range(7, 12)]},
    lambda rng, t: {"tool": "flight.status", "flight": FACTS["flight"], "date": "2026-12-07", "departure": "07:55",
                    "terminal": "1", "status": rng.choice(["scheduled", "on time"]), "booking": FACTS["booking"]},
    lambda rng, t: {"tool": "fx.rate", "base": "EUR", "quote": "USD", "rate": round(rng.uniform(1.03, 1.12), 4),
                    "as_of": "2026-11-23T12:00:00Z"},
]

SQL_SNIPPETS = [
    "SELECT relname, n_live_tup, n_dead_tup, last_autovacuum\nFROM pg_stat_user_tables\nORDER BY n_live_tup DESC\nLIMIT 15;",
    "SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS age, left(query, 60)\nFROM pg_stat_activity\n"
    "WHERE state <> 'idle'\nORDER BY age DESC NULLS LAST;",
    "ALTER TABLE {t} ADD CONSTRAINT {t}_customer_fk\n    FOREIGN KEY (customer_id) REFERENCES customers (id) NOT VALID;\n"
    "ALTER TABLE {t} VALIDATE CONSTRAINT {t}_customer_fk;",
    "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}) + 1000);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {t}_created_at_idx ON {t} (created_at);",
    "SELECT date_trunc('day', created_at) AS day, count(*), sum(total_cents) / 100.0 AS eur\nFROM {t}\n"
    "WHERE created_at >= now() - interval '14 days'\nGROUP BY 1\nORDER BY 1;",
]

N_MIDDLE_TURNS = 214  # the recap adds 7 more: 221 turns with the system message


def build_chat(rng: random.Random) -> tuple[list[dict], list[dict]]:
    turns: list[dict] = [{"role": "system", "content": (
        "You are a careful, concise assistant working with a software engineer over one long session. "
        "Keep exact identifiers (booking references, ticket numbers, hashes, order numbers) exactly as given.")}]
    facts: list[dict] = []
    F = FACTS

    def add(role: str, content: str) -> int:
        turns.append({"role": role, "content": content})
        return len(turns) - 1

    def fact(question: str, key: str, i: int) -> None:
        assert F[key] in turns[i]["content"], (key, i)
        facts.append({"question": question, "answer": F[key], "turn": i})

    # --- the early facts: the demo and the tests ask about these at the end -----------------------------
    i = add("user", f"Morning! Long day ahead. First the fun part: I'm going to the EuroData Ops Summit in Lisbon, "
                    f"7-11 December. Flight {F['flight']} on the 7th, departing 07:55, booking reference {F['booking']}. "
                    f"My budget for the whole trip is EUR {F['budget_eur']}, flights already paid. Can you help me plan it?")
    fact("What was the flight booking reference?", "booking", i)
    fact("What was the budget for the whole trip, in euros?", "budget_eur", i)
    fact("Which flight does the engineer take to Lisbon?", "flight", i)
    add("assistant", "Happily. A first outline, which we can refine as the details come in:\n\n"
        "1. **Mon 7 Dec**: arrive around 10:40, drop the bag, slow walk through Alfama, early night.\n"
        "2. **Tue 8 - Thu 10 Dec**: conference days in Parque das Nações; evenings free for food and viewpoints.\n"
        "3. **Fri 11 Dec**: a day trip before the evening flight home.\n\n" + paragraphs(rng, TRIP_PROSE, 2, 3, 4)
        + "\n\nWhere are you staying, and do you already have anything booked for the last day?")
    i = add("user", f"Hotel is the {F['hotel']}, 4 nights, confirmation number {F['hotel_conf']}. "
                    f"For Friday I booked train {F['train']} to Porto, leaving Santa Apolonia at 07:09.")
    fact("What was the hotel confirmation number?", "hotel_conf", i)
    fact("Which hotel is the engineer staying at in Lisbon?", "hotel", i)
    fact("Which train was booked for the day trip to Porto?", "train", i)
    add("assistant", f"Noted: {F['hotel']} for four nights ({F['hotel_conf']}) and train {F['train']} to Porto on Friday. "
        "Santa Apolonia is a fifteen-minute walk from Alfama, downhill, so Friday morning is easy. "
        + pick(rng, TRIP_PROSE, 3))
    i = add("user", f"Now the less fun part. At work I have to migrate our orders database from the old PostgreSQL 12 box "
                    f"to the new PostgreSQL 16 cluster this week, before I leave. Ticket is {F['ticket']}. We test on the "
                    f"snapshot {F['snapshot']}.")
    fact("What was the migration ticket number?", "ticket", i)
    fact("Which snapshot should the migration be tested on?", "snapshot", i)
    add("assistant", "Then let us plan it so that it is boring on the night. A first cut of the phases:\n\n"
        + md_table(["phase", "what", "where", "duration (est.)"], [
            ["0", "dry run of the full copy", "snapshot", "3-4 h"],
            ["1", "copy reference tables", "new cluster", "10 min"],
            ["2", "bulk copy large tables, indexes after", "new cluster", "2-3 h"],
            ["3", "verify counts + checksums per id range", "both", "40 min"],
            ["4", "switch writers, bump sequences", "pooler", "10 min"],
            ["5", "keep old cluster read-only one week", "legacy", "-"]])
        + "\n\n" + paragraphs(rng, MIG_PROSE, 2, 3, 5))
    i = add("user", f"On-call DBA this week is {F['oncall']}, pager extension {F['pager']}. "
                    f"The maintenance window we got approved is {F['window']}.")
    fact("Who is the on-call DBA during the migration?", "oncall", i)
    fact("What is the on-call DBA's pager extension?", "pager", i)
    fact("When is the approved maintenance window?", "window", i)
    add("assistant", f"Good, a three-hour window is enough if the dry run confirms the estimates. I would brief {F['oncall']} "
        "before Saturday with the runbook and the go/no-go time, so that a call at 03:30 needs no context. "
        + pick(rng, MIG_PROSE, 3))
    i = add("user", f"Also for the trip: my talk is in {F['talk_room']}, {F['talk_time']}. 25 minutes plus questions.")
    fact("Which room is the engineer's conference talk in?", "talk_room", i)
    fact("When is the engineer's conference talk?", "talk_time", i)
    add("assistant", "Then Thursday morning is for a last run-through, and lunch should be light and early. "
        "Bring the slides on a USB stick as well as the laptop; conference HDMI adapters are a lottery.")
    i = add("user", f"Speaking of adapters, I ordered a USB-C travel adapter, order number {F['adapter_order']}, "
                    "supposed to arrive Friday.")
    fact("What was the order number of the USB-C travel adapter?", "adapter_order", i)
    add("assistant", "If it slips past Friday, the airport shops sell them, though at twice the price. Portugal uses "
        "type F sockets, 230 V, so any European plug works directly.")
    i = add("tool", json.dumps({"tool": "db.table_stats", "cluster": "legacy-pg12", "table": "orders",
                                "rows": int(F["orders_rows"].replace(",", "")), "size_mb": 41_877, "index_mb": 12_530,
                                "last_autovacuum": "2026-11-22T04:12:00Z", "dead_tuples_pct": 6.3}))
    facts.append({"question": "How many rows did the orders table have on the legacy cluster?",
                  "answer": F["orders_rows"].replace(",", ""), "turn": i})
    add("assistant", f"The `orders` table has {F['orders_rows']} rows, 41.9 GB of heap and 12.5 GB of indexes. "
        "At the copy rates we usually see on that hardware that is about 90 minutes of COPY plus 35-45 minutes of index "
        "builds, which fits the window with margin. " + pick(rng, MIG_PROSE, 2))
    i = add("user", f"For the record, the last good deploy before all this is commit {F['last_good']}. If we must roll "
                    "back the app too, that's the one.")
    fact("Which commit was the last good deploy before the migration?", "last_good", i)
    add("assistant", f"Noted: app rollback target {F['last_good']}. I will put it in the runbook next to the database "
        "rollback steps so both are in one place.")

    # --- the long middle: a varied working session --------------------------------------------------
    def ep_debug() -> None:
        t = rng.choice(TABLES)
        intro, code, tb, expl, fix = rng.choice(DEBUG_CASES)
        n = rng.randint(100_000, 40_000_000)
        line = rng.randint(40, 180)
        add("user", intro.format(t=t) + "\n\n```python\n" + code.format(t=t) + "```\n\n```\nTraceback (most recent call last):\n"
            f'  File "/srv/migrate/migrate.py", line {line + 60}, in <module>\n    raise SystemExit(main())\n'
            f'  File "/srv/migrate/migrate.py", line {line}, in migrate_table\n    total += copy_range(src, dst, r)\n'
            + tb.format(t=t, n=n) + "\n```")
        add("assistant", expl + "\n\n```python\n" + fix.format(t=t) + "```\n\n" + pick(rng, DEBUG_PROSE, rng.randint(2, 4))
            + "\n\nWhile we are on `" + t + "`: " + analysis(rng, [t] + rng.sample(TABLES, rng.randint(0, 1)), 0))
        if rng.random() < 0.5:
            add("user", rng.choice(CHATTER))
            add("assistant", rng.choice(ACKS))

    def ep_tool() -> None:
        t = rng.choice(TABLES)
        add("tool", json.dumps(rng.choice(TOOL_RESULTS[:4])(rng, t)))
        add("assistant", "From that result: " + analysis(rng, [t] + rng.sample(TABLES, rng.randint(1, 3)), 1))

    def ep_trip() -> None:
        city = rng.choice(list(CITY_PLACES))
        places = rng.sample(CITY_PLACES[city], 3)
        add("user", rng.choice([f"What could I do in {city} with one free afternoon?",
                                f"Is {places[0]} worth the time, or is it a tourist trap?",
                                f"If it rains on the day we're in {city}, what's plan B?",
                                f"How would you order {', '.join(places)} in one day?"]))
        body = f"For {city}, I would start with {places[0]}, then {places[1]}, and end at {places[2]}. "
        add("assistant", body + pick(rng, TRIP_PROSE, rng.randint(2, 4)) + "\n\n" + dining(rng) + "\n\n"
            + paragraphs(rng, TRIP_PROSE, rng.randint(1, 2), 2, 4))

    def ep_budget() -> None:
        items = rng.sample([("hotel, 4 nights", 612), ("train to Porto and back", 78), ("conference dinner", 65),
                            ("Sintra day (train + palace)", 41), ("fado evening", 55), ("metro card + taxis", 60),
                            ("lunches, 5 days", 110), ("dinners, 5 days", 210), ("gifts", 70), ("museum tickets", 48),
                            ("airport transfer", 36), ("coffee and pastries", 35)], rng.randint(5, 9))
        total = sum(c for _, c in items)
        add("user", "Can you update the budget table with what we have so far?")
        rows = [[name, f"EUR {c}"] for name, c in items] + [["**total**", f"**EUR {total}**"]]
        add("assistant", md_table(["item", "cost"], rows) + f"\n\nAgainst the EUR {F['budget_eur']} budget that leaves "
            f"EUR {1840 - total}. " + rng.choice(["Comfortable.", "Enough for one nice dinner.", "Tight but fine.",
                                                  "We could add the Cascais afternoon."]))

    def ep_timings() -> None:
        add("user", rng.choice(["Can you summarise the dry-run timings so far in a table?", "Where are we on timings?",
                                "Table of the numbers please, I want to paste it in the ticket."]))
        ts = rng.sample(TABLES, rng.randint(4, 9))
        add("assistant", timing_table(rng, ts) + "\n\n" + analysis(rng, ts[:rng.randint(1, 3)], 1))

    def ep_sql() -> None:
        t = rng.choice(TABLES)
        add("user", rng.choice([f"What's the query to check this for `{t}`?", f"How do I do that safely on `{t}`?",
                                f"Give me the SQL for `{t}`."]))
        add("assistant", "```sql\n" + rng.choice(SQL_SNIPPETS).format(t=t) + "\n```\n\n" + analysis(rng, [t], rng.randint(1, 2)))

    def ep_zh(k: int) -> None:
        add("user", ZH[k][0])
        add("assistant", ZH[k][1])

    def ep_advice() -> None:
        add("user", pick(rng, MIG_PROSE, 1) + " " + rng.choice(["What do you think?", "Agree?", "Is that overkill?",
                                                                 "Or am I overthinking it?"]))
        add("assistant", pick(rng, MIG_PROSE, rng.randint(2, 4)) + "\n\n" + analysis(rng, rng.sample(TABLES, rng.randint(3, 5)), 1))

    def ep_chatter() -> None:
        add("user", rng.choice(CHATTER))
        add("assistant", rng.choice(ACKS))

    def ep_checksums() -> None:
        ts = rng.sample(TABLES, rng.randint(3, 6))
        lines = [f"{t:<12} ranges={rng.randint(4, 200):>3}  src={d}  dst={d}  ok" for t in ts for d in [sha(rng, 16)]]
        add("user", "Verification output from the dry run:\n\n```\n" + "\n".join(lines) + "\n```")
        add("assistant", "All ranges match. " + analysis(rng, ts[:2], 1))

    def ep_status_email() -> None:
        add("user", "Can you draft the status email to the team for today? Keep it factual.")
        add("assistant", f"Subject: {F['ticket']} orders migration, status {rng.choice(['Tuesday', 'Wednesday', 'Thursday'])}\n\n"
            "Hi all,\n\n" + paragraphs(rng, MIG_PROSE, 3, 3, 5) + "\n\n"
            + timing_table(rng, rng.sample(TABLES, 5)) + f"\n\nOn call during the window: {F['oncall']} ({F['pager']}). "
            f"Window: {F['window']}.\n\nThanks,\nthe migration crew")

    def ep_review() -> None:
        add("user", "Here's the full script as it stands. Can you review it before the next dry run?\n\n```python\n"
            + LONG_MODULE.format(ticket=F["ticket"], tables=json.dumps(rng.sample(TABLES, 8))) + "```")
        pts = rng.sample(REVIEW_POINTS, rng.randint(5, 8))
        add("assistant", "Overall it is in good shape. Points, most important first:\n\n"
            + "\n".join(f"{k}. {p}" for k, p in enumerate(pts, 1)) + "\n\n" + pick(rng, MIG_PROSE, 3))

    def ep_trip_tool() -> None:
        add("tool", json.dumps(rng.choice(TOOL_RESULTS[4:])(rng, "")))
        add("assistant", "That looks fine for the trip. " + pick(rng, TRIP_PROSE, rng.randint(2, 3)))

    def ep_incident() -> None:
        pid = rng.randint(10_000, 99_999)
        add("user", f"Something is holding a lock on `{rng.choice(TABLES)}`:\n\n```\n  pid  | state               | wait_event | age      | query\n"
            "-------+---------------------+------------+----------+------------------------------\n"
            f" {pid} | idle in transaction | ClientRead | 02:41:17 | SELECT * FROM orders WHERE ...\n```")
        add("assistant", f"pid {pid} has been idle in a transaction for almost three hours; that is a client that opened a "
            "transaction and never committed, probably the reporting notebook. It holds its snapshot and any locks it took. "
            f"Ask {F['oncall']} before killing it, then:\n\n```sql\nSELECT pg_terminate_backend({pid});\n"
            "ALTER DATABASE shop SET idle_in_transaction_session_timeout = '15min';\n```\n\n" + pick(rng, MIG_PROSE, 2))

    explain_left = list(range(len(EXPLAIN)))
    rng.shuffle(explain_left)

    def ep_explain() -> None:
        if not explain_left:
            ep_advice()
            return
        q, a = EXPLAIN[explain_left.pop()]
        add("user", q)
        add("assistant", a + "\n\n" + pick(rng, MIG_PROSE, rng.randint(1, 3)))

    def ep_logs() -> None:
        t = rng.choice(TABLES)
        add("user", f"Log from the copy of `{t}` on the snapshot, {rng.choice(['first', 'second', 'third'])} attempt:\n\n```\n"
            + log_block(rng, t, rng.randint(15, 32)) + "\n```\n\n"
            + rng.choice(["Anything worrying?", "Is that rate normal?", "The errors in there, do we care?", "Thoughts?"]))
        add("assistant", rng.choice([
            "The rate is steady apart from the checkpoint stalls, which is what we expect with the current settings. ",
            "The timeouts are the VPN, not the database: the failed ranges are isolated and the retry pass will pick them up. ",
            "Throughput drops in the second half because the target's WAL volume fills faster than it is archived. ",
        ]) + analysis(rng, [t] + rng.sample(TABLES, rng.randint(0, 2)), 1))

    def ep_plan() -> None:
        t = rng.choice(["orders", "invoices", "payments", "shipments", "refunds"])
        add("user", f"The new cluster runs this dashboard query on `{t}` slower than the old one:\n\n```\n"
            + explain_plan(rng, t) + "\n```")
        add("assistant", rng.choice([
            "The plan itself is right; the time goes into the filter, which throws away most rows the index returns. ",
            "The estimates are far off because ANALYZE has not run since the load; the planner is guessing. ",
            "The backward index scan is fine, but the nested loop runs once per row and the customer lookups add up. ",
        ]) + analysis(rng, [t], 1) + "\n\n```sql\nANALYZE " + t + ";\n```")

    def ep_thread() -> None:
        add("user", rng.choice(["Catching up on the team channel, here's what came in:", "From #orders-migration just now:",
                                "The thread from the channel, can you pull out what needs an answer from me?"])
            + "\n\n```\n" + slack_thread(rng) + "\n```")
        add("assistant", rng.choice(["What needs you: ", "Open points for you: ", "Three things to answer, the rest is FYI: "])
            + pick(rng, MIG_PROSE, rng.randint(2, 3)) + "\n\n" + analysis(rng, rng.sample(TABLES, rng.randint(2, 3)), 1))

    def ep_itinerary() -> None:
        add("user", rng.choice(["Can you write out the whole week day by day now that things are booked?",
                                "Give me the final day-by-day plan, I'll print it."]))
        parts = [f"**{day}: {title}**\n" + "\n".join(f"- {it}" for it in items) + "\n\n" + pick(rng, TRIP_PROSE, rng.randint(2, 3))
                 for day, title, items in ITINERARY_DAYS]
        add("assistant", "\n\n".join(parts) + f"\n\nBookings: flight {F['flight']} ({F['booking']}), hotel {F['hotel']} "
            f"({F['hotel_conf']}), train {F['train']}.")

    def ep_runbook() -> None:
        add("user", "Let's write the runbook for Saturday properly. Full version, I'll paste it into the wiki.")
        go = rng.choice(["03:45", "04:00", "04:15"])
        steps = [
            f"01:30 UTC: join the bridge call; {F['oncall']} ({F['pager']}) confirms the on-call phone works.",
            "01:45: announce the maintenance banner in the shop; disable the checkout button via flag `checkout_paused`.",
            "02:00: drain the pooler: `PAUSE shop;` in PgBouncer, wait for active transactions to reach zero (max 5 min).",
            "02:05: set the legacy cluster read-only: `ALTER SYSTEM SET default_transaction_read_only = on; SELECT pg_reload_conf();`.",
            "02:06: record the final row counts and `pg_current_wal_lsn()` on the legacy cluster in the ticket.",
            "02:10: run `python migrate.py --src $LEGACY --dst $NEW --verify` on the migration VM (not a laptop).",
            "02:10-03:30: watch the progress lines; each range logs rows/s. Below 20,000 rows/s on `orders`, call it out.",
            "03:30: retry any failed ranges from `failed_ranges.json`; re-run the checksum for those ranges only.",
            f"{go}: GO/NO-GO. Go only if every table's count and checksum match. Otherwise roll back (section 3).",
            "after go: bump sequences (+1000), validate the NOT VALID foreign keys, `VACUUM (FREEZE, ANALYZE)` the large tables.",
            "switch the pooler to the new cluster (`RESUME shop;` after editing `pgbouncer.ini`), remove the banner.",
            "place one test order with the internal card; check it lands in the new cluster with the expected id.",
            f"update ticket {F['ticket']} with timings, the digest line from the migration log and the final counts.",
        ]
        rollback = [
            "re-point the pooler to the legacy cluster and `RESUME shop;`.",
            "`ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();` on the legacy cluster.",
            f"if the application was redeployed, roll back to commit {F['last_good']}.",
            "remove the banner, post in the incident channel, keep the new cluster untouched for analysis.",
        ]
        add("assistant", f"# Runbook: orders migration ({F['ticket']})\n\nWindow: {F['window']}. Snapshot used for the dry "
            f"runs: {F['snapshot']}.\n\n## 1. Before the window\n\n" + "\n".join(f"- {x}" for x in [
                "freeze deploys from Friday 18:00; last good commit recorded above",
                "pause the Shanghai reporting job (confirmed with Chen Wei)",
                "check disk on the new cluster: at least 2x the legacy data size free",
                "run the migration script once more against the latest snapshot"])
            + "\n\n## 2. During the window\n\n" + "\n".join(f"{k}. {x}" for k, x in enumerate(steps, 1))
            + "\n\n## 3. Rollback\n\n" + "\n".join(f"{k}. {x}" for k, x in enumerate(rollback, 1))
            + "\n\n## 4. After\n\n" + pick(rng, MIG_PROSE, 4))

    def ep_ja() -> None:
        add("user", JA[0])
        add("assistant", JA[1])

    def ep_ko() -> None:
        add("user", KO[0])
        add("assistant", KO[1])

    episodes = [ep_debug, ep_tool, ep_trip, ep_budget, ep_timings, ep_sql, ep_advice, ep_chatter, ep_checksums,
                ep_trip_tool, ep_incident, ep_explain, ep_logs, ep_plan, ep_thread]
    weights = [5, 2, 3, 1, 2, 2, 3, 1, 2, 1, 1, 2, 5, 2, 3]
    # the rare, long or one-off episodes sit at fixed turn numbers so that every build has them
    scheduled = {16: ep_itinerary, 30: ep_runbook, 40: ep_review, 45: lambda: ep_zh(0), 60: ep_status_email, 70: ep_ja,
                 85: lambda: ep_zh(1), 100: ep_ko, 110: ep_review, 120: lambda: ep_zh(2), 135: ep_status_email,
                 150: lambda: ep_zh(3), 165: lambda: ep_zh(4), 175: ep_runbook, 180: ep_status_email, 185: ep_itinerary,
                 190: lambda: ep_zh(5)}
    done: set[int] = set()
    while len(turns) < N_MIDDLE_TURNS:
        due = [k for k in sorted(scheduled) if k <= len(turns) and k not in done]
        if due:
            done.add(due[0])
            scheduled[due[0]]()
        else:
            rng.choices(episodes, weights)[0]()

    # --- the recap: questions that need the early facts ---------------------------------------------
    add("user", "Before I log off: what was my flight booking reference again, and which snapshot did we test on?")
    add("assistant", f"Your flight booking reference is {F['booking']} ({F['flight']} on 7 December, 07:55) and the "
        f"dry runs used the snapshot {F['snapshot']}.")
    add("user", "And who's on call Saturday, and what's the window? I want it on a sticky note.")
    add("assistant", f"{F['oncall']}, pager {F['pager']}; the window is {F['window']}. The go/no-go check is at 04:00 UTC.")
    add("user", "Last one: hotel confirmation and which room my talk is in?")
    add("assistant", f"Hotel: {F['hotel']}, confirmation {F['hotel_conf']}. Talk: {F['talk_room']}, {F['talk_time']}. "
        "Good luck with both the migration and the talk.")
    add("user", "Thanks, that's everything. Have a good evening.")
    return turns, facts


def write_chat(out: Path) -> None:
    turns, facts = build_chat(random.Random(SEED))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "example_chat.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for t in turns:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    (out / "example_chat_facts.json").write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help="output folder (default optimem/data)")
    args = p.parse_args(argv)
    write_chat(args.out)


if __name__ == "__main__":
    main()
