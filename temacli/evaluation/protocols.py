"""Evaluation protocols over a :class:`Scorer` (any trained model: TEMA, SASRec, GRU4Rec).

The sampled protocol ranks each instance's target among the dataset's *stored* negatives
(``candidates_<split>.npy``: 999 per row, drawn once by ``data split``), so every model is evaluated
on the same candidates. Each user's sequence is encoded once; the target and its negatives are then
scored against that state (never one forward pass per candidate).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from temacli.evaluation.metrics import rank_of_target


class Scorer(Protocol):
    """What a trained model offers evaluation (see ``temacli.model.api``).

    ``encode`` takes left-padded histories (B, max_len) int64 (padding = ``pad``) and the domain
    (0 = X, 1 = Y) whose items are to be ranked, and returns an opaque state. ``score_candidates``
    scores per-row items (B, C) -> (B, C); ``score_items`` scores one shared list of items (M,) for
    every row -> (B, M). Higher is better. Scores are Eq. 16 for TEMA.
    """

    max_len: int
    pad: int

    def encode(self, histories: np.ndarray, target_domain: np.ndarray) -> Any: ...

    def score_candidates(self, state: Any, items: np.ndarray) -> np.ndarray: ...

    def score_items(self, state: Any, items: np.ndarray) -> np.ndarray: ...


def sampled_ranks(
    scorer: Scorer,
    split,
    candidates: np.ndarray,
    batch_size: int = 512,
    rows: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    nan_rows: list | None = None,
) -> np.ndarray:
    """Rank of each row's target among its stored negatives (1 = best; ties favour the target).

    ``split`` is a :class:`temacli.data.dataset.Split`; ``candidates`` its (rows, 999) negatives.
    Returns int64 ranks aligned with ``rows`` (all rows by default). When ``nan_rows`` is a list,
    the split rows whose target scored NaN (ranked last) are appended to it.
    """
    n = len(split)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    ranks = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        sel = rows[start : start + batch_size]
        hist = split.padded(sel, scorer.max_len, scorer.pad)
        dom = split.target_domain[sel].astype(np.int64)
        state = scorer.encode(hist, dom)
        items = np.concatenate(
            [split.target[sel].astype(np.int64)[:, None], np.asarray(candidates[sel], dtype=np.int64)], axis=1
        )
        scores = np.asarray(scorer.score_candidates(state, items), dtype=np.float64)
        ranks[start : start + len(sel)] = rank_of_target(scores[:, 0], scores[:, 1:])
        if nan_rows is not None:
            nan_rows.extend(int(i) for i in sel[np.isnan(scores[:, 0])])
        if progress is not None:
            progress(len(sel))
    return ranks


# ----------------------------------------------------------------------------- full ranking
def _history_pairs(split, sel: np.ndarray, lo: int, hi: int, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row-in-batch, item) pairs of each row's history items inside [lo, hi), the target excluded."""
    rr, ii = [], []
    for j, i in enumerate(sel):
        h = split.history(int(i))
        h = np.unique(h[(h >= lo) & (h < hi) & (h != target[j])])
        rr.append(np.full(h.size, j, dtype=np.int64))
        ii.append(h.astype(np.int64))
    if not rr:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(rr), np.concatenate(ii)


