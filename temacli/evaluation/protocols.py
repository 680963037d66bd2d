"""Evaluation protocols over a :class:`Scorer` (any trained model: TEMA, SASRec, GRU4Rec).

The sampled protocol ranks each instance's target among the dataset's *stored* negatives
(``candidates_<split>.npy``: 999 per row, drawn once by ``data split``), so every model is evaluated
on the same candidates. Each user's sequence is encoded once; the target and its negatives are then
scored against that state (never one forward pass per candidate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from temacli.evaluation.ranking import DEFAULT_CHUNK, item_pairs, rank_against, rank_domain


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


@dataclass
class RankStats:
    """Ranks of evaluation rows with what a reviewer needs to trust them (arrays aligned with the rows).

    ``ties``: candidates scoring exactly the target's score (ties favour the target, so a scorer
    that gives every item the same score ranks every target first: a high share of rows with
    ``ties > 0`` says so); ``nan_candidates``: candidate scores that were NaN (they never beat the
    target); ``nan_target``: the target scored NaN (ranked last); ``n_candidates``: the items each
    target was ranked against.
    """

    ranks: np.ndarray
    ties: np.ndarray
    nan_candidates: np.ndarray
    nan_target: np.ndarray
    n_candidates: np.ndarray
    rows: np.ndarray  # the split rows these arrays are aligned with


def _advance(progress, n: int) -> None:
    """``progress``: a :class:`temacli.progress.Progress` (``advance(n)``), a plain callable ``f(n)`` or None."""
    if progress is None:
        return
    if hasattr(progress, "advance"):
        progress.advance(n)
    else:
        progress(n)


def sampled_rank_stats(
    scorer: Scorer,
    split,
    candidates: np.ndarray,
    batch_size: int = 512,
    rows: np.ndarray | None = None,
    progress=None,
) -> RankStats:
    """The sampled protocol: each row's target among its stored negatives, with tie and NaN counts.

    ``split`` is a :class:`temacli.data.dataset.Split`; ``candidates`` its (rows, c) negatives.
    Each batch is encoded once and the target with its negatives scored in one
    ``score_candidates`` call. ``progress.advance(k)`` after each batch of ``k`` rows (the caller
    starts and finishes the phase).
    """
    n = len(split)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    ranks = np.empty(len(rows), dtype=np.int64)
    ties = np.empty(len(rows), dtype=np.int64)
    nan_c = np.empty(len(rows), dtype=np.int64)
    nan_t = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), batch_size):
        sel = rows[start : start + batch_size]
        hist = split.padded(sel, scorer.max_len, scorer.pad)
        dom = split.target_domain[sel].astype(np.int64)
        state = scorer.encode(hist, dom)
        items = np.concatenate(
            [split.target[sel].astype(np.int64)[:, None], np.asarray(candidates[sel], dtype=np.int64)], axis=1
        )
        scores = np.asarray(scorer.score_candidates(state, items), dtype=np.float64)
        part = slice(start, start + len(sel))
        ranks[part], ties[part], nan_c[part] = rank_against(scores[:, 0], scores[:, 1:])
        nan_t[part] = np.isnan(scores[:, 0])
        _advance(progress, len(sel))
    n_cand = np.full(len(rows), int(np.asarray(candidates).shape[1]), dtype=np.int64)
    return RankStats(ranks, ties, nan_c, nan_t, n_cand, rows)


def sampled_ranks(scorer: Scorer, split, candidates: np.ndarray, *args, nan_rows: list | None = None,
                  **kwargs) -> np.ndarray:
    """Rank of each row's target among its stored negatives (1 = best; ties favour the target).

    The arguments after ``candidates`` are :func:`sampled_rank_stats`'s (``batch_size=512``,
    ``rows=None``, ``progress=None``). Returns int64 ranks aligned with ``rows`` (all rows by
    default). When ``nan_rows`` is a list, the split rows whose target scored NaN (ranked last) are
    appended to it.
    """
    st = sampled_rank_stats(scorer, split, candidates, *args, **kwargs)
    if nan_rows is not None:
        nan_rows.extend(int(i) for i in st.rows[st.nan_target])
    return st.ranks


# ----------------------------------------------------------------------------- full ranking
def full_rank_stats(
    scorer: Scorer,
    split,
    domain_ranges: tuple[tuple[int, int], tuple[int, int]],
    rows: np.ndarray | None = None,
    exclude_history: bool = True,
    batch_size: int = 256,
    chunk_size: int = DEFAULT_CHUNK,
    progress=None,
) -> RankStats:
    """The full protocol: each row's target among *all* items of its domain, with tie and NaN counts.

    ``domain_ranges[d]`` is ``[lo, hi)`` of domain ``d``'s item indices. Rows are grouped by target
    domain, each batch is encoded once, and the domain's items are scored ``chunk_size`` at a time
    by the ranking core (:func:`temacli.evaluation.ranking.rank_domain`). With ``exclude_history``
    the items of the row's own history (other than the target itself) are not candidates.
    """
    n = len(split)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    out = {k: np.zeros(len(rows), dtype=np.int64) for k in ("ranks", "ties", "nan_candidates", "n_candidates")}
    nan_t = np.zeros(len(rows), dtype=bool)
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
            exclude = item_pairs([split.history(int(i)) for i in sel], lo, hi, keep=tgt) if exclude_history else None
            r = rank_domain(scorer, state, lo, hi, targets=tgt, exclude=exclude, chunk_size=chunk_size)
            out["ranks"][pos] = r.ranks
            out["ties"][pos] = r.ties
            out["nan_candidates"][pos] = r.nan_candidates
            out["n_candidates"][pos] = r.n_candidates
            nan_t[pos] = np.isnan(r.target_score)
            _advance(progress, b)
    return RankStats(out["ranks"], out["ties"], out["nan_candidates"], nan_t, out["n_candidates"], rows)


def full_ranks(scorer: Scorer, split, domain_ranges: tuple[tuple[int, int], tuple[int, int]], *args,
               nan_rows: list | None = None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row's target among *all* items of its domain (1 = best; ties favour the target).

    The arguments after ``domain_ranges`` are :func:`full_rank_stats`'s (``rows``,
    ``exclude_history=True``, ``batch_size=256``, ``chunk_size``, ``progress``). Memory stays at
    ``batch_size x chunk_size`` scores whatever the catalogue size; each chunk is scored together
    with the batch's targets. Returns ``(ranks, n_candidates)``: int64 ranks aligned with ``rows``
    and the number of items each target was ranked against (the domain's items minus the target
    and excluded history items). A NaN target score ranks last (its row is appended to
    ``nan_rows`` when given); NaN item scores never beat the target.
    """
    st = full_rank_stats(scorer, split, domain_ranges, *args, **kwargs)
    if nan_rows is not None:
        nan_rows.extend(int(i) for i in st.rows[st.nan_target])
    return st.ranks, st.n_candidates


# ----------------------------------------------------------------------------- per-domain models
# One scorer per target domain (``--weights per-domain``) lives with the models it routes to.
from temacli.model.api import DomainRouter  # noqa: E402,F401  (kept importable from here)
