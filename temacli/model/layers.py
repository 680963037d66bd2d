"""Building blocks shared by TEMA and the baselines: a causal self-attention encoder (Eq. 10).

Sequences are *left-padded*: row ``b`` holds its items in the last columns and ``valid[b, t]`` says
whether column ``t`` is a real item. Two rules hold for every encoder here:

* padding never attends: a real position only attends to real positions at or before it;
* the future never leaks: position ``t`` only sees positions ``<= t`` (causal mask).

A padded position attends to itself only (so no softmax row is empty); its output is never used.
"""

from __future__ import annotations

import abc

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention_mask(valid: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, L, L) mask, True = may attend: causal, real keys only, plus the diagonal."""
    B, L = valid.shape
    causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(L, dtype=torch.bool, device=valid.device)
    keys = valid[:, None, :]  # (B, 1, L): which keys are real
    return ((causal & keys) | eye)[:, None, :, :]


class Dropout(nn.Module):
    """Inverted dropout from a uniform draw: ``x * (u >= p) / (1 - p)``.

    Same distribution as ``nn.Dropout``; about 1.7x faster on CPU, where torch's ``bernoulli_`` is
    slow and was a sixth of a TEMA training step.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # one float mask holding 0 or 1/(1-p), built in place: one product forward and one backward
        mask = torch.rand_like(x, dtype=torch.float32).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head QKV attention, softmax(QK^T / sqrt(d_k)) V (Eq. 10), with an output projection."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dimension {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # dropout: on the residual only
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + ffn(ln(x)) when ``ffn``."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, dropout)
        self.drop = Dropout(dropout)
        self.ffn = None
        if ffn:
            self.ln2 = nn.LayerNorm(dim)
            self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        if self.ffn is not None:
            x = x + self.drop(self.ffn(self.ln2(x)))
        return x


class Encoder(nn.Module):
    """Item embeddings (B, L, D) + learned positions -> causal blocks -> final LayerNorm."""

    def __init__(self, dim: int, n_blocks: int, n_heads: int, dropout: float, max_len: int, ffn: bool = True):
        super().__init__()
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)  # positions start small beside the item embeddings
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout, ffn) for _ in range(n_blocks))
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, D) item embeddings, ``positions`` (B, L) int64, ``valid`` (B, L) bool."""
        positions = positions.clamp(0, self.pos.num_embeddings - 1)
        h = self.drop(x + self.pos(positions)) * valid[..., None]
        mask = attention_mask(valid)
        for block in self.blocks:
            h = block(h, mask)
        return self.ln(h)


class StackedEncoder(nn.Module):
    """``n`` independent :class:`Encoder` s of the same shape, run as one: every weight is stacked on a
    leading axis of size ``n`` and every linear layer is one batched matrix product over the ``n``
    encoders (``torch.baddbmm``), so TEMA's four streams of one sequence cost a handful of large
    kernels instead of four modules' worth of small ones.

    Same function as ``n`` Encoders (``from_encoders`` copies their weights; ``encoder_state`` gives one
    back in the Encoder layout), with two exact rewrites:

    * the pre-norm LayerNorms' scale and shift are folded into the next linear layer,
      ``W (x_hat * g + b) + c = (W * g) x_hat + (W b + c)``, which saves two passes over the activations;
    * ``rows`` selects flat positions *before* the final LayerNorm (it acts per position);
      ``last_only`` runs the last block's queries at the last position only (keys and values still
      over the whole sequence): what inference needs, since the state after the last item is the
      only one it returns.

    Inputs: ``x`` (n, B, L, D), one sequence per encoder sharing ``positions`` and ``valid`` (B, L).
    """

    def __init__(self, n: int, dim: int, n_blocks: int, n_heads: int, dropout: float, max_len: int, ffn: bool = True):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dimension {dim} is not divisible by {n_heads} heads")
        self.n, self.dim, self.n_heads, self.max_len = n, dim, n_heads, max_len
        self.pos = nn.Parameter(torch.randn(n, max_len, dim) * 0.02)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(StackedBlock(n, dim, n_heads, dropout, ffn) for _ in range(n_blocks))
        self.ln_w = nn.Parameter(torch.ones(n, dim))
        self.ln_b = nn.Parameter(torch.zeros(n, dim))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                rows: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """(n, B, L, D) outputs; (n, P, D) at flat positions ``rows`` (b * L + t); (n, B, D) with ``last_only``."""
        n, B, L, D = x.shape
        positions = positions.clamp(0, self.max_len - 1)
        offs = (torch.arange(n, device=x.device) * self.max_len)[:, None]
        pos = F.embedding(offs + positions.reshape(1, -1), self.pos.reshape(n * self.max_len, D))
        h = self.drop(x + pos.view(n, B, L, D)) * valid[None, :, :, None]
        mask = attention_mask(valid)
        for i, block in enumerate(self.blocks):
            h = block(h, mask, last_only=last_only and i == len(self.blocks) - 1)
        if last_only:
            h = h[:, :, -1] if h.dim() == 4 else h  # (n, B, D)
        elif rows is not None:
            h = h.reshape(n, B * L, D).index_select(1, rows)
        y = F.layer_norm(h, (D,))
        shape = (n,) + (1,) * (y.dim() - 2) + (D,)
        return torch.addcmul(self.ln_b.view(shape), y, self.ln_w.view(shape))

    @classmethod
    def from_encoders(cls, encoders) -> "StackedEncoder":
        """A StackedEncoder computing exactly what the given Encoders compute (weights copied)."""
        e0 = encoders[0]
        b0 = e0.blocks[0]
        out = cls(len(encoders), e0.pos.embedding_dim, len(e0.blocks), b0.attn.n_heads, e0.drop.p,
                  e0.pos.num_embeddings, b0.ffn is not None)
        with torch.no_grad():
            out.load_state_dict(stack_encoder_states([e.state_dict() for e in encoders]))
        return out

    def encoder_state(self, j: int) -> dict:
        """Encoder ``j``'s weights in the layout of :class:`Encoder` (its state dict)."""
        return unstack_encoder_state(self.state_dict(), j)


