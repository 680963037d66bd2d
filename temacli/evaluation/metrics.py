"""Ranking metrics as pure functions of ranks (NumPy only), explicit about their protocol.

A *rank* is 1-based: ``rank = 1 + (number of candidates scoring strictly higher than the target)``,
so ties favour the target, as in C2DSR. From ranks:

* MRR      = mean(1 / rank), no cutoff
* NDCG@k   = mean(1 / log2(rank + 1) if rank <= k else 0)   (one relevant item, so IDCG = 1)
* HR@k     = mean(rank <= k)

Cutoffs: by default NDCG@5/10 and HR@1/5/10 (the paper's tables); with ``ks`` (``eval --ks``)
NDCG@k and HR@k for every k given. MRR is always there. ``LLMCDSR_KS`` are LLMCDSR's cutoffs.

Diagnostics (:func:`diagnostics_by_domain`): per domain, how many instances have a target that
ties with at least one candidate, and how many candidate scores were NaN.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from temacli.evaluation.checks import MAX_K, parse_ks  # noqa: F401  (parse_ks kept importable here)

DEFAULT_KS = (1, 5, 10)
NDCG_KS = (5, 10)
LLMCDSR_KS = (1, 3, 5, 10)
TIE_WARN_SHARE = 0.01  # warn when more than 1% of a domain's instances have a tied target


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


def metric_names(ks: Sequence[int] | None = None) -> tuple[str, ...]:
    """The metric keys :func:`summarize` writes, in table order (``n`` left out)."""
    ndcg, hr = (NDCG_KS, DEFAULT_KS) if ks is None else (tuple(ks), tuple(ks))
    return ("MRR", *(f"NDCG@{k}" for k in ndcg), *(f"HR@{k}" for k in hr))


def summarize(
    ranks: np.ndarray, ndcg_ks: Iterable[int] = NDCG_KS, hr_ks: Iterable[int] = DEFAULT_KS,
    *, ks: Sequence[int] | None = None,
) -> dict:
    """All metrics of one group of instances, with its count ``n``.

    ``ks`` (when given) replaces both cutoff lists: NDCG@k and HR@k for every k in ``ks``.
    """
    if ks is not None:
        ndcg_ks = hr_ks = tuple(ks)
    r = np.asarray(ranks)
    out: dict = {"n": int(r.size), "MRR": mrr(r)}
    for k in ndcg_ks:
        out[f"NDCG@{k}"] = ndcg_at(r, k)
    for k in hr_ks:
        out[f"HR@{k}"] = hr_at(r, k)
    return out


def summarize_by_domain(
    ranks: np.ndarray, domains: np.ndarray, names: Mapping[int, str] | tuple[str, str],
    *, ks: Sequence[int] | None = None,
) -> dict:
    """Metrics per target domain (``domains[i]`` is 0 or 1), plus ``all`` over every instance.

    ``ks``: cutoffs as in :func:`summarize` (default: NDCG@5/10, HR@1/5/10).
    """
    ranks = np.asarray(ranks)
    domains = np.asarray(domains)
    if not isinstance(names, Mapping):
        names = dict(enumerate(names))
    out = {names[d]: summarize(ranks[domains == d], ks=ks) for d in sorted(names)}
    out["all"] = summarize(ranks, ks=ks)
    return out


def _diagnostics(ties: np.ndarray, nan_candidates: np.ndarray, nan_target: np.ndarray) -> dict:
    n = int(ties.size)
    tied = int((ties > 0).sum())
    return {
        "n": n,
        "tied_targets": tied,
        "tied_share": tied / n if n else float("nan"),
        "nan_candidate_scores": int(nan_candidates.sum()),
        "instances_with_nan_candidates": int((nan_candidates > 0).sum()),
        "nan_target_scores": int(np.asarray(nan_target).sum()),
    }


def diagnostics_by_domain(
    ties: np.ndarray, nan_candidates: np.ndarray, nan_target: np.ndarray, domains: np.ndarray,
    names: Mapping[int, str] | tuple[str, str],
) -> dict:
    """Per target domain and ``all``: instances whose target ties with at least one candidate
    (``tied_targets``, ``tied_share``) and NaN scores (candidates, and instances with any; targets)."""
    ties, nan_candidates = np.asarray(ties), np.asarray(nan_candidates)
    nan_target, domains = np.asarray(nan_target, dtype=bool), np.asarray(domains)
    if not isinstance(names, Mapping):
        names = dict(enumerate(names))
    out = {names[d]: _diagnostics(ties[domains == d], nan_candidates[domains == d], nan_target[domains == d])
           for d in sorted(names)}
    out["all"] = _diagnostics(ties, nan_candidates, nan_target)
    return out


def tie_warning(diagnostics: Mapping[str, Mapping], domains: Sequence[str], share: float = TIE_WARN_SHARE) -> str | None:
    """One warning line when more than ``share`` of some domain's instances have a tied target."""
    bad = [(d, diagnostics[d]) for d in domains
           if diagnostics[d]["n"] and diagnostics[d]["tied_share"] is not None and diagnostics[d]["tied_share"] > share]
    if not bad:
        return None
    shown = " and ".join(f"{100 * g['tied_share']:.1f}% of {d} instances ({g['tied_targets']} of {g['n']})"
                         for d, g in bad)
    return (f"warning: the target ties with at least one candidate in {shown}; ties favour the target, so the "
            f"metrics overstate the model (one that scores every item alike gets MRR 1.0)")
