"""The one ranking core of ``eval`` and ``recommend``: a user state against a domain's items, in chunks.

Both commands encode each user's sequence once (:func:`left_pad` + ``scorer.encode``) and then
score the items of one domain ``[lo, hi)`` ``chunk_size`` at a time with ``scorer.score_items``
(:func:`rank_domain`), so memory stays at ``batch x chunk_size`` scores whatever the catalogue size.
Per chunk, the core

* masks each row's *excluded* items (``exclude``: (row, item) pairs, e.g. the user's history,
  from :func:`item_pairs`): they are neither candidates for the target's rank nor recommendations,
* ranks each row's *target* (``targets[j]``, or ``NO_TARGET``) against the remaining items other
  than the target itself: ``higher`` counts the items scoring strictly higher (the rank is
  ``higher + 1``: ties favour the target, as C2DSR's protocol says), and counts the ties and the
  NaN scores among the candidates (diagnostics: a model that scores everything alike would
  otherwise rank every target first),
* keeps a running top-``k`` of the remaining items (the target included) for recommendations.

The batch's targets are scored in the same ``score_items`` call as each chunk, so a target is
always compared with scores of the same computation. :func:`rank_against` is the same count for
per-row candidate lists (the sampled protocol's stored negatives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from temacli.evaluation.metrics import rank_of_target

NO_TARGET = -1
DEFAULT_CHUNK = 32768


def left_pad(histories: Sequence[np.ndarray], max_len: int, pad: int) -> np.ndarray:
    """Left-padded int64 matrix (len(histories), max_len) of each history's last ``max_len`` items."""
    out = np.full((len(histories), int(max_len)), pad, dtype=np.int64)
    for j, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)[-int(max_len):] if max_len else np.empty(0, np.int64)
        if h.size:
            out[j, out.shape[1] - h.size :] = h
    return out


