"""A rich progress bar on stderr with items/s and cache hits (the library's, not the CLI's)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator


class Progress:
    """``advance(n, cached=...)``; shows done/total, items/s and cache hits; silent when disabled."""

    def __init__(self, total: int, description: str, enabled: bool = True, unit: str = "items"):
        self.total = total
        self.done = 0
        self.cached = 0
        self.failed = 0
        self.unit = unit
        self.t0 = time.perf_counter()
        self._bar = None
        self._task = None
        if enabled and total > 0:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("cache hits {task.fields[hits]}"),
                TextColumn("failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=not sys.stderr.isatty(),
            )
            self._task = self._bar.add_task(description, total=total, rate="", hits=0, failed=0)

    def advance(self, n: int = 1, cached: int = 0, failed: int = 0) -> None:
        self.done += n
        self.cached += cached
        self.failed += failed
        if self._bar is not None:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self._bar.update(
                self._task, advance=n, rate=f"{self.done / dt:.1f} {self.unit}/s", hits=self.cached, failed=self.failed
            )

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.t0, 1e-9)


@contextlib.contextmanager
def progress(total: int, description: str, enabled: bool = True, unit: str = "items") -> Iterator[Progress]:
    p = Progress(total, description, enabled, unit)
    if p._bar is None:
        yield p
        return
    with p._bar:
        yield p
