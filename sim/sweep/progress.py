"""The progress of a sweep: a rich bar on a terminal, a plain line per tenth otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["SweepProgress", "sweep_progress"]

SweepProgress = Callable[[bool], None]  # called once per finished replication: ok?


@contextmanager
def sweep_progress(total: int, *, quiet: bool = False, label: str = "sweep") -> Iterator[SweepProgress]:
    done = failed = 0
    if quiet or total == 0:
        yield lambda ok: None
        return
    if not sys.stderr.isatty():
        step = -(-total // 10)  # a line per tenth

        def plain(ok: bool) -> None:
            nonlocal done, failed
            done += 1
            failed += 0 if ok else 1
            if done % step == 0 or done == total:
                print(f"ccsim {label}: {done}/{total} replications done, {failed} failed", file=sys.stderr)

        yield plain
        return
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("replications, {task.fields[failed]} failed"), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=total, failed=0)

    def update(ok: bool) -> None:
        nonlocal failed
        failed += 0 if ok else 1
        bar.update(task, advance=1, failed=failed)

    with bar:
        yield update
