"""Checks of ``eval``'s option values, done before any model is loaded or file written.

(Output paths are checked by :func:`temacli.artifacts.check_output`.)

Every refusal is a :class:`~temacli.errors.TemacliError` with one line: the flag and its value, the
allowed range (the same range ``temacli eval --help`` shows), and what to do.
"""

from __future__ import annotations

import numbers
from typing import Sequence

from temacli.errors import TemacliError, check_range

BATCH_RANGE = (1, 65536)
CHUNK_RANGE = (1, 16_777_216)
COLD_RANGE = (0, 1_000_000_000)
MAX_K = 1000  # largest cutoff k of --ks (the sampled protocol ranks among 1,000 items)
PROTOCOLS = ("sampled", "full")
EVAL_SPLITS = ("valid", "test")


def check_int(flag: str, value, lo: int, hi: int) -> int:
    """``value`` is an integer in ``lo..hi`` (inclusive), else one line naming the flag and the range
    (:func:`temacli.errors.check_range`, the message every command uses)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TemacliError(f"{flag} {value!r}: must be an integer between {lo} and {hi}")
    check_range(flag, int(value), lo, hi)
    return int(value)


def check_eval_sizes(batch_size: int, chunk_size: int, cold_threshold: int | None = None) -> None:
    check_int("--batch-size", batch_size, *BATCH_RANGE)
    check_int("--chunk-size", chunk_size, *CHUNK_RANGE)
    if cold_threshold is not None:
        check_int("--cold-threshold", cold_threshold, *COLD_RANGE)


def parse_ks(text: str | Sequence[int], flag: str = "--ks") -> tuple[int, ...]:
    """``"1,3,5,10"`` -> (1, 3, 5, 10): distinct integers from 1 to MAX_K, sorted; anything else is refused."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    parts = [p for p in parts if p]
    try:
        ks = [int(p) for p in parts]
    except ValueError:
        ks = []
    if not ks or any(k < 1 or k > MAX_K for k in ks):
        shown = text if isinstance(text, str) else ",".join(parts)
        raise TemacliError(f"{flag} {shown}: give comma-separated integers between 1 and {MAX_K}, e.g. {flag} 1,3,5,10")
    return tuple(sorted(set(ks)))


def check_eval_options(split: str, protocol: str, batch_size: int, chunk_size: int, cold_threshold: int,
                       ks=None):
    """Every ``eval`` option value, before any model or dataset is opened; returns the parsed ``ks``."""
    if protocol not in PROTOCOLS:
        raise TemacliError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if split not in EVAL_SPLITS:
        raise TemacliError(f"cannot evaluate on split '{split}'; choose one of {', '.join(EVAL_SPLITS)}")
    check_eval_sizes(batch_size, chunk_size, cold_threshold)
    return parse_ks(ks) if ks is not None else None


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (spelling only; whether CUDA is there is checked on loading)."""
    d = str(device).strip()
    if d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit()):
        return d
    raise TemacliError(f"--device {device}: choose auto, cpu, cuda or cuda:N")
