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

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")


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
        rate = items / elapsed
        return Text(f"{rate:,.1f} {unit}/s" if rate >= 1 else f"{rate:.2g} {unit}/s", style="progress.data.speed")


class KnownTotalBar(BarColumn):
    """A bar only when there is a total to measure against; no pulsing bar while the total is unknown
    (the spinner, the count and the rate say that work goes on)."""

    def render(self, task: Task):
        return Text("") if task.total is None else super().render(task)


def progress_bar(*, console: Console | None = None, disable: bool = False, transient: bool = True) -> Progress:
    """A rich Progress on stderr with description, bar, count, rate, elapsed and remaining time."""
    console = console or Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        KnownTotalBar(),
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


# -- long calls the CLI wraps (benchmarks): a bar that code deep inside can advance ---------------------
_ACTIVE: ContextVar[tuple[Progress, TaskID] | None] = ContextVar("optimem_progress", default=None)


@contextmanager
def activity(description: str, *, unit: str = "steps", console: Console | None = None) -> Iterator[Progress]:
    """A bar on stderr for everything inside the block (spinner, elapsed time); code inside reports its
    units of work through `track`, which turns the spinner into a count, a rate and time left."""
    with progress_bar(console=console) as bar:
        task = bar.add_task(description, total=None, unit=unit)
        token = _ACTIVE.set((bar, task))
        try:
            yield bar
        finally:
            _ACTIVE.reset(token)


def track(items: Iterable[T], *, total: int | None = None, unit: str = "items",
          description: str | None = None) -> Iterator[T]:
    """`items`, advancing the enclosing `activity` bar by one per item (a no-op outside one: library
    callers see nothing). Each call restarts the bar's clock, so the rate is this loop's own."""
    active = _ACTIVE.get()
    if active is None:
        yield from items
        return
    bar, task = active
    fields: dict[str, Any] = {"unit": unit}
    if description:
        fields["description"] = description
    bar.reset(task, total=total, **fields)
    for item in items:
        yield item
        bar.advance(task)