# Encoder state-dict keys and their stacked counterparts ({i}: block index)
_STACKED_KEYS = {
    "pos.weight": "pos", "ln.weight": "ln_w", "ln.bias": "ln_b",
    "blocks.{i}.ln1.weight": "blocks.{i}.ln1_w", "blocks.{i}.ln1.bias": "blocks.{i}.ln1_b",
    "blocks.{i}.attn.qkv.weight": "blocks.{i}.qkv_w", "blocks.{i}.attn.qkv.bias": "blocks.{i}.qkv_b",
    "blocks.{i}.attn.proj.weight": "blocks.{i}.proj_w", "blocks.{i}.attn.proj.bias": "blocks.{i}.proj_b",
    "blocks.{i}.ln2.weight": "blocks.{i}.ln2_w", "blocks.{i}.ln2.bias": "blocks.{i}.ln2_b",
    "blocks.{i}.ffn.0.weight": "blocks.{i}.ff1_w", "blocks.{i}.ffn.0.bias": "blocks.{i}.ff1_b",
    "blocks.{i}.ffn.2.weight": "blocks.{i}.ff2_w", "blocks.{i}.ffn.2.bias": "blocks.{i}.ff2_b",
}


def _stacked_name(key: str) -> str | None:
    """The stacked name of one Encoder state-dict key ("blocks.0.attn.qkv.weight" -> "blocks.0.qkv_w")."""
    parts = key.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        pattern = ".".join(["blocks", "{i}"] + parts[2:])
        new = _STACKED_KEYS.get(pattern)
        return new.replace("{i}", parts[1]) if new else None
    return _STACKED_KEYS.get(key)


def stack_encoder_states(states: list) -> dict:
    """n Encoder state dicts -> one StackedEncoder state dict (the old per-encoder layout loads this way)."""
    out = {}
    for key in states[0]:
        new = _stacked_name(key)
        if new is None:
            raise KeyError(f"unknown encoder weight '{key}'")
        out[new] = torch.stack([s[key] for s in states])
    return out


def unstack_encoder_state(state: dict, j: int) -> dict:
    """Encoder ``j``'s state dict out of a StackedEncoder state dict."""
    inverse = {new: old for old, new in _STACKED_KEYS.items()}
    back = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            old = inverse[".".join(["blocks", "{i}"] + parts[2:])].replace("{i}", parts[1])
        else:
            old = inverse[key]
        back[old] = value[j]
    return back


