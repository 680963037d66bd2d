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
) -> np.ndarray:
    """Rank of each row's target among its stored negatives (1 = best; ties favour the target).

    ``split`` is a :class:`temacli.data.dataset.Split`; ``candidates`` its (rows, 999) negatives.
    Returns int64 ranks aligned with ``rows`` (all rows by default).
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
        if progress is not None:
            progress(len(sel))
    return ranks
