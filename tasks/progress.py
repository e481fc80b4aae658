"""A rich progress bar (with ETA) that also logs milestones to the Prefect run logger."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from prefect import get_run_logger
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: float) -> Iterator[Callable[[float], None]]:
    """Yields advance(n); logs at 25/50/75/100 %."""
    logger = get_run_logger()
    marks = [0.25, 0.5, 0.75, 1.0]
    done = [0.0]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        tid = bar.add_task(description, total=total)

        def advance(n: float) -> None:
            done[0] += n
            bar.update(tid, completed=min(done[0], total))
            while marks and total and done[0] >= marks[0] * total - 1e-9:
                logger.info("%s: %d%%", description, round(marks.pop(0) * 100))

        yield advance