class StackedBlock(nn.Module):
    """``n`` pre-norm :class:`Block` s with stacked weights (see :class:`StackedEncoder`)."""

    def __init__(self, n: int, dim: int, n_heads: int, dropout: float, ffn: bool = True):
        super().__init__()
        self.n_heads = n_heads

        def linear(d_out, d_in):  # nn.Linear's default initialisation, per encoder
            w = torch.empty(n, d_out, d_in)
            b = torch.empty(n, d_out)
            for k in range(n):
                ref = nn.Linear(d_in, d_out)
                w[k], b[k] = ref.weight.detach(), ref.bias.detach()
            return nn.Parameter(w), nn.Parameter(b)

        self.ln1_w, self.ln1_b = nn.Parameter(torch.ones(n, dim)), nn.Parameter(torch.zeros(n, dim))
        self.qkv_w, self.qkv_b = linear(3 * dim, dim)
        self.proj_w, self.proj_b = linear(dim, dim)
        self.drop = Dropout(dropout)
        self.ffn = ffn
        if ffn:
            self.ln2_w, self.ln2_b = nn.Parameter(torch.ones(n, dim)), nn.Parameter(torch.zeros(n, dim))
            self.ff1_w, self.ff1_b = linear(dim, dim)
            self.ff2_w, self.ff2_b = linear(dim, dim)

    @staticmethod
    def _linear(x, w, b):
        """x (n, T, d_in) @ w (n, d_out, d_in)^T + b (n, d_out): one batched product."""
        return torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))

    @staticmethod
    def _norm_linear(x, g, beta, w, b):
        """linear(LayerNorm(x) * g + beta) with the LayerNorm's affine folded into the weights."""
        y = F.layer_norm(x, (x.shape[-1],))
        return StackedBlock._linear(y, w * g[:, None, :], b + torch.einsum("noi,ni->no", w, beta))

    def forward(self, h: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        n, B, L, D = h.shape
        H, dh = self.n_heads, D // self.n_heads
        flat = h.reshape(n, B * L, D)
        if last_only:  # keys and values over the sequence, the query at its last position only
            y = F.layer_norm(flat, (D,))
            w = self.qkv_w * self.ln1_w[:, None, :]
            b = self.qkv_b + torch.einsum("noi,ni->no", self.qkv_w, self.ln1_b)
            kv = self._linear(y, w[:, D:], b[:, D:])
            q = self._linear(y.view(n, B, L, D)[:, :, -1], w[:, :D], b[:, :D])  # (n, B, D)
            k, v = kv.view(n * B, L, 2, H, dh).permute(2, 0, 3, 1, 4).unbind(0)  # (nB, H, L, dh)
            q = q.reshape(n * B, 1, H, dh).transpose(1, 2)
            m = mask[:, :, -1:, :].expand(B, 1, 1, L)
            m = m[None].expand(n, B, 1, 1, L).reshape(n * B, 1, 1, L)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=m)  # (nB, H, 1, dh)
            x = h[:, :, -1] + self.drop(self._linear(a.transpose(1, 2).reshape(n, B, D), self.proj_w, self.proj_b))
            if self.ffn:
                x = x + self.drop(self._ffn(x))
            return x  # (n, B, D)
        qkv = self._norm_linear(flat, self.ln1_w, self.ln1_b, self.qkv_w, self.qkv_b)  # (n, BL, 3D)
        q, k, v = qkv.view(n * B, L, 3, H, dh).permute(2, 0, 3, 1, 4).unbind(0)  # each (nB, H, L, dh)
        m = mask[None].expand(n, B, 1, L, L).reshape(n * B, 1, L, L)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=m)  # dropout: on the residual only
        a = a.transpose(1, 2).reshape(n, B * L, D)
        flat = flat + self.drop(self._linear(a, self.proj_w, self.proj_b))
        if self.ffn:
            flat = flat + self.drop(self._ffn(flat))
        return flat.view(n, B, L, D)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(shape[0], -1, shape[-1])
        y = F.gelu(self._norm_linear(x, self.ln2_w, self.ln2_b, self.ff1_w, self.ff1_b))
        return self._linear(y, self.ff2_w, self.ff2_b).view(shape)


class _ChunkedLSE(torch.autograd.Function):
    """logsumexp over the columns of ``H @ R^T`` computed ``chunk`` rows at a time, never holding the
    whole logit matrix: the backward pass recomputes each chunk's logits (one extra matrix product)
    instead of storing them. Matrix products run in ``dtype`` (bf16 under autocast), exp/sum in fp32."""

    @staticmethod
    def forward(ctx, H, R, chunk: int, dtype):
        out = torch.empty(H.shape[0], device=H.device, dtype=torch.float32)
        Hc, Rc = H.to(dtype), R.to(dtype)
        for c in chunks(H.shape[0], chunk):
            out[c] = torch.logsumexp((Hc[c] @ Rc.T).float(), dim=-1)
        ctx.save_for_backward(H, R, out)
        ctx.chunk, ctx.dtype = chunk, dtype
        return out

    @staticmethod
    def backward(ctx, g):
        H, R, lse = ctx.saved_tensors
        Hc, Rc = H.to(ctx.dtype), R.to(ctx.dtype)
        gH = torch.empty_like(H, dtype=torch.float32)
        gR = torch.zeros(R.shape, device=R.device, dtype=torch.float32)
        for c in chunks(H.shape[0], ctx.chunk):
            p = (Hc[c] @ Rc.T).float().sub_(lse[c, None]).exp_().mul_(g[c, None])  # softmax * grad
            p = p.to(ctx.dtype)
            gH[c] = (p @ Rc).float()
            gR += (p.T @ Hc[c]).float()
        return gH.to(H.dtype), gR.to(R.dtype), None, None


