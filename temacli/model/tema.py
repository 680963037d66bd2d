"""TEMA-LLM (Section III-E and III-F of the paper), to be read beside it.

Item side (Sec. III-E), for an item v:

    e_id(v)  = E_id[v]                               Eq. 4, learnable
    e_img(v) = E_img[v], e_tex(v) = E_tex[v]         Eq. 5-6, frozen rows of the features stage
    e_tag(v) = sum_i w_i(v) E_tag[i]                 Eq. 3/7, w from `tags match`, E_tag learnable
    e_item(v) = MLP(e_id + e_img + e_tex + e_tag)    Eq. 9, "+" = concatenation, 2 layers, GELU, -> q

Each modality m in {id, img, tex, tag} is a *stream*: an item representation r_m(v) that is both the
input sequence F_m of the attention encoders and the candidate matrix E_m that the user vector is
compared with (Eq. 8). Which representation each stream uses is the ``fusion`` option (docs/model.md):

    fusion="id"   (default) r_id = e_item; r_img = P_img e_img; r_tex = P_tex e_tex; r_tag = e_tag
    fusion="all"  every stream's *input sequence* is e_item; candidates are r_m as above
    fusion="none" no MLP: r_id = e_id (the earlier papers' design)

P_img, P_tex are learnable linear maps e -> q (cosine needs one dimension on both sides).

User side (Sec. III-F): three sequences S^X, S^Y, S^{X+Y} (``SEQS``) times the streams, each with its
own causal self-attention encoder (Eq. 10), give the twelve user vectors h^s_m (Eq. 11) at every
position of the mixed sequence. S^X is the mixed sequence's X items as a compact list; the vector of
S^X at mixed position t is the encoder's output after the last X item at or before t (zero when there
is none yet, which makes every candidate equally likely).

Prediction for a target of domain d (Eq. 12-13), over the items of domain d only:

    P^s_m(v) = softmax_{v in d}( cos(h^s_m, r_m(v)) / tau )
    P^s(v)   = sum_m w_m P^s_m(v),     w = (a1, a2, a3, 1 - a1 - a2 - a3) over (id, img, tex, tag)
    P(v)     = sum_s c_s(d) P^s(v)                                                   Eq. 16
    loss     = sum_s c_s(d) (-log P^s(target))                                       Eq. 14-15

with c = (1, lambda1, lambda2) for (own domain's sequence, other domain's sequence, mixed sequence)
("symmetric", default) or (S^X: 1, S^Y: lambda1, S^{X+Y}: lambda2) for every target ("literal").
Modalities that are absent drop out of w, which is renormalised to sum to 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from temacli.model.layers import (
    Recommender, StackedEncoder, chunks, compact_right, logsumexp_matmul, positions_from_start, sampled_logsumexp,
    stack_encoder_states,
)

STREAMS = ("id", "img", "tex", "tag")
SEQS = ("X", "Y", "X+Y")
FUSIONS = ("id", "all", "none")
ATTENTIONS = ("multi", "single")
POSITIONS = ("domain", "mixed")
CROSS_WEIGHTS = ("symmetric", "literal")


@dataclass
class TEMAConfig:
    """Everything needed to rebuild a TEMA model (stored in config.json)."""

    n_x: int
    n_y: int
    streams: tuple = ("id", "img", "tex", "tag")
    q: int = 256  # the unified dimension of Eq. 9; also the tag dimension d_t and attention width
    image_dim: int = 0
    text_dim: int = 0
    n_tags: int = 0
    alpha: tuple = (0.4, 0.2, 0.2)  # Eq. 13: id, img, tex; the tag weight is 1 - sum
    lambda1: float = 0.3  # Eq. 15-16
    lambda2: float = 0.1
    dropout: float = 0.3
    n_blocks: int = 1
    n_heads: int = 1
    ffn: bool = False  # Eq. 10 is attention only; --ffn adds a feed-forward sublayer
    max_len: int = 50
    temperature: float = 0.1  # softmax(cos / tau); tau = 1 is the literal Eq. 12
    fusion: str = "id"
    attention: str = "multi"
    positions: str = "domain"
    cross_weights: str = "symmetric"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.streams = tuple(self.streams)
        self.alpha = tuple(float(a) for a in self.alpha)
        for name, value, allowed in (
            ("fusion", self.fusion, FUSIONS),
            ("attention", self.attention, ATTENTIONS),
            ("positions", self.positions, POSITIONS),
            ("cross_weights", self.cross_weights, CROSS_WEIGHTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not '{value}'")
        bad = [s for s in self.streams if s not in STREAMS]
        if bad or "id" not in self.streams:
            raise ValueError(f"streams must include 'id' and come from {STREAMS}, got {self.streams}")
        if len(self.alpha) != 3 or min(self.alpha) < 0 or sum(self.alpha) > 1 + 1e-9:
            raise ValueError(f"alpha must be three weights >= 0 summing to at most 1, got {self.alpha}")

    @property
    def seqs(self) -> tuple:
        return SEQS if self.attention == "multi" else ("X+Y",)

    def stream_weights(self) -> dict:
        """w_m of Eq. 13 for the streams present, renormalised to sum to 1."""
        a1, a2, a3 = self.alpha
        raw = {"id": a1, "img": a2, "tex": a3, "tag": max(0.0, 1.0 - a1 - a2 - a3)}
        kept = {m: raw[m] for m in self.streams}
        total = sum(kept.values())
        if total <= 0:
            raise ValueError(f"the stream weights of {self.streams} sum to 0 with alpha={self.alpha}")
        return {m: w / total for m, w in kept.items()}

    def seq_weights(self) -> np.ndarray:
        """c_s(d): (2 target domains, len(seqs)) weights of Eq. 15-16."""
        if self.attention == "single":
            return np.ones((2, 1))
        l1, l2 = self.lambda1, self.lambda2
        if self.cross_weights == "literal":
            return np.array([[1.0, l1, l2], [1.0, l1, l2]])
        return np.array([[1.0, l1, l2], [l1, 1.0, l2]])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["streams"], d["alpha"] = list(self.streams), list(self.alpha)
        return d


class TEMA(Recommender):
    kind = "tema"

    def __init__(
        self,
        cfg: TEMAConfig,
        image: np.ndarray | torch.Tensor | None = None,
        text: np.ndarray | torch.Tensor | None = None,
        tags: tuple | None = None,
    ):
        """``image``/``text``: frozen (n_items, e) features; ``tags``: (item, tag, weight) arrays."""
        super().__init__(cfg.n_x, cfg.n_y)
        self.cfg = cfg
        q, n = cfg.q, self.n_items + 1  # one extra row: the padding item
        self.streams = cfg.streams
        self.seqs = cfg.seqs
        w = cfg.stream_weights()
        self.register_buffer("log_w", torch.tensor([np.log(w[m]) for m in self.streams], dtype=torch.float32))
        self.register_buffer("seq_coef", torch.tensor(cfg.seq_weights(), dtype=torch.float32))

        # ---- item side: Eq. 4-7, 9
        self.E_id = nn.Embedding(n, q)
        nn.init.normal_(self.E_id.weight, std=1.0)
        mlp_in = q
        if "img" in self.streams:
            self.register_buffer("E_img", _frozen(image, n, cfg.image_dim, "image"))
            self.P_img = nn.Linear(cfg.image_dim, q)
            mlp_in += cfg.image_dim
        if "tex" in self.streams:
            self.register_buffer("E_tex", _frozen(text, n, cfg.text_dim, "text"))
            self.P_tex = nn.Linear(cfg.text_dim, q)
            mlp_in += cfg.text_dim
        if "tag" in self.streams:
            if tags is None:
                tags = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
            item, tag, weight = (np.asarray(a) for a in tags)
            order = np.argsort(item, kind="stable")
            counts = np.bincount(item, minlength=n)[:n]
            self.register_buffer("tag_index", torch.as_tensor(tag[order], dtype=torch.long))
            self.register_buffer("tag_weight", torch.as_tensor(weight[order], dtype=torch.float32))
            self.register_buffer(
                "tag_offsets", torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=torch.long)
            )
            self.E_tag = nn.Parameter(torch.randn(max(cfg.n_tags, 1), q))
            mlp_in += q
        if cfg.fusion != "none":
            self.mlp = nn.Sequential(nn.Linear(mlp_in, q), nn.GELU(), nn.Linear(q, q))  # Eq. 9

        # ---- user side: one encoder per (sequence, stream), Eq. 10-11. The encoders of one sequence
        # (one per stream) share its masks and positions, so they are held as one StackedEncoder and
        # run as batched matrix products; encoders[seq] holds stream j's weights at index j.
        self.encoders = nn.ModuleDict(
            {
                _seq_key(s): StackedEncoder(len(self.streams), q, cfg.n_blocks, cfg.n_heads, cfg.dropout, cfg.max_len, cfg.ffn)
                for s in self.seqs
            }
        )
        self.encoder_impl = "stacked: one StackedEncoder per sequence, batched over the streams (torch.baddbmm)"
        self._tables: dict | None = None

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Model folders written before the encoders were stacked hold one encoder per (sequence,
        stream), "encoders.XY_tag.*": stack them into "encoders.XY.*" (stream order) before loading."""
        for s in self.seqs:
            old = {m: f"{prefix}encoders.{_module_key(s, m)}." for m in self.streams}
            if not any(k.startswith(old[self.streams[0]]) for k in state_dict):
                continue
            per_stream = [{k[len(old[m]):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(old[m])}
                          for m in self.streams]
            for k, v in stack_encoder_states(per_stream).items():
                state_dict[f"{prefix}encoders.{_seq_key(s)}.{k}"] = v
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ item representations
    def e_tag_all(self) -> torch.Tensor:
        """Eq. 7 for every item (and the padding row): (n_items + 1, q)."""
        return F.embedding_bag(
            self.tag_index, self.E_tag, self.tag_offsets, mode="sum", per_sample_weights=self.tag_weight
        )

    def e_tag_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Eq. 7 for the items ``ids`` only: (U, q)."""
        start = self.tag_offsets[ids]
        end = torch.cat([self.tag_offsets, self.tag_offsets.new_tensor([self.tag_index.numel()])])[ids + 1]
        count = end - start
        seg = torch.repeat_interleave(torch.arange(ids.numel(), device=ids.device), count)
        within = torch.arange(seg.numel(), device=ids.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        flat = start[seg] + within
        offsets = torch.cat([count.new_zeros(1), count.cumsum(0)[:-1]])
        return F.embedding_bag(
            self.tag_index[flat], self.E_tag, offsets, mode="sum", per_sample_weights=self.tag_weight[flat]
        )

    def item_reps(self, ids: torch.Tensor) -> tuple[dict, dict]:
        """Stream representations of ``ids`` (U,): (candidates r_m, encoder inputs F_m), each (U, q)."""
        parts = [self.E_id(ids)]
        reps: dict = {}
        if "tag" in self.streams:
            e_tag = self.e_tag_all() if ids.numel() > self.n_items else self.e_tag_of(ids)
        if "img" in self.streams:
            img = self.E_img[ids].float()
            reps["img"] = self.P_img(img)
            parts.append(img)
        if "tex" in self.streams:
            tex = self.E_tex[ids].float()
            reps["tex"] = self.P_tex(tex)
            parts.append(tex)
        if "tag" in self.streams:
            reps["tag"] = e_tag
            parts.append(reps["tag"])
        reps["id"] = parts[0] if self.cfg.fusion == "none" else self.mlp(torch.cat(parts, dim=-1))
        reps = {m: reps[m] for m in self.streams}
        inputs = {m: reps["id"] for m in self.streams} if self.cfg.fusion == "all" else reps
        return reps, inputs

    # ------------------------------------------------------------------ user vectors, Eq. 10-11
    def user_states(self, seq: torch.Tensor, inputs: dict, local: torch.Tensor, at: torch.Tensor | None = None,
                    last_only: bool = False) -> torch.Tensor:
        """L2-normalised user vectors h^s_m (Eq. 11) as one (S, M, P, q) tensor (sequences x streams).

        ``local`` (B, L) indexes the rows of ``inputs`` that hold each position's item. ``at`` (P,)
        selects flat positions ``b * L + t`` of the mixed sequence (default: all of them). With
        ``last_only`` the vectors after each row's last item are computed, P = B, and the encoders run
        their queries at that position only (inference).
        """
        B, L = seq.shape
        at = torch.arange(B * L, device=seq.device) if at is None else at
        is_x = seq < self.n_x
        real = seq != self.pad
        masks = {"X": is_x, "Y": real & ~is_x, "X+Y": real}
        mixed_pos = positions_from_start(real)
        table = torch.stack([inputs[m] for m in self.streams])  # (M, U, q): F_m of every stream
        out = []
        for s in self.seqs:
            valid = masks[s]
            count = valid.long().cumsum(1)  # items of this sequence at or before each position
            if s == "X+Y":
                cols, cvalid, pos = None, valid, mixed_pos
                rows = at  # encoder row of each selected position
            else:  # compact list of this domain's items, right-aligned, trimmed to the longest
                order = compact_right(valid)
                width = max(int(valid.sum(1).max()), 1)
                cols = order[:, -width:]
                cvalid = valid.gather(1, cols)
                pos = positions_from_start(cvalid) if self.cfg.positions == "domain" else mixed_pos.gather(1, cols)
                # state after the last item of this sequence at or before t: compact column
                idx = (width - cvalid.sum(1, keepdim=True) + count - 1).clamp(min=0)
                idx = idx + torch.arange(B, device=seq.device)[:, None] * width
                rows = idx.reshape(-1)[at]
            ids = local if cols is None else local.gather(1, cols)
            x = table.index_select(1, ids.reshape(-1)).view(len(self.streams), *ids.shape, -1)
            if last_only:  # the last column holds the last item (right-aligned)
                y = self.encoders[_seq_key(s)](x, pos, cvalid, last_only=True)
                has = count[:, -1:] > 0
            else:
                y = self.encoders[_seq_key(s)](x, pos, cvalid, rows=rows)
                has = (count > 0).reshape(-1)[at, None]
            out.append(F.normalize(y * has, dim=-1))  # no item of this sequence yet: zero vector
        return torch.stack(out)

    def user_vectors(self, seq: torch.Tensor, inputs: dict, local: torch.Tensor, at: torch.Tensor | None = None) -> dict:
        """h[s][m]: the user vectors of :meth:`user_states` keyed by sequence and stream, (P, q) each,
        or (B, L, q) when ``at`` is None (every position)."""
        B, L = seq.shape
        H = self.user_states(seq, inputs, local, at)
        if at is None:
            H = H.view(*H.shape[:2], B, L, -1)
        return {s: {m: H[i, j] for j, m in enumerate(self.streams)} for i, s in enumerate(self.seqs)}

    # ------------------------------------------------------------------ training loss, Eq. 14-15
    def forward(self, seq: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor | None = None):
        keep, tgt, dom, n_x_targets = self.ordered_targets(target)
        if keep.numel() == 0:
            return self.zero_loss()
        if negatives is None:
            ids = torch.arange(self.n_items + 1, device=seq.device)
            local_seq, local_tgt, local_neg = seq, tgt, None
        else:
            allv = torch.cat([seq.reshape(-1), tgt, negatives.reshape(-1)])
            ids, inv = torch.unique(allv, return_inverse=True)
            n1, n2 = seq.numel(), tgt.numel()
            local_seq = inv[:n1].view_as(seq)
            local_tgt, local_neg = inv[n1 : n1 + n2], inv[n1 + n2 :].view_as(negatives)
        reps, inputs = self.item_reps(ids)
        h = self.user_states(seq, inputs, local_seq, at=keep)  # (S, M, P, q)
        inv_tau = 1.0 / self.cfg.temperature
        parts = ((0, slice(0, n_x_targets)), (1, slice(n_x_targets, None)))
        hits = {}  # per domain: (P_d, K) True where a sampled negative is the target itself
        if local_neg is not None:
            hits = {d: local_neg[d][None, :] == local_tgt[part][:, None] for d, part in parts}
        logp = []  # per stream: (S, P) log P^s_m(target)
        # unbind, not h[:, j]: its backward is one stack of the streams' gradients, where indexing would
        # zero-fill a full-size gradient per stream and add them up
        for j, (m, H) in enumerate(zip(self.streams, h.unbind(1))):
            H = H * inv_tau  # (S, P, q), scaled by 1/tau once here rather than on every logit
            R = F.normalize(reps[m], dim=-1)
            t_logit = (H * F.embedding(local_tgt, R)).sum(-1)
            lse = []
            for d, part in parts:
                Hd = H[:, part]
                if Hd.shape[1] == 0:
                    continue
                if local_neg is None:  # full softmax over the domain (chunked when the logits are large)
                    lse.append(logsumexp_matmul(Hd.reshape(-1, Hd.shape[-1]), R[self.domain_slice(d)]).view(Hd.shape[:2]))
                else:  # target + shared negatives; a negative equal to the target is left out
                    lse_neg = sampled_logsumexp(Hd, F.embedding(local_neg[d], R), hits[d])
                    lse.append(torch.logaddexp(lse_neg, t_logit[:, part]))
            logp.append(t_logit - torch.cat(lse, dim=1))
        log_ps = torch.logsumexp(torch.stack(logp) + self.log_w[:, None, None], dim=0)  # (S, P): Eq. 13
        coef = self.seq_coef[dom].T  # (S, P)
        return -(coef * log_ps).sum(), int(keep.numel())

    # ------------------------------------------------------------------ inference, Eq. 16-17
    @torch.no_grad()
    def prepare(self) -> None:
        """Cache the normalised candidate matrix of every stream for all items."""
        ids = torch.arange(self.n_items + 1, device=self.E_id.weight.device)
        reps, inputs = self.item_reps(ids)
        self._tables = {
            "R": {m: F.normalize(reps[m].float(), dim=-1) for m in self.streams},
            "F": inputs,
        }

    @torch.no_grad()
    def encode(self, seq: torch.Tensor, domain: torch.Tensor, last_only: bool = True) -> dict:
        """User vectors after the last history item, and each (sequence, stream) normaliser over
        the target domain's items (so sampled candidates score exactly as in full ranking).

        Only the last position's queries are computed (keys and values over the whole history);
        ``last_only=False`` runs the encoders at every position and keeps the last (same result).
        """
        if self._tables is None:
            self.prepare()
        B, L = seq.shape
        if last_only:
            h = self.user_states(seq, self._tables["F"], seq, last_only=True)
        else:
            h = self.user_states(seq, self._tables["F"], seq, at=torch.arange(B, device=seq.device) * L + (L - 1))
        H = h.permute(2, 0, 1, 3).float()  # (B, S, M, q)
        tau = self.cfg.temperature
        lse = torch.empty(H.shape[:3], device=H.device)
        for d in (0, 1):
            rows = (domain == d).nonzero(as_tuple=True)[0]
            for j, m in enumerate(self.streams):
                R = self._tables["R"][m][self.domain_slice(d)]
                for c in chunks(rows.numel(), 256):
                    r = rows[c]
                    lse[r, :, j] = torch.logsumexp((H[r, :, j] * (1.0 / tau)) @ R.T, dim=-1)
        return {"h": H, "lse": lse, "coef": self.seq_coef[domain], "domain": domain}

    @torch.no_grad()
    def explain(self, state: dict, items: torch.Tensor) -> dict:
        """Additive parts c_s w_m P^s_m(v) of Eq. 16, keyed "X/id", ..., "X+Y/tag"."""
        H, lse, coef = state["h"], state["lse"], state["coef"]
        tau = self.cfg.temperature
        w = self.log_w.exp()
        parts = {}
        for j, m in enumerate(self.streams):
            R = self._tables["R"][m]
            if items.dim() == 1:  # one shared list for every row
                logits = torch.einsum("bsq,mq->bsm", H[:, :, j], R[items]) / tau
            else:
                logits = self._row_logits(H[:, :, j], R, items, state["domain"]) / tau
            p = torch.exp(logits - lse[:, :, j, None])
            for i, s in enumerate(self.seqs):
                parts[_key(s, m)] = coef[:, i, None] * w[j] * p[:, i]
        return parts

    def _row_logits(self, H: torch.Tensor, R: torch.Tensor, items: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """cos(h, r(v)) for per-row items (B, C) -> (B, S, C).

        When every row's items lie in its target domain (the protocol), the similarities with the
        whole domain are one matrix product and the candidates are picked from it: much faster on
        CPU than gathering a (B, C, q) block of candidate vectors. Otherwise it gathers.
        """
        out = torch.empty(H.shape[0], H.shape[1], items.shape[1], device=H.device)
        for d in (0, 1):
            sl = self.domain_slice(d)
            rows = (domain == d).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            local = items[rows] - sl.start
            if local.numel() and (local.min() < 0 or local.max() >= sl.stop - sl.start):
                for c in chunks(rows.numel(), 64):
                    r = rows[c]
                    out[r] = torch.einsum("bsq,bcq->bsc", H[r], R[items[r]])
                continue
            Rd = R[sl]
            for c in chunks(rows.numel(), 128):
                r = rows[c]
                full = H[r] @ Rd.T  # (b, S, N_d)
                out[r] = full.gather(2, local[c][:, None, :].expand(-1, H.shape[1], -1))
        return out

    @torch.no_grad()
    def score(self, state: dict, items: torch.Tensor) -> torch.Tensor:
        """Eq. 16: P(v | S) = sum_s c_s sum_m w_m P^s_m(v)."""
        parts = self.explain(state, items)
        return torch.stack(list(parts.values())).sum(0)


def _key(s: str, m: str) -> str:
    """Name of one (sequence, stream) part of the score, e.g. "X+Y/tag"."""
    return f"{s}/{m}"


def _seq_key(s: str) -> str:
    """Name of a sequence's StackedEncoder in the state dict, e.g. "XY" for S^{X+Y}."""
    return s.replace("+", "")


def _module_key(s: str, m: str) -> str:
    """Name of one (sequence, stream) encoder in the per-encoder state-dict layout of earlier
    model folders, e.g. "XY_tag" (converted on loading, see ``TEMA._load_from_state_dict``)."""
    return f"{_seq_key(s)}_{m}"


def _frozen(array, n: int, dim: int, what: str) -> torch.Tensor:
    """A frozen feature matrix with a zero padding row appended: (n, dim) float32."""
    out = torch.zeros(n, dim)
    if array is not None:
        a = torch.from_numpy(np.array(array, dtype=np.float32))
        if a.shape != (n - 1, dim):
            raise ValueError(f"{what} features have shape {tuple(a.shape)}, expected {(n - 1, dim)}")
        out[: n - 1] = a
    return out
