"""Tag representations (Table V): the ONE implementation shared by ``tags match`` and ``train``.

Input: long (item, tag, weight) rows, where weight is any positive score or weight of the pair
(relevance 1-100 from ``tags match``, or the weights of an item_tags.parquet). Output: the same long
form (int64 item, int64 tag, float32 weight), sorted by item, then weight descending, then tag, where
every tagged item's weights sum to 1:

* ``weighted``: w / sum(w) over the item's rows (the paper's weighted multi-hot, Eq. 3);
* ``multihot``: 1/k for each of the item's k tags (unweighted multi-hot);
* ``onehot``: only the item's top-weight tag (ties: the lower tag index), weight 1.

A row with a weight that is not a finite positive number is an error, never dropped silently; so is a
pair (item, tag) given twice.
"""

from __future__ import annotations

import numpy as np

from temacli.errors import TemacliError

REPRESENTATIONS = ("weighted", "multihot", "onehot")


def represent(item: np.ndarray, tag: np.ndarray, weight: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item, tag, weight) rows in representation ``how``; each tagged item's weights sum to 1."""
    if how not in REPRESENTATIONS:
        raise TemacliError(f"tag representation '{how}' is unknown; choose {', '.join(REPRESENTATIONS)}")
    item = np.asarray(item)
    tag = np.asarray(tag)
    weight = np.asarray(weight)
    if not (item.ndim == tag.ndim == weight.ndim == 1 and item.size == tag.size == weight.size):
        raise TemacliError(
            f"tag representation: item, tag and weight must be 1-D arrays of one length "
            f"(got {item.shape}, {tag.shape}, {weight.shape})")
    if item.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    for name, a in (("item", item), ("tag", tag)):
        if not np.issubdtype(a.dtype, np.integer):
            if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.rint(a))):
                raise TemacliError(f"tag representation: {name} indices must be integers (got {a.dtype})")
        if a.min() < 0:
            r = int(np.argmax(a < 0))
            raise TemacliError(f"tag representation: row {r} has a negative {name} index ({a[r]}); "
                               "rebuild the item tags with `temacli tags match`")
    item = item.astype(np.int64)
    tag = tag.astype(np.int64)
    w = weight.astype(np.float64)
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        r = int(np.argmax(bad))
        raise TemacliError(
            f"tag representation: row {r} (item {item[r]}, tag {tag[r]}) has weight {weight[r]!r}; "
            "weights must be finite and > 0; rebuild the item tags with `temacli tags match`")
    order = np.lexsort((tag, -w, item))  # per item: highest weight first, ties by lower tag index
    item, tag, w = item[order], tag[order], w[order]
    pair_order = np.lexsort((tag, item))
    ip, tp = item[pair_order], tag[pair_order]
    dup = (ip[1:] == ip[:-1]) & (tp[1:] == tp[:-1])
    if dup.any():
        r = int(np.argmax(dup))
        raise TemacliError(f"tag representation: the pair (item {ip[r]}, tag {tp[r]}) is given twice; "
                           "rebuild the item tags with `temacli tags match`")
    first = np.ones(item.size, dtype=bool)
    first[1:] = item[1:] != item[:-1]
    if how == "onehot":
        return item[first], tag[first], np.ones(int(first.sum()), np.float32)
    group = np.cumsum(first) - 1  # 0..n_tagged-1 per row
    if how == "multihot":
        counts = np.bincount(group)
        out = 1.0 / counts[group]
    else:
        sums = np.bincount(group, weights=w)
        out = w / sums[group]
    return item, tag, out.astype(np.float32)
