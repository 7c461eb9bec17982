"""Large turns and files in bounded memory, never refused: a huge newest turn through add + context()
(its tail as text, its earlier pages shown), `optimem plan` of a transcript ending in one, and
`optimem render` of a long one-line Markdown file (pages written as they are drawn). Sizes are modest
here; `optimem bench large` measures the issue's 20 MB case (README, reliability)."""

from __future__ import annotations

import json

from optimem.bench.large import cli_peak, in_fresh_process, one_line_markdown, pasted_log


def _cli_peak(*args: str) -> tuple[int, int, str]:
    """(peak MB of the `optimem` process alone, its exit status, its stdout)."""
    peak, rc, _, stdout, _ = cli_peak(*args, timeout=600)
    return peak, rc, stdout


def test_a_huge_newest_turn_is_shown_in_bounded_memory(tmp_path):
    """1 MB pasted as the newest turn: the first context() seals its ~250 pages in batches and plans
    it as its tail (text) after its earlier pages; questions after it too. The process grows by far
    less than the pages would take held at once (each master is a 1.6 MB image)."""
    r = in_fresh_process(f"sqlite:///{tmp_path / 'big.db'}", 1_000_000, 4096, 2, timeout=600)
    assert "error" not in r, r
    assert r["policy_errors"] == 0, r["errors"]
    assert r["pages_sealed"] > 200
    for call in r["calls"]:
        assert call["total_tokens"] <= 4096
        assert call["kind"] == "text" and call["tail_is_end_of_turn"] and call["tail_chars"] > 1000
        assert call["pages_of_turn_shown"] > 5
    # scaled from the target (20 MB within 500 MB, about 250 MB over the warmed-up process)
    assert r["grown_mb"] < 40, f"a 1 MB turn grew the process by {r['grown_mb']} MB"


def test_plan_of_a_transcript_ending_in_a_huge_turn_does_not_refuse(tmp_path):
    rows = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": pasted_log(600_000)}]
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    base, rc, _ = _cli_peak("plan", str(small), "--budget", "4096", "--json")
    assert rc == 0
    peak, rc, out = _cli_peak("plan", str(big), "--budget", "4096", "--json")
    assert rc == 0, out
    plan = json.loads(out)
    assert plan["total_tokens"] <= 4096 and plan["tails"][0][0] == 2
    (tail,) = [s for s in plan["segments"] if s.get("tail_from") is not None]
    assert tail["kind"] == "text" and tail["turns"] == [2]
    assert any(s["kind"] == "page" for s in plan["segments"]), "its earlier part is on pages"
    assert peak - base < 80, f"planning a 0.6 MB turn took {peak - base} MB more than a two-turn transcript"


def test_render_of_a_long_one_line_markdown_file_streams_pages(tmp_path):
    doc = tmp_path / "line.md"
    doc.write_text(one_line_markdown(500_000))  # one line, no newline
    tiny = tmp_path / "tiny.md"
    tiny.write_text("one line\n")
    base, rc, _ = _cli_peak("render", str(tiny), "--tier", "tiny", "--out", str(tmp_path / "t"), "--json")
    assert rc == 0
    peak, rc, out = _cli_peak("render", str(doc), "--tier", "tiny", "--out", str(tmp_path / "p"), "--json")
    assert rc == 0, out
    pages = json.loads(out)
    assert len(pages) > 50 and sum(p["chars"] for p in pages) == 500_000
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [f"page-{i:04d}-tiny.png" for i in range(len(pages))]
    assert peak - base < 60, f"rendering {len(pages)} pages took {peak - base} MB more than one page"
