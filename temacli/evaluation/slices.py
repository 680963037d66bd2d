"""Slices of evaluation instances reported beside the totals.

* ``history``: does the instance's history (what the model sees, before truncation to ``max_len``)
  hold items of **both** domains, or of **one** domain only?
* ``target``: is the target item **cold** (it occurs at most ``cold_threshold`` times in the
  training sequences, ``train.parquet`` history + target) or **warm** (more often)?

Each slice is summarised per target domain (the paper's split) and over all instances, with its
instance count, so a slice's numbers are never read without its size.
"""

from __future__ import annotations

import numpy as np

from temacli.evaluation.metrics import summarize

DEFAULT_COLD_THRESHOLD = 5


def train_item_counts(train_split, n_items: int) -> np.ndarray:
    """How often each item occurs in the training sequences (history and target of every row)."""
    counts = np.bincount(np.asarray(train_split.values, dtype=np.int64), minlength=n_items)
    counts += np.bincount(np.asarray(train_split.target, dtype=np.int64), minlength=n_items)
    return counts[:n_items].astype(np.int64)


def history_domain_counts(split, rows: np.ndarray, n_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the number of domain-X items and of domain-Y items in its history."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = np.diff(split.offsets)
    is_x = (np.asarray(split.values) < n_x).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(is_x)])
    nx_all = cum[split.offsets[1:]] - cum[split.offsets[:-1]]
    nx = nx_all[rows]
    return nx, lengths[rows] - nx


def slice_masks(
    split, rows: np.ndarray, n_x: int, train_counts: np.ndarray, cold_threshold: int = DEFAULT_COLD_THRESHOLD
) -> dict[str, dict[str, np.ndarray]]:
    """Boolean masks (aligned with ``rows``) of every slice, grouped by slicing question."""
    nx, ny = history_domain_counts(split, rows, n_x)
    both = (nx > 0) & (ny > 0)
    tc = train_counts[np.asarray(split.target)[rows].astype(np.int64)]
    cold = tc <= cold_threshold
    return {
        "history": {"both domains": both, "one domain": ~both},
        "target": {f"cold (<={cold_threshold} in train)": cold, f"warm (>{cold_threshold} in train)": ~cold},
    }


def summarize_slices(
    ranks: np.ndarray,
    domains: np.ndarray,
    masks: dict[str, dict[str, np.ndarray]],
    names: tuple[str, str],
    *,
    ks=None,
) -> dict:
    """``{group: {slice: {domain_x: metrics, domain_y: metrics, "all": metrics}}}`` (``ks`` as in ``summarize``)."""
    ranks = np.asarray(ranks)
    domains = np.asarray(domains)
    out: dict = {}
    for group, slices in masks.items():
        out[group] = {}
        for label, m in slices.items():
            entry = {names[d]: summarize(ranks[m & (domains == d)], ks=ks) for d in (0, 1)}
            entry["all"] = summarize(ranks[m], ks=ks)
            out[group][label] = entry
    return out
