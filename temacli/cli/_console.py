"""Shared rich consoles for the CLI: ``out`` for results (stdout), ``err`` for messages (stderr)."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def err(message: str) -> None:
    """One line on stderr, without markup interpretation (paths may contain brackets)."""
    err_console.print(message, markup=False, highlight=False, soft_wrap=True, emoji=False)


def info(message: str) -> None:
    err_console.print(message, highlight=False)


class RichProgress:
    """The CLI's one implementation of :class:`temacli.progress.Progress`.

    On a terminal: a rich bar per phase with done/total, rate, named counters, elapsed time and ETA.
    When stderr is not a terminal (scripts, CI logs): plain lines, one at the start and end of each
    phase and at most one every ``every_s`` seconds in between, so logs never wrap or fill with
    carriage returns. ``enabled=False`` (``--quiet``) drops bars and progress lines but keeps messages.
    """

    def __init__(self, enabled: bool = True, console: Console | None = None, every_s: float = 10.0):
        self.enabled = enabled
        self.console = console or err_console
        self.tty = self.console.is_terminal
        self.every_s = every_s
        self._bar = None
        self._task = None
        self._phase: dict | None = None

    # --- the protocol
    def start(self, total, description, unit="items"):
        import time

        self.finish()
        self._phase = {"total": total, "desc": description, "unit": unit, "done": 0, "counts": {},
                       "t0": time.perf_counter(), "last": time.perf_counter()}
        if not self.enabled:
            return
        if self.tty:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, rate="", counts="")
        else:
            self._line(f"{description}: start" + (f" ({total} {unit})" if total is not None else ""))

    def advance(self, n=1, **counts):
        import time

        p = self._phase
        if p is None:
            return
        p["done"] += n
        for k, v in counts.items():
            p["counts"][k] = p["counts"].get(k, 0) + int(v)
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = p["done"] / max(now - p["t0"], 1e-9)
        if self._bar is not None:
            shown = " ".join(f"{k} {v}" for k, v in p["counts"].items())
            self._bar.update(self._task, advance=n, rate=f"{rate:.1f} {p['unit']}/s", counts=shown)
        elif now - p["last"] >= self.every_s:
            p["last"] = now
            self._line(self._status(p, now))

    def message(self, text):
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._line(text)

    def finish(self):
        import time

        p, self._phase = self._phase, None
        if self._bar is not None:
            self._bar.stop()
            self._bar, self._task = None, None
        elif p is not None and self.enabled:
            self._line(self._status(p, time.perf_counter(), done=True))

    # --- plain lines
    def _status(self, p: dict, now: float, done: bool = False) -> str:
        spent = now - p["t0"]
        total = p["total"]
        of = f"/{total}" if total is not None else ""
        parts = [f"{p['desc']}: {p['done']}{of} {p['unit']}", f"{spent:.0f}s"]
        if not done and total and p["done"]:
            parts.append(f"ETA {max(total - p['done'], 0) * spent / p['done']:.0f}s")
        parts += [f"{k} {v}" for k, v in p["counts"].items()]
        return ", ".join(parts) + (" (done)" if done else "")

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
