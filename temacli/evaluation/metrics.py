"""Ranking metrics as pure functions of ranks (NumPy only), explicit about their protocol.

A *rank* is 1-based: ``rank = 1 + (number of candidates scoring strictly higher than the target)``,
so ties favour the target, as in C2DSR. From ranks:

* MRR      = mean(1 / rank), no cutoff
* NDCG@k   = mean(1 / log2(rank + 1) if rank <= k else 0)   (one relevant item, so IDCG = 1)
* HR@k     = mean(rank <= k)
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

DEFAULT_KS = (1, 5, 10)
NDCG_KS = (5, 10)


def rank_of_target(target_scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """Ranks of targets among candidates: 1 + #candidates scoring strictly higher.

    ``target_scores``: (n,); ``candidate_scores``: (n, c) for the negatives (the target excluded).
    NaN scores count as the worst possible (a NaN target ranks last, NaN candidates never beat it).
    """
    t = np.asarray(target_scores, dtype=np.float64)
    c = np.asarray(candidate_scores, dtype=np.float64)
    if c.ndim != 2 or t.shape[0] != c.shape[0]:
        raise ValueError(f"shapes do not fit: target {t.shape}, candidates {c.shape}")
    higher = (c > t[:, None]).sum(axis=1)
    nan_target = np.isnan(t)
    higher = np.where(nan_target, c.shape[1], higher)
    return (1 + higher).astype(np.int64)


def mrr(ranks: np.ndarray) -> float:
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(1.0 / r)) if r.size else float("nan")


def ndcg_at(ranks: np.ndarray, k: int) -> float:
    r = np.asarray(ranks, dtype=np.float64)
    if not r.size:
        return float("nan")
    gains = np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)
    return float(np.mean(gains))


def hr_at(ranks: np.ndarray, k: int) -> float:
    r = np.asarray(ranks)
    return float(np.mean(r <= k)) if r.size else float("nan")


def summarize(ranks: np.ndarray, ndcg_ks: Iterable[int] = NDCG_KS, hr_ks: Iterable[int] = DEFAULT_KS) -> dict:
    """All metrics of one group of instances, with its count ``n``."""
    r = np.asarray(ranks)
    out: dict = {"n": int(r.size), "MRR": mrr(r)}
    for k in ndcg_ks:
        out[f"NDCG@{k}"] = ndcg_at(r, k)
    for k in hr_ks:
        out[f"HR@{k}"] = hr_at(r, k)
    return out


def summarize_by_domain(
    ranks: np.ndarray, domains: np.ndarray, names: Mapping[int, str] | tuple[str, str]
) -> dict:
    """Metrics per target domain (``domains[i]`` is 0 or 1), plus ``all`` over every instance."""
    ranks = np.asarray(ranks)
    domains = np.asarray(domains)
    if not isinstance(names, Mapping):
        names = dict(enumerate(names))
    out = {names[d]: summarize(ranks[domains == d]) for d in sorted(names)}
    out["all"] = summarize(ranks)
    return out
