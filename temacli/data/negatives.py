"""The evaluation negatives: ``n`` items per row from the target's own domain, drawn once from a seed.

The draw is uniform over the target's domain minus the target; options: without replacement (every
row's negatives distinct) and excluding the row's history. Rows are drawn in chunks so that a large
split streams into its NPY file with bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from temacli.data.dataset import N_NEGATIVES
from temacli.errors import TemacliError

CHUNK = 8192


@dataclass
class NegativeSpec:
    """How to draw one split's negatives; drawn while writing, streamed to disk in chunks."""

    target: np.ndarray
    lo: np.ndarray
    size: np.ndarray
    n: int = N_NEGATIVES
    replace: bool = True
    history: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def for_targets(
        cls, target: np.ndarray, n_x: int, n_y: int, n: int = N_NEGATIVES, replace: bool = True,
        history: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> "NegativeSpec":
        """Negatives from each target's own domain (X: ``[0, n_x)``, Y: ``[n_x, n_x + n_y)``)."""
        target = np.asarray(target, dtype=np.int64)
        in_y = target >= n_x
        return cls(target, np.where(in_y, n_x, 0), np.where(in_y, n_y, n_x), n, replace=replace, history=history)

    @classmethod
    def for_split(cls, table: pa.Table, n_x: int, n_y: int, n: int = N_NEGATIVES, replace: bool = True,
                  exclude_history: bool = False) -> "NegativeSpec":
        """The same for a split table (its ``target`` and, to exclude them, ``history`` columns)."""
        history = None
        if exclude_history:
            hist = table.column("history").combine_chunks()
            history = (np.asarray(hist.offsets, dtype=np.int64), np.asarray(hist.values, dtype=np.int64))
        return cls.for_targets(table.column("target").to_numpy(), n_x, n_y, n, replace, history)

    @property
    def rows(self) -> int:
        return int(self.target.shape[0])

    def draw(self, rng: np.random.Generator, sink=None):
        return sample_negatives(
            self.target, self.lo, self.size, self.n, rng, replace=self.replace, history=self.history, sink=sink
        )


def sample_negatives(
    target: np.ndarray,
    lo: np.ndarray,
    size: np.ndarray,
    n: int,
    rng: np.random.Generator,
    replace: bool = True,
    history: tuple[np.ndarray, np.ndarray] | None = None,
    chunk: int = CHUNK,
    sink: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray | None:
    """``n`` negatives per row, uniform over ``[lo, lo+size)`` minus the target (and history if given).

    Vectorised: draws are re-drawn where they hit an excluded item (or repeat one, without
    replacement) until every row is valid. The rule treats every allowed item alike, so without
    replacement each row is a uniform random subset of its allowed items. ``history`` is
    (offsets, values) of each row's history.
    """
    rows = target.shape[0]
    out = np.empty((rows, n), dtype=np.int32) if sink is None else None
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        t = target[start:stop].astype(np.int64)
        l = lo[start:stop].astype(np.int64)
        s = size[start:stop].astype(np.int64)
        free = s - 1
        if history is not None:
            off, vals = history
            hist_keys = _history_keys(off, vals, start, stop, l, s)
        else:
            hist_keys = None
        if (free < n).any() and not replace:
            raise TemacliError(
                f"a domain has only {int(free.min())} items besides the target; "
                f"cannot draw {n} negatives without replacement"
            )
        if (free < 1).any():
            raise TemacliError("a domain has a single item; no negatives can be drawn")
        draw = _draw(rng, t, l, free, (stop - start, n))
        for _ in range(50):
            bad = _invalid(draw, hist_keys, replace)
            if not bad.any():
                break
            r, c = np.nonzero(bad)
            draw[r, c] = _draw(rng, t[r], l[r], free[r], (r.size,))
        else:
            # crowded rows (history covers most of a domain): draw them exactly from what is allowed
            for r in np.flatnonzero(_invalid(draw, hist_keys, replace).any(axis=1)):
                allowed = np.arange(l[r], l[r] + s[r], dtype=np.int64)
                allowed = allowed[allowed != t[r]]
                if hist_keys is not None:
                    allowed = allowed[~np.isin((np.int64(r) << 32) | allowed, hist_keys)]
                if allowed.size == 0 or (not replace and allowed.size < n):
                    raise TemacliError(
                        f"cannot draw {n} negatives for evaluation row {start + r}: its history covers "
                        "almost all of its domain; drop --negatives-exclude-history or allow replacement"
                    )
                draw[r] = rng.choice(allowed, size=n, replace=replace)
        if sink is None:
            out[start:stop] = draw
        else:
            sink(draw.astype(np.int32))
    return out


def _invalid(draw, hist_keys, replace):
    bad = np.zeros(draw.shape, dtype=bool)
    if hist_keys is not None:
        keys = (np.arange(draw.shape[0], dtype=np.int64)[:, None] << 32) | draw
        bad |= np.isin(keys, hist_keys)
    if not replace:
        bad |= _duplicates(draw)
    return bad


def _draw(rng, t, l, free, shape):
    """Uniform over the domain minus the target: draw from free = size-1 slots, skip the target."""
    if len(shape) == 2:
        u = rng.random(shape)
        x = l[:, None] + np.floor(u * free[:, None]).astype(np.int64)
        return x + (x >= t[:, None])
    u = rng.random(shape)
    x = l + np.floor(u * free).astype(np.int64)
    return x + (x >= t)


def _duplicates(draw: np.ndarray) -> np.ndarray:
    """Every repeat of a value within its row after the first (which copy stays does not matter)."""
    order = np.argsort(draw, axis=1, kind="stable")
    s = np.take_along_axis(draw, order, axis=1)
    dup_sorted = np.zeros_like(s, dtype=bool)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    out = np.zeros_like(dup_sorted)
    np.put_along_axis(out, order, dup_sorted, axis=1)
    return out


def _history_keys(off, vals, start, stop, lo, size) -> np.ndarray:
    seg = vals[off[start] : off[stop]].astype(np.int64)
    lens = np.diff(off[start : stop + 1])
    row = np.repeat(np.arange(stop - start, dtype=np.int64), lens)
    in_dom = (seg >= np.repeat(lo, lens)) & (seg < np.repeat(lo + size, lens))
    return np.unique((row[in_dom] << 32) | seg[in_dom])
