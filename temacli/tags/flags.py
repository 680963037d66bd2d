"""Flag checks of the tag stages, run before any work or file: one line with the allowed range."""

from __future__ import annotations

import math
import re

from temacli.errors import TemacliError


def in_range(flag: str, value, lo=None, hi=None) -> None:
    """``--runs 0: must be between 1 and 100``; NaN and infinity are refused too."""
    rng = (f" between {lo} and {hi}" if lo is not None and hi is not None
           else f" at least {lo}" if lo is not None else f" at most {hi}" if hi is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TemacliError(f"{flag} {value!r}: must be a number{rng}")
    if isinstance(value, float) and not math.isfinite(value):
        raise TemacliError(f"{flag} {value}: must be a finite number{rng}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise TemacliError(f"{flag} {value}: must be{rng}")


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``i/n`` with 0 <= i < n <= 10000; None = the whole (0/1)."""
    if shard is None:
        return (0, 1)
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not m or not 1 <= int(m.group(2)) <= 10000 or int(m.group(1)) >= int(m.group(2)):
        raise TemacliError(f"--shard '{shard}' must be i/n with 0 <= i < n <= 10000, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))
