"""Metric functions against hand-computed ranks: ties, rank 1, ranks beyond the cutoff, NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from temacli.evaluation.metrics import hr_at, mrr, ndcg_at, rank_of_target, summarize, summarize_by_domain


def test_rank_counts_strictly_higher_so_ties_favour_the_target():
    target = np.array([0.5, 0.5, 0.9, 0.1])
    cands = np.array([
        [0.1, 0.2, 0.3],  # nothing higher -> rank 1
        [0.5, 0.5, 0.6],  # two ties, one higher -> rank 2
        [0.9, 0.9, 0.9],  # all tie -> rank 1
        [0.2, 0.3, 0.4],  # all higher -> rank 4
    ])
    assert rank_of_target(target, cands).tolist() == [1, 2, 1, 4]


def test_rank_with_nan_scores():
    target = np.array([np.nan, 0.5])
    cands = np.array([[0.1, 0.2], [np.nan, 0.7]])
    # a NaN target ranks last; a NaN candidate never beats the target
    assert rank_of_target(target, cands).tolist() == [3, 2]


def test_rank_rejects_bad_shapes():
    with pytest.raises(ValueError):
        rank_of_target(np.zeros(3), np.zeros((2, 5)))


def test_metrics_by_hand():
    ranks = np.array([1, 2, 5, 6, 10, 11, 1000])
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 6 + 1 / 10 + 1 / 11 + 1 / 1000) / 7)
    # NDCG@5: rank 1 -> 1, rank 2 -> 1/log2(3), rank 5 -> 1/log2(6); 6 and beyond -> 0
    assert ndcg_at(ranks, 5) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 7)
    # NDCG@10 adds rank 6 (1/log2 7) and rank 10 (1/log2 11); rank 11 is beyond the cutoff
    assert ndcg_at(ranks, 10) == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(7) + 1 / math.log2(11)) / 7
    )
    assert hr_at(ranks, 1) == pytest.approx(1 / 7)
    assert hr_at(ranks, 5) == pytest.approx(3 / 7)
    assert hr_at(ranks, 10) == pytest.approx(5 / 7)


def test_rank_one_everywhere_gives_perfect_scores():
    s = summarize(np.ones(4, dtype=np.int64))
    assert s == {"n": 4, "MRR": 1.0, "NDCG@5": 1.0, "NDCG@10": 1.0, "HR@1": 1.0, "HR@5": 1.0, "HR@10": 1.0}


def test_empty_group_is_nan_with_count_zero():
    s = summarize(np.array([], dtype=np.int64))
    assert s["n"] == 0 and math.isnan(s["MRR"]) and math.isnan(s["HR@10"])


def test_summarize_by_domain_counts_and_splits():
    ranks = np.array([1, 3, 20, 2])
    doms = np.array([0, 1, 1, 0])
    out = summarize_by_domain(ranks, doms, ("food", "kitchen"))
    assert out["food"]["n"] == 2 and out["kitchen"]["n"] == 2 and out["all"]["n"] == 4
    assert out["food"]["MRR"] == pytest.approx((1 + 1 / 2) / 2)
    assert out["kitchen"]["HR@5"] == pytest.approx(0.5)
    assert out["all"]["HR@1"] == pytest.approx(0.25)
