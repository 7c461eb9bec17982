"""Progress bars on stderr with counts and rates, for anything a user waits for.

One look for every long call (the CLI's render, plan, ingest, ask with a model, bench, and the
library's `DocumentMemory.ingest(progress=True)`): what is being done, a bar when the total is known,
"done/total unit", the rate in units per second, elapsed and remaining time. Bars are drawn on stderr
only, so `--json` output on stdout stays one JSON document; on a non-terminal stderr (a pipe, a test)
rich draws nothing.

    with progress_bar() as bar:
        task = bar.add_task("render chat.jsonl", total=None, unit="pages")
        for page in pages:
            ...
            bar.advance(task)
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class CountColumn(ProgressColumn):
    """ "12/75 pages", or "12 pages" while the total is unknown. A task may count one thing (pages)
    while its bar measures another (characters): the field `items` then holds the count."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        items = task.fields.get("items")
        if items is not None:
            total = task.fields.get("items_total")
            done = f"{items:,}" if total is None else f"{items:,}/{total:,}"
        else:
            done = f"{int(task.completed):,}" if task.total is None else f"{int(task.completed):,}/{int(task.total):,}"
        return Text(f"{done} {unit}".rstrip(), style="progress.download")


class RateColumn(ProgressColumn):
    """Units per second since the task started (steadier than rich's windowed speed for slow items)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        items = task.fields.get("items", task.completed)
        if elapsed <= 0 or not items:
            return Text("")
        unit = task.fields.get("unit", "items")
        return Text(f"{items / elapsed:,.1f} {unit}/s", style="progress.data.speed")


def progress_bar(*, console: Console | None = None, disable: bool = False, transient: bool = True) -> Progress:
    """A rich Progress on stderr with description, bar, count, rate, elapsed and remaining time."""
    console = console or Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        CountColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not console.is_terminal,  # a pipe or a log file gets no bar (rich would leave blank lines)
        transient=transient,
    )


def stderr_console(**kwargs: Any) -> Console:
    return Console(stderr=True, **kwargs)
