"""Two single-sequence baselines on the mixed sequence S^{X+Y}, trained in TEMA's harness.

* SASRec (Kang & McAuley, ICDM 2018): ID embeddings + learned positions -> causal transformer
  blocks -> the last state h; score(v) = h . E[v].
* GRU4Rec (Hidasi et al., ICLR 2016): ID embeddings -> GRU -> h; score(v) = h . E[v].

Both see the same data, candidates and metrics as TEMA. Unlike their reference code (binary
cross-entropy with one negative per position for SASRec), the loss is the same as TEMA's: softmax
cross-entropy over the *target's domain* (full, or sampled with ``--softmax sampled``), at every
position, so the tables compare models rather than losses.
"""

from __future__ import annotations

import abc

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from temacli.model.layers import (
    Dropout, Encoder, Recommender, compact_right, logsumexp_matmul, positions_from_start, sampled_logsumexp,
)

BASELINES = ("sasrec", "gru4rec")


@dataclass
class BaselineConfig:
    n_x: int
    n_y: int
    kind: str = "sasrec"
    dim: int = 256
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    max_len: int = 50

    def __post_init__(self):
        if self.kind not in BASELINES:
            raise ValueError(f"baseline kind must be one of {', '.join(BASELINES)}, not '{self.kind}'")

    def to_dict(self) -> dict:
        return asdict(self)


class _DotModel(Recommender):
    """Shared parts: an ID embedding table scored by dot product against the sequence state."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__(cfg.n_x, cfg.n_y)
        self.cfg = cfg
        self.E = nn.Embedding(self.n_items + 1, cfg.dim)
        nn.init.normal_(self.E.weight, std=0.02)
        self.drop = Dropout(cfg.dropout)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    @abc.abstractmethod
    def states(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) sequence states: the model's encoder (SASRec: attention, GRU4Rec: a GRU)."""

    def forward(self, seq: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor | None = None):
        keep, tgt, dom, n_x_targets = self.ordered_targets(target)
        if keep.numel() == 0:
            return self.zero_loss()
        h = F.embedding(keep, self.states(seq).reshape(-1, self.cfg.dim))  # (P, D)
        t_logit = (h * self.E(tgt)).sum(-1).float()
        lse = []
        for d, part in ((0, slice(0, n_x_targets)), (1, slice(n_x_targets, None))):
            hd = h[part]
            if hd.shape[0] == 0:
                continue
            if negatives is None:
                lse.append(logsumexp_matmul(hd, self.E.weight[self.domain_slice(d)]))  # chunked when large
            else:  # target + shared negatives; a negative equal to the target is left out
                hit = negatives[d][None, :] == tgt[part][:, None]
                lse_neg = sampled_logsumexp(hd, self.E(negatives[d]), hit)
                lse.append(torch.logaddexp(lse_neg, t_logit[part]))
        return (torch.cat(lse) - t_logit).sum(), int(keep.numel())

    def prepare(self) -> None:
        pass

    @torch.no_grad()
    def encode(self, seq: torch.Tensor, domain: torch.Tensor) -> dict:
        return {"h": self.states(seq)[:, -1].float(), "domain": domain}

    @torch.no_grad()
    def score(self, state: dict, items: torch.Tensor) -> torch.Tensor:
        E = self.E.weight.float()
        if items.dim() == 1:
            return state["h"] @ E[items].T
        return torch.einsum("bd,bcd->bc", state["h"], E[items])

    @torch.no_grad()
    def explain(self, state: dict, items: torch.Tensor) -> dict:
        return {"X+Y/id": self.score(state, items)}


class SASRec(_DotModel):
    kind = "sasrec"

    def __init__(self, cfg: BaselineConfig):
        super().__init__(cfg)
        self.encoder = Encoder(cfg.dim, cfg.n_blocks, cfg.n_heads, cfg.dropout, cfg.max_len, ffn=True)

    def states(self, seq: torch.Tensor) -> torch.Tensor:
        valid = seq != self.pad
        return self.encoder(self.E(seq), positions_from_start(valid), valid)


class GRU4Rec(_DotModel):
    kind = "gru4rec"

    def __init__(self, cfg: BaselineConfig):
        super().__init__(cfg)
        self.gru = nn.GRU(cfg.dim, cfg.dim, num_layers=1, batch_first=True)

    def states(self, seq: torch.Tensor) -> torch.Tensor:
        """GRU over the real items only: left padding is moved to the right and packed away."""
        valid = seq != self.pad
        B, L = seq.shape
        order = compact_right(~valid)  # real items first, padding last, order kept
        lengths = valid.sum(1)
        x = self.drop(self.E(seq.gather(1, order)))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=L)
        back = torch.empty_like(order)
        back.scatter_(1, order, torch.arange(L, device=seq.device).expand(B, L))
        y = y.gather(1, back[..., None].expand(-1, -1, y.shape[-1]))
        return self.drop(y) * valid[..., None]


def build_baseline(cfg: BaselineConfig) -> _DotModel:
    return SASRec(cfg) if cfg.kind == "sasrec" else GRU4Rec(cfg)
