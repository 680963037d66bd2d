"""The one progress protocol of the library: a stage reports *events*, the caller decides how they look.

A library function that does long work takes ``progress: Progress = SILENT`` and calls

    progress.start(total, "scoring items")    # a new phase; total None when unknown
    progress.advance(n, cached=3, failed=0)   # n more units done; named counters add up per phase
    progress.message("epoch 3: valid MRR 0.41")  # one line of news
    progress.finish()                         # the phase is over

``SILENT`` (the default) ignores every event, so the library is quiet from Python and in tests.
The CLI owns the one drawing implementation (``temacli.cli._console.RichProgress``): rich bars with
an ETA on a terminal, plain one-line-per-event output when stderr is not a terminal.
"""

from __future__ import annotations


class Progress:
    """Receives progress events; this base class ignores them all (the silent default)."""

    def start(self, total: int | None, description: str, unit: str = "items") -> None:
        """A new phase of ``total`` units (None when unknown) begins."""

    def advance(self, n: int = 1, **counts: int) -> None:
        """``n`` more units of the current phase are done; ``counts`` (cached=, failed=, ...) add up."""

    def message(self, text: str) -> None:
        """One line of news (an epoch's summary, a note)."""

    def finish(self) -> None:
        """The current phase is over."""


class Recorder(Progress):
    """Keeps every event as a tuple, for tests and for callers that want to inspect what happened."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, total, description, unit="items"):
        self.events.append(("start", total, description))

    def advance(self, n=1, **counts):
        self.events.append(("advance", n, dict(counts)))

    def message(self, text):
        self.events.append(("message", text))

    def finish(self):
        self.events.append(("finish",))


SILENT = Progress()
