"""The ranking core shared by eval and recommend (temacli.evaluation.ranking), against plain loops."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from temacli.cli._json import dumps, print_json
from temacli.evaluation.ranking import NO_TARGET, item_pairs, left_pad, rank_against, rank_domain


class Grid:
    """score(row, item) = table[key(row), item]; rows keyed by the first padded history entry."""

    def __init__(self, table: np.ndarray):
        self.table = table
        self.calls = []

    def score_items(self, keys, items):
        self.calls.append(len(items))
        return self.table[np.asarray(keys)][:, np.asarray(items)]


def brute(table_row, lo, hi, target, excluded, k):
    cands = [i for i in range(lo, hi) if i not in excluded]
    order = sorted(cands, key=lambda i: (-table_row[i], i))[:k]
    if target == NO_TARGET:
        return order, None, None, None, len([i for i in cands])
    t = table_row[target]
    others = [i for i in cands if i != target]
    higher = sum(table_row[i] > t for i in others)
    ties = sum(table_row[i] == t for i in others)
    nan = sum(math.isnan(table_row[i]) for i in others)
    return order, higher, ties, nan, len(others)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_rank_domain_equals_a_plain_loop(chunk):
    rng = np.random.default_rng(0)
    n_items, lo, hi = 40, 10, 33
    table = rng.integers(0, 4, size=(6, n_items)).astype(np.float32)  # 4 levels: many ties
    table[2, 15] = np.nan
    table[3, 20] = -np.inf  # a target scoring -inf ties with nothing masked
    table[3, 11] = -np.inf
    keys = np.arange(6)
    targets = np.array([12, 30, 14, 20, NO_TARGET, 25])
    hists = [np.array([11, 12, 5]), np.array([13, 13, 30]), np.array([15]), np.array([21, 11]),
             np.array([10, 11]), np.array([], dtype=np.int64)]
    exclude = item_pairs(hists, lo, hi)  # every history item, the target too when present
    r = rank_domain(Grid(table), keys, lo, hi, targets=targets, exclude=exclude, top_k=5, chunk_size=chunk)
    for j in range(6):
        excl = {int(v) for v in hists[j] if lo <= v < hi}
        order, higher, ties, nan, n_c = brute(table[j], lo, hi, int(targets[j]), excl, 5)
        assert r.top_items[j].tolist() == order, j  # ties at the cut broken by the lower item, in any chunking
        assert np.array_equal(r.top_scores[j], np.where(np.isnan(table[j, order]), -np.inf, table[j, order])) or \
            np.isnan(table[j, order]).any()
        if targets[j] == NO_TARGET:
            assert not r.has_target[j]
            continue
        assert (r.higher[j], r.ties[j], r.nan_candidates[j]) == (higher, ties, nan), j
        assert r.n_candidates[j] == n_c, j
        assert r.ranks[j] == (n_c + 1 if math.isnan(table[j, targets[j]]) else higher + 1)
    assert r.ties[3] == 0  # -inf target: the -inf item 11 is excluded (history), so no tie


def test_rank_domain_chunks_are_bounded_and_targets_ride_along():
    table = np.arange(5 * 50, dtype=np.float32).reshape(5, 50)
    g = Grid(table)
    rank_domain(g, np.arange(5), 0, 50, targets=np.array([1, 2, 3, 4, 5]), chunk_size=8)
    assert max(g.calls) == 8 + 5 and len(g.calls) == math.ceil(50 / 8)
    g2 = Grid(table)
    r = rank_domain(g2, np.arange(5), 0, 50, top_k=3, chunk_size=8)  # no targets: recommend's use
    assert max(g2.calls) == 8 and r.top_items[0].tolist() == [49, 48, 47]
    with pytest.raises(ValueError, match="outside"):
        rank_domain(Grid(table), np.arange(1), 10, 20, targets=np.array([3]))


def test_item_pairs_keep_and_left_pad():
    rows, items = item_pairs([np.array([1, 5, 5, 9]), np.array([5, 2])], 2, 9, keep=np.array([5, 3]))
    assert list(zip(rows.tolist(), items.tolist())) == [(1, 2), (1, 5)]
    m = left_pad([np.array([1, 2, 3]), np.array([], np.int64)], 2, 99)
    assert m.tolist() == [[2, 3], [99, 99]] and m.dtype == np.int64


def test_rank_against_counts_ties_and_nans():
    t = np.array([1.0, np.nan, 2.0])
    c = np.array([[1.0, 2.0, np.nan], [1.0, 1.0, 1.0], [2.0, 2.0, 0.0]])
    ranks, ties, nan = rank_against(t, c)
    assert ranks.tolist() == [2, 4, 1] and ties.tolist() == [1, 0, 2] and nan.tolist() == [1, 0, 0]


def test_json_printer_is_standard_json():
    buf = io.StringIO()
    print_json({"a": float("nan"), "b": np.float32(0.5), "c": np.arange(2), "d": (1, np.int64(2)),
                "e": float("inf"), "f": np.bool_(True), "g": "é"}, file=buf)
    text = buf.getvalue()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": 0.5, "c": [0, 1], "d": [1, 2], "e": None, "f": True, "g": "é"}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        dumps({"x": object()})
