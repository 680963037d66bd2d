"""Build a model from its config and score with it (the interface ``eval`` and ``recommend`` use).

``build_model`` builds any kind of :mod:`temacli.model.registry`. ``Trained`` implements
:class:`temacli.evaluation.protocols.Scorer`: NumPy in, NumPy out, no grad, batched, on CPU or CUDA.
``DomainRouter`` puts one trained model per target domain behind the same interface (C2DSR's
per-domain model selection). Reading and writing the model folder is :mod:`temacli.model.folder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from temacli.errors import TemacliError
from temacli.model import registry
from temacli.model.registry import KINDS  # noqa: F401  (the model kinds, from the registry)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TemacliError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise TemacliError(f"--device {device}: choose auto, cpu, cuda or cuda:N")
    return device


def build_model(config: dict, image=None, text=None, tags=None):
    """A fresh model from a config.json dict, built by the registry entry its ``kind`` names.

    Frozen inputs default to zeros of the recorded shape (``temacli.model.folder.load_trained`` then
    fills them from the weights file)."""
    spec = registry.get(config.get("kind"), where="config.json: model kind")
    cfg = spec.config_from_dict(config.get("model") or {})
    if tags is None and spec.accepts("tags") and "tag" in getattr(cfg, "streams", ()):
        nnz = int(config.get("tag_nnz", 0))
        tags = (np.zeros(nnz, np.int64), np.zeros(nnz, np.int64), np.zeros(nnz, np.float32))
    return spec.build(cfg, image=image, text=text, tags=tags)


class Trained:
    """A trained model ready to score; implements the evaluation ``Scorer`` protocol."""

    def __init__(self, model, config: dict, manifest: dict | None = None, device: str = "cpu",
                 prepared: dict | None = None):
        """``prepared``: the item tables ``model.prepare()`` would compute, read from the model folder's
        prepared file (:mod:`temacli.model.folder`); they are used instead of computing them."""
        import torch

        self.model = model.to(device).eval()
        self.config = config
        self.manifest = manifest or {}
        self.device = torch.device(device)
        self.max_len = int(config["max_len"])
        self.pad = int(config["n_x"]) + int(config["n_y"])
        self.n_x, self.n_y = int(config["n_x"]), int(config["n_y"])
        self.kind = config["kind"]
        self.from_prepared = prepared is not None  # item tables read from the folder, not computed
        if prepared is not None:
            self.model._tables = prepared
        else:
            self.model.prepare()

    def refresh(self) -> None:
        """Recompute cached item tables after the weights changed (used during training)."""
        self.model.eval()
        self.model.prepare()

    def _t(self, a: np.ndarray):
        import torch

        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    def _check(self, items: np.ndarray) -> None:
        if items.size and (items.min() < 0 or items.max() >= self.pad):
            raise TemacliError(f"item index outside 0..{self.pad - 1}; pass items of this model's dataset")

    def encode(self, histories: np.ndarray, target_domain: np.ndarray) -> Any:
        import torch

        histories = np.asarray(histories, dtype=np.int64)
        if histories.ndim != 2:
            raise TemacliError(f"histories must be (batch, max_len), got shape {histories.shape}")
        if histories.shape[1] > self.max_len:
            histories = histories[:, -self.max_len :]
        with torch.no_grad():
            return self.model.encode(self._t(histories), self._t(target_domain))

    def score_candidates(self, state: Any, items: np.ndarray) -> np.ndarray:
        """(B, C) items, each row from that row's target domain -> (B, C) float32 scores (Eq. 16)."""
        items = np.asarray(items, dtype=np.int64)
        self._check(items)
        return self.model.score(state, self._t(items)).float().cpu().numpy()

    def score_items(self, state: Any, items: np.ndarray) -> np.ndarray:
        """One shared (M,) item list for every row -> (B, M) float32."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        self._check(items)
        return self.model.score(state, self._t(items)).float().cpu().numpy()

    def explain(self, state: Any, items: np.ndarray) -> dict[str, np.ndarray]:
        """Additive parts of the score ("X/id", ..., "X+Y/tag"); they sum to ``score_candidates``."""
        items = np.asarray(items, dtype=np.int64)
        self._check(items)
        parts = self.model.explain(state, self._t(items))
        return {k: v.float().cpu().numpy() for k, v in parts.items()}


class DomainRouter:
    """One scorer per target domain behind the :class:`~temacli.evaluation.protocols.Scorer` interface.

    C2DSR (and the paper after it) reports each domain's test numbers from that domain's best
    validation epoch; ``temacli train --early-stop mrr|hr@K|ndcg@K`` keeps those weights as
    ``model.<domain>.safetensors``. Rows whose target is in domain ``d`` are encoded and scored by
    ``scorers[d]``; each row is still encoded once. ``kind``, ``config`` and ``manifest`` describe the
    model folder the scorers come from (given by whoever opens it; defaults: the first scorer's).
    """

    def __init__(self, scorers: tuple, kind: str | None = None, config: dict | None = None,
                 manifest: dict | None = None):
        a, b = scorers
        if (int(a.max_len), int(a.pad)) != (int(b.max_len), int(b.pad)):
            raise ValueError("the two scorers differ in max_len or pad")
        self.scorers = (a, b)
        self.max_len, self.pad = int(a.max_len), int(a.pad)
        self.n_x, self.n_y = getattr(a, "n_x", None), getattr(a, "n_y", None)
        self.config: dict = config if config is not None else dict(getattr(a, "config", None) or {})
        self.manifest: dict = manifest if manifest is not None else dict(getattr(a, "manifest", None) or {})
        self.kind: str | None = kind or getattr(a, "kind", None) or self.config.get("kind")
        self.device = getattr(a, "device", "cpu")
        self.explainable = all(hasattr(s, "explain") for s in self.scorers)

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
