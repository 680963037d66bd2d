"""Errors meant for people.

``TemacliError`` is bad input or usage: the CLI prints its message as one line and exits with code 2.
Any other exception is an internal failure (exit code 1).
"""


class TemacliError(Exception):
    """Bad input: one clear line saying what is wrong, where, and what to do."""

    exit_code = 2


class Interrupted(Exception):
    """Raised after a stage saved its state on Ctrl-C; the CLI exits with code 130."""

    exit_code = 130


def check_range(flag: str, value, lo=None, hi=None, what: str = "") -> None:
    """Refuse a flag value outside ``[lo, hi]`` with one line naming the allowed range.

    ``check_range("--batch-size", 0, 1, 65536)`` raises ``--batch-size 0: must be between 1 and 65536``.
    NaN and infinity are refused for float flags. Call it before any work or any file is written.
    """
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TemacliError(f"{flag} {value!r}: must be a number{_range_text(lo, hi)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise TemacliError(f"{flag} {value}: must be a finite number{_range_text(lo, hi)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        extra = f" ({what})" if what else ""
        raise TemacliError(f"{flag} {value}: must be{_range_text(lo, hi)}{extra}")


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" between {lo} and {hi}"
    if lo is not None:
        return f" at least {lo}"
    if hi is not None:
        return f" at most {hi}"
    return ""