def full_ranks(
    scorer: Scorer,
    split,
    domain_ranges: tuple[tuple[int, int], tuple[int, int]],
    rows: np.ndarray | None = None,
    exclude_history: bool = True,
    batch_size: int = 256,
    chunk_size: int = 32768,
    progress: Callable[[int], None] | None = None,
    nan_rows: list | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row's target among *all* items of its domain (1 = best; ties favour the target).

    ``domain_ranges[d]`` is ``[lo, hi)`` of domain ``d``'s item indices. Rows are grouped by target
    domain, each batch is encoded once, and the domain's items are scored ``chunk_size`` at a time
    with :meth:`Scorer.score_items`, so memory stays at ``batch_size x chunk_size`` scores whatever
    the catalogue size. Each chunk is scored together with the batch's targets, so a target is
    compared with items scored in the same call. With ``exclude_history`` the items of the row's own
    history (other than the target itself) are not candidates.

    Returns ``(ranks, n_candidates)``: int64 ranks aligned with ``rows`` and the number of items
    each target was ranked against (the domain's items minus the target and excluded history items).
    A NaN target score ranks last (its row is appended to ``nan_rows`` when given); NaN item
    scores never beat the target.
    """
    n = len(split)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    ranks = np.empty(len(rows), dtype=np.int64)
    n_cand = np.empty(len(rows), dtype=np.int64)
    dom_all = np.asarray(split.target_domain)[rows].astype(np.int64)
    for d in (0, 1):
        lo, hi = domain_ranges[d]
        pos_d = np.nonzero(dom_all == d)[0]  # positions in ``rows``
        for start in range(0, len(pos_d), batch_size):
            pos = pos_d[start : start + batch_size]
            sel = rows[pos]
            b = len(sel)
            tgt = split.target[sel].astype(np.int64)
            if ((tgt < lo) | (tgt >= hi)).any():
                bad = sel[(tgt < lo) | (tgt >= hi)][0]
                raise ValueError(f"row {bad}: target {split.target[bad]} is outside domain {d}'s items [{lo}, {hi})")
            state = scorer.encode(split.padded(sel, scorer.max_len, scorer.pad), np.full(b, d, dtype=np.int64))
            if exclude_history:
                hr, hi_items = _history_pairs(split, sel, lo, hi, tgt)
            else:
                hr, hi_items = np.empty(0, np.int64), np.empty(0, np.int64)
            higher = np.zeros(b, dtype=np.int64)
            t_nan = np.zeros(b, dtype=bool)
            ar = np.arange(b)
            for c0 in range(lo, hi, chunk_size):
                c1 = min(c0 + chunk_size, hi)
                items = np.concatenate([np.arange(c0, c1, dtype=np.int64), tgt])
                s = np.asarray(scorer.score_items(state, items), dtype=np.float32)
                m = c1 - c0
                t = s[ar, m + ar]
                sc = s[:, :m]  # a view: masked in place below
                inside = (tgt >= c0) & (tgt < c1)
                sc[ar[inside], tgt[inside] - c0] = -np.inf  # the target is not its own competitor
                if hr.size:
                    k = (hi_items >= c0) & (hi_items < c1)
                    sc[hr[k], hi_items[k] - c0] = -np.inf
                higher += (sc > t[:, None]).sum(axis=1)
                t_nan |= np.isnan(t)
            excluded = np.bincount(hr, minlength=b) if hr.size else np.zeros(b, dtype=np.int64)
            cand = (hi - lo) - 1 - excluded
            ranks[pos] = np.where(t_nan, cand, higher) + 1
            n_cand[pos] = cand
            if nan_rows is not None:
                nan_rows.extend(int(i) for i in sel[t_nan])
            if progress is not None:
                progress(b)
    return ranks, n_cand


# ----------------------------------------------------------------------------- per-domain models
class DomainRouter:
    """One scorer per target domain behind the :class:`Scorer` interface.

    C2DSR (and the paper after it) reports each domain's test numbers from that domain's best
    validation epoch; ``temacli train --early-stop mrr`` keeps those weights as
    ``model.<domain>.safetensors``. Rows whose target is in domain ``d`` are encoded and scored by
    ``scorers[d]``; each row is still encoded once.
    """

    def __init__(self, scorers: tuple):
        a, b = scorers
        if (int(a.max_len), int(a.pad)) != (int(b.max_len), int(b.pad)):
            raise ValueError("the two scorers differ in max_len or pad")
        self.scorers = (a, b)
        self.max_len, self.pad = int(a.max_len), int(a.pad)
        self.device = getattr(a, "device", "cpu")

    def encode(self, histories: np.ndarray, target_domain: np.ndarray) -> Any:
        histories = np.asarray(histories)
        dom = np.asarray(target_domain, dtype=np.int64)
        parts = {}
        for d in (0, 1):
            r = np.nonzero(dom == d)[0]
            if r.size:
                parts[d] = (r, self.scorers[d].encode(histories[r], dom[r]))
        return len(dom), parts

    def _combine(self, state, call, items: np.ndarray, shared: bool):
        n, parts = state
        out = None
        for d, (r, st) in parts.items():
            s = call(self.scorers[d], st, items if shared else np.asarray(items)[r])
            if isinstance(s, dict):
                out = {} if out is None else out
                for k, v in s.items():
                    v = np.asarray(v)
                    out.setdefault(k, np.zeros((n,) + v.shape[1:], v.dtype))[r] = v
            else:
                s = np.asarray(s)
                if out is None:
                    out = np.empty((n,) + s.shape[1:], s.dtype)
                out[r] = s
        return out

    def score_candidates(self, state: Any, items: np.ndarray) -> np.ndarray:
        return self._combine(state, lambda sc, st, it: sc.score_candidates(st, it), items, shared=False)

    def score_items(self, state: Any, items: np.ndarray) -> np.ndarray:
        return self._combine(state, lambda sc, st, it: sc.score_items(st, it), items, shared=True)

    def explain(self, state: Any, items: np.ndarray) -> dict:
        return self._combine(state, lambda sc, st, it: sc.explain(st, it), items, shared=False)