def _product_dtype(A: torch.Tensor, B: torch.Tensor) -> torch.dtype:
    """The precision ``A @ B.T`` runs in here: autocast's when it is on (bf16 on CPU), else the inputs'."""
    dev = A.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.promote_types(A.dtype, B.dtype)


LSE_CHUNK_BYTES = 64 * 2**20  # logit blocks above this are computed in chunks (see logsumexp_matmul)


def logsumexp_matmul(H: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``logsumexp(H @ R^T, dim=-1)`` in fp32, for H (P, q) and R (N, q).

    When the (P, N) logits would exceed ``LSE_CHUNK_BYTES`` they are computed in row chunks and
    recomputed in the backward pass (:class:`_ChunkedLSE`): a full softmax over a large domain then
    needs memory for one chunk, not for all logits and their gradient.
    """
    if H.shape[0] * R.shape[0] * 4 <= LSE_CHUNK_BYTES:
        return torch.logsumexp((H @ R.T).float(), dim=-1)
    dev = H.device.type
    dtype = _product_dtype(H, R)
    chunk = max(1, LSE_CHUNK_BYTES // (4 * R.shape[0]))
    with torch.autocast(dev, enabled=False):
        return _ChunkedLSE.apply(H, R, chunk, dtype)


SAMPLED_CHUNK_BYTES = 2**20  # fp32 logits per row block of sampled_logsumexp: about one core's L2 cache


class _SampledLSE(torch.autograd.Function):
    """logsumexp over the columns of ``H @ N^T`` with ``hits`` left out (see :func:`sampled_logsumexp`).

    The product is one large matrix product (bf16 under autocast); the elementwise work that follows
    it (mask, fp32 conversion, max, exp, sum and, backward, the softmax times the gradient) runs on
    blocks of rows small enough to stay in cache, instead of a handful of passes over the whole
    logit matrix in memory. Only the (masked) product is kept for the backward pass, in the product's
    precision (bf16 under autocast: half the memory of the fp32 logits autograd kept before).
    """

    @staticmethod
    def forward(ctx, H, N, hits, dtype):
        S, P, q = H.shape
        Hc, Nc = H.reshape(S * P, q).to(dtype), N.to(dtype)
        L = Hc @ Nc.T  # (S*P, K), viewed as (S, P, K) below: one block holds some targets of every sequence
        out = torch.empty(S, P, device=H.device, dtype=torch.float32)
        rows = max(1, SAMPLED_CHUNK_BYTES // (4 * S * max(N.shape[0], 1)))
        L3 = L.view(S, P, -1)
        for c in chunks(P, rows):
            Lc = L3[:, c].masked_fill_(hits[c], float("-inf"))
            out[:, c] = torch.logsumexp(Lc.float(), dim=-1)
        ctx.save_for_backward(Hc, Nc, L, out)
        ctx.rows, ctx.dtypes = rows, (H.dtype, N.dtype)
        return out

    @staticmethod
    def backward(ctx, g):
        Hc, Nc, L, lse = ctx.saved_tensors
        S, P = lse.shape
        safe = lse.masked_fill(torch.isinf(lse), 0.0)  # a row with every column left out has no gradient
        g = g.float()
        G = torch.empty_like(L)
        L3, G3 = L.view(S, P, -1), G.view(S, P, -1)
        for c in chunks(P, ctx.rows):  # softmax * grad, block by block; 0 where left out (-inf)
            G3[:, c] = L3[:, c].float().sub_(safe[:, c, None]).exp_().mul_(g[:, c, None])
        gH = (G @ Nc).view(S, P, -1)
        gN = G.T @ Hc
        return gH.to(ctx.dtypes[0]), gN.to(ctx.dtypes[1]), None, None


def sampled_logsumexp(H: torch.Tensor, N: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
    """``logsumexp(H @ N^T)`` over the columns that ``hits`` does not mark, in fp32.

    H (S, P, q) or (P, q) user vectors, N (K, q) shared negatives, hits (P, K) True where a negative
    is the row's own target (left out). Same value and gradients as
    ``torch.logsumexp((H @ N.T).float().masked_fill(hits, -inf), -1)`` (a test), with the
    elementwise work done block by block (:class:`_SampledLSE`). The product runs in the autocast
    precision when autocast is on (bf16 on CPU), else in the inputs' precision.
    """
    flat = H.dim() == 2
    H3 = H[None] if flat else H
    dev = H.device.type
    dtype = _product_dtype(H, N)
    with torch.autocast(dev, enabled=False):
        out = _SampledLSE.apply(H3, N, hits, dtype)
    return out[0] if flat else out


def positions_from_start(valid: torch.Tensor) -> torch.Tensor:
    """Position of each real item counted from the row's first real item (0-based); 0 on padding."""
    return (valid.long().cumsum(1) - 1).clamp(min=0)


def compact_right(valid: torch.Tensor) -> torch.Tensor:
    """Column order that moves a row's selected positions to the right end, keeping their order.

    ``x.gather(1, order)`` is then a left-padded compact list of the selected items.
    """
    return torch.sort(valid.to(torch.int8), dim=1, stable=True).indices


class Recommender(nn.Module, abc.ABC):
    """What the training loop and ``temacli.model.api`` need from every model (TEMA, SASRec, GRU4Rec).

    Items are global indices (X: ``0..n_x-1``, Y: ``n_x..n_x+n_y-1``); ``pad = n_x + n_y``.

    * ``forward(seq, target, negatives)``: training loss. ``seq`` (B, L) left-padded inputs, ``target``
      (B, L) the next item at each position (``pad`` where there is none). ``negatives`` is None for a
      full softmax over the target's domain, or (2, K) shared negatives of domain X (row 0) and Y (row 1)
      for a sampled softmax. Returns ``(loss_sum, n_targets)``.
    * ``prepare()``: cache item tables for inference (call after the weights change).
    * ``encode(seq, domain)`` -> state; ``score(state, items)`` with items (B, C) or shared (M,);
      ``explain(state, items)`` -> additive parts of ``score``.
    """

    kind = "base"

    def __init__(self, n_x: int, n_y: int):
        super().__init__()
        self.n_x, self.n_y = int(n_x), int(n_y)
        self.n_items = self.n_x + self.n_y
        self.pad = self.n_items

    @abc.abstractmethod
    def config_dict(self) -> dict:
        """The model's hyper-parameters, as stored in config.json."""

    def target_positions(self, target: torch.Tensor):
        """Flat indices of real targets and their domains (0 = X, 1 = Y)."""
        flat = target.reshape(-1)
        keep = (flat != self.pad).nonzero(as_tuple=True)[0]
        tgt = flat[keep]
        return keep, tgt, (tgt >= self.n_x).long()

    def ordered_targets(self, target: torch.Tensor):
        """Real targets sorted by domain (X first, so each domain is one slice): (keep, tgt, dom, n_x_targets)."""
        keep, tgt, dom = self.target_positions(target)
        order = torch.argsort(dom, stable=True)
        keep, tgt, dom = keep[order], tgt[order], dom[order]
        return keep, tgt, dom, int((dom == 0).sum())

    def zero_loss(self):
        """The loss of a batch (share) without targets: zero, but reaching every weight (DDP needs that)."""
        return sum(p.sum() for p in self.parameters()) * 0.0, 0

    def domain_slice(self, d: int) -> slice:
        return slice(0, self.n_x) if d == 0 else slice(self.n_x, self.n_items)


def chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def runtime_info(model: nn.Module, device: str, amp: bool) -> dict:
    """Which kernels and precision a training or inference run of ``model`` actually uses.

    Meant for the run's config.json ("which kernels and precision actually ran"): the autocast
    precision of matrix products, the precision of softmax/logsumexp (always fp32), the encoder
    implementation and the CPU kernel library torch dispatches to.
    """
    dev = torch.device(device)
    info: dict = {
        "device": str(dev),
        "torch": torch.__version__,
        "matmul_precision": "bf16 (autocast)" if amp else "fp32",
        "softmax_precision": "fp32",
        "encoders": getattr(model, "encoder_impl", "per-encoder modules"),
        "full_softmax_logsumexp": f"chunked above {LSE_CHUNK_BYTES // 2**20} MiB of logits, recomputed in backward",
    }
    if dev.type == "cpu":
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["threads"] = torch.get_num_threads()
        info["mkldnn"] = bool(torch.backends.mkldnn.is_available())
        info["mkldnn_bf16"] = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    elif dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return info
