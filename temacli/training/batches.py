"""Training batches: every next-item target of a sequence in one pass.

A training row of the dataset is one user sequence (history + target). Its last ``max_len + 1``
items form the window ``w``; the model reads ``seq = w[:-1]`` and predicts ``target = w[1:]``, so
position t's target is the item after it (causal attention guarantees t only sees items <= t).
With ``positions="last"`` only the final target is kept (one target per row, as at evaluation).
Left padding uses the dataset's ``pad`` index; ``target == pad`` means "no target here".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

POSITIONS = ("all", "last")


@dataclass
class Batch:
    seq: torch.Tensor  # (B, L) int64, left-padded
    target: torch.Tensor  # (B, L) int64, pad where no target
    negatives: torch.Tensor | None  # (2, K) shared negatives of X and Y, or None (full softmax)
    n_targets_global: int  # targets in the whole (all ranks') batch: the loss divisor


def windows(split, max_len: int, pad: int) -> np.ndarray:
    """(rows, max_len + 1) left-padded windows of each row's history + target."""
    return split.padded(np.arange(len(split)), max_len + 1, pad, with_target=True)


def make_batch(win: np.ndarray, pad: int, positions: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a block of windows, trimmed to the longest row."""
    real = win != pad
    first = int(np.argmax(real.any(axis=0))) if real.any() else win.shape[1] - 1
    win = win[:, min(first, win.shape[1] - 2) :]
    seq = torch.from_numpy(np.ascontiguousarray(win[:, :-1]))
    target = torch.from_numpy(np.ascontiguousarray(win[:, 1:]))
    target = torch.where(seq == pad, torch.full_like(target, pad), target)  # no target without input
    if positions == "last":
        target[:, :-1] = pad
    return seq, target


class BatchStream:
    """Shuffled batches of one epoch; the order and the sampled negatives come from ``generator``.

    Under DistributedDataParallel every rank draws the same global batch and keeps its share
    (rows ``rank::world``), so the union over ranks is exactly the single-process batch.
    """

    def __init__(
        self,
        win: np.ndarray,
        n_x: int,
        n_y: int,
        batch_size: int,
        generator: torch.Generator,
        positions: str = "all",
        negatives: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        bucket: int = 32,
    ):
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}")
        self.win, self.n_x, self.n_y = win, n_x, n_y
        self.pad = n_x + n_y
        self.batch_size, self.g, self.positions = batch_size, generator, positions
        self.negatives, self.rank, self.world, self.shuffle = negatives, rank, world, shuffle
        self.bucket = bucket
        self.lengths = (win != self.pad).sum(1)

    def __len__(self) -> int:
        return (len(self.win) + self.batch_size - 1) // self.batch_size

    def batches(self) -> list[np.ndarray]:
        """Row indices of each batch of one epoch (draws from the generator when shuffling).

        Length bucketing: the shuffled rows are cut into pools of ``bucket`` batches, each pool is
        sorted by sequence length and cut into batches, and the batches are shuffled. Batches then
        hold sequences of similar length, so little compute goes to padding; which rows share a
        batch changes every epoch. ``bucket=1`` turns it off.
        """
        n = len(self.win)
        if not self.shuffle:
            return [np.arange(s, min(n, s + self.batch_size)) for s in range(0, n, self.batch_size)]
        order = torch.randperm(n, generator=self.g).numpy()
        if self.bucket <= 1:
            return [order[s : s + self.batch_size] for s in range(0, n, self.batch_size)]
        pool = self.bucket * self.batch_size
        out = []
        for p in range(0, n, pool):
            rows = order[p : p + pool]
            rows = rows[np.argsort(self.lengths[rows], kind="stable")]
            out += [rows[s : s + self.batch_size] for s in range(0, len(rows), self.batch_size)]
        perm = torch.randperm(len(out), generator=self.g).numpy()
        return [out[i] for i in perm]

    def __iter__(self) -> Iterator[Batch]:
        for rows in self.batches():
            negs = None
            if self.negatives:
                k = self.negatives
                negs = torch.stack(
                    [
                        torch.randint(0, self.n_x, (k,), generator=self.g),
                        torch.randint(self.n_x, self.pad, (k,), generator=self.g),
                    ]
                )
            _, all_target = make_batch(self.win[rows], self.pad, self.positions)
            total = int((all_target != self.pad).sum())
            mine = rows[self.rank :: self.world]
            seq, target = make_batch(self.win[mine], self.pad, self.positions)
            yield Batch(seq, target, negs, total)