def item_pairs(
    histories: Sequence[np.ndarray], lo: int, hi: int, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of each history's distinct items inside ``[lo, hi)``.

    With ``keep`` (one item per row), that row's ``keep[j]`` is left out of the pairs (eval keeps
    the target a candidate of its own rank even when it also occurs in the history).
    """
    rr, ii = [], []
    for j, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        m = (h >= lo) & (h < hi)
        if keep is not None:
            m &= h != int(keep[j])
        u = np.unique(h[m])
        rr.append(np.full(u.size, j, dtype=np.int64))
        ii.append(u)
    if not rr:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(rr), np.concatenate(ii).astype(np.int64)


@dataclass
class DomainRanking:
    """What :func:`rank_domain` found for each row of a batch (arrays of length ``b``)."""

    higher: np.ndarray  # int64: candidates scoring strictly higher than the target (rank = higher + 1)
    ties: np.ndarray  # int64: candidates scoring exactly the target's score
    nan_candidates: np.ndarray  # int64: candidates scoring NaN (they never beat the target)
    target_score: np.ndarray  # float32: the target's score (NaN for a row without target)
    n_candidates: np.ndarray  # int64: items the target was ranked against
    has_target: np.ndarray  # bool
    top_items: np.ndarray | None = None  # int64 (b, k), best first, ties by lower item index
    top_scores: np.ndarray | None = None  # float32 (b, k); -inf where fewer than k items were left

    @property
    def ranks(self) -> np.ndarray:
        """1-based ranks; a NaN target ranks last (after every candidate)."""
        nan = np.isnan(self.target_score)
        return np.where(nan, self.n_candidates, self.higher) + 1


def _top_columns(sc: np.ndarray, top: int) -> np.ndarray:
    """Per row, the columns of the ``top`` highest scores, ties broken by the lower column (as a full
    sort by (-score, column) would, without sorting the whole row). NaN counts as -inf."""
    b, m = sc.shape
    if top >= m:
        return np.tile(np.arange(m), (b, 1))
    s = np.where(np.isnan(sc), -np.inf, sc)
    kth = np.partition(s, m - top, axis=1)[:, m - top]  # the top-th highest score of each row
    above = s > kth[:, None]
    need = top - above.sum(axis=1)  # how many of the items scoring exactly kth are taken
    tied = s == kth[:, None]
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need[:, None]))
    return np.nonzero(chosen)[1].reshape(b, top)  # exactly ``top`` per row, in column order


def rank_domain(
    scorer: Any,
    state: Any,
    lo: int,
    hi: int,
    targets: np.ndarray | None = None,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    top_k: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
) -> DomainRanking:
    """Score domain ``[lo, hi)`` for a batch of encoded rows; rank targets and/or keep the top ``k``.

    ``state``: ``scorer.encode`` of the batch (``b`` rows). ``targets``: (b,) item indices, or
    ``NO_TARGET`` for a row without target (or ``None`` for no targets at all); a target must lie
    in ``[lo, hi)``. ``exclude``: (rows, items) pairs masked out of the candidates and of the
    top-k (a row's target stays its own rank's reference even when it is among its pairs, but is
    then not a competitor either way). ``top_k`` > 0 keeps the best ``top_k`` non-excluded items.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    exc_r, exc_i = exclude if exclude is not None else (np.empty(0, np.int64), np.empty(0, np.int64))
    exc_r, exc_i = np.asarray(exc_r, np.int64), np.asarray(exc_i, np.int64)
    with_targets = targets is not None
    if with_targets:
        targets = np.asarray(targets, dtype=np.int64)
        has = targets != NO_TARGET
        out = has & ((targets < lo) | (targets >= hi))
        if out.any():
            raise ValueError(f"target {int(targets[out][0])} is outside the domain's items [{lo}, {hi})")
        probe = np.where(has, targets, lo)  # rows without target score a stand-in, ignored below
    kk = max(0, min(int(top_k), hi - lo))
    b = len(targets) if with_targets else None
    higher = ties = nan_c = t_score = best_s = best_i = target_excluded = None
    for c0 in range(lo, hi, chunk_size):
        c1 = min(c0 + chunk_size, hi)
        m = c1 - c0
        items = np.arange(c0, c1, dtype=np.int64)
        s = np.asarray(scorer.score_items(state, np.concatenate([items, probe]) if with_targets else items),
                       dtype=np.float32)
        if higher is None:  # first chunk: now the batch size is known
            b = s.shape[0]
            if not with_targets:
                targets, has = np.full(b, NO_TARGET, np.int64), np.zeros(b, bool)
            higher, ties, nan_c = np.zeros(b, np.int64), np.zeros(b, np.int64), np.zeros(b, np.int64)
            t_score = np.full(b, np.nan, np.float32)
            best_s, best_i = np.full((b, 0), -np.inf, np.float32), np.zeros((b, 0), np.int64)
            target_excluded = np.zeros(b, bool)
            if exc_r.size:
                hit = has[exc_r] & (exc_i == targets[exc_r])
                target_excluded[exc_r[hit]] = True
        ar = np.arange(b)
        sc = s[:, :m]
        if not sc.flags.writeable:
            sc = sc.copy()
        masked = np.zeros(b, np.int64)  # positions set to -inf in this chunk: no candidates
        if exc_r.size:
            k = (exc_i >= c0) & (exc_i < c1)
            if k.any():
                sc[exc_r[k], exc_i[k] - c0] = -np.inf
                masked += np.bincount(exc_r[k], minlength=b)
        if kk:  # running top-k: merge this chunk's best with the best so far
            cand = _top_columns(sc, min(kk, m))
            cs = np.take_along_axis(sc, cand, axis=1)
            all_s = np.concatenate([best_s, cs], axis=1)
            all_i = np.concatenate([best_i, cand + c0], axis=1)
            order = np.lexsort((all_i, -all_s), axis=1)[:, :kk]
            best_s = np.take_along_axis(all_s, order, axis=1)
            best_i = np.take_along_axis(all_i, order, axis=1)
        if not has.any():
            continue
        t = s[ar, m + ar]
        t_score = np.where(has & np.isnan(t_score), t, t_score).astype(np.float32)
        inside = has & (targets >= c0) & (targets < c1)
        if inside.any():  # the target is not its own competitor
            sc[ar[inside], targets[inside] - c0] = -np.inf
            masked += inside & ~target_excluded
        tcol = t[:, None]
        higher += np.count_nonzero(sc > tcol, axis=1)
        eq = np.count_nonzero(sc == tcol, axis=1)
        ninf = np.isneginf(t)
        if ninf.any():  # a -inf target equals the masked positions, which are no candidates
            eq = eq - np.where(ninf, masked, 0)
        ties += eq
        # NaN count: a row sum is NaN only when the row holds a NaN (or +inf beside a masked -inf),
        # so the exact count runs on those rows only
        maybe = np.isnan(sc.sum(axis=1))
        if maybe.any():
            nan_c[maybe] += np.count_nonzero(np.isnan(sc[maybe]), axis=1)
    if higher is None:  # an empty domain: nothing was scored
        b = b or 0
        targets = targets if with_targets else np.full(b, NO_TARGET, np.int64)
        has = targets != NO_TARGET
        higher, ties, nan_c = np.zeros(b, np.int64), np.zeros(b, np.int64), np.zeros(b, np.int64)
        t_score = np.full(b, np.nan, np.float32)
        best_s, best_i = np.full((b, 0), -np.inf, np.float32), np.zeros((b, 0), np.int64)
    # candidates: the domain's items, less the target itself, less the excluded items other than the target
    excluded = np.zeros(b, np.int64)
    if exc_r.size:
        other = ~(has[exc_r] & (exc_i == targets[exc_r]))
        excluded = np.bincount(exc_r[other], minlength=b).astype(np.int64)
    n_cand = (hi - lo) - has.astype(np.int64) - excluded
    zero = np.zeros(b, np.int64)
    return DomainRanking(
        higher=np.where(has, higher, zero), ties=np.where(has, ties, zero),
        nan_candidates=np.where(has, nan_c, zero), target_score=t_score, n_candidates=n_cand,
        has_target=has, top_items=best_i if kk else None, top_scores=best_s if kk else None,
    )


def rank_against(target_scores: np.ndarray, candidate_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row candidate lists: ``(ranks, ties, nan_candidates)``.

    ``ranks`` as :func:`temacli.evaluation.metrics.rank_of_target` (1 + candidates strictly higher;
    a NaN target last); ``ties``: candidates scoring exactly the target's score; ``nan_candidates``:
    candidates scoring NaN.
    """
    t = np.asarray(target_scores, dtype=np.float64)
    c = np.asarray(candidate_scores, dtype=np.float64)
    ranks = rank_of_target(t, c)
    ties = (c == t[:, None]).sum(axis=1).astype(np.int64)
    nan_c = np.isnan(c).sum(axis=1).astype(np.int64)
    return ranks, ties, nan_c
