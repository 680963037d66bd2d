"""Load a trained model folder and score with it (the interface ``eval`` and ``recommend`` use).

    model/
      model.safetensors   weights and frozen buffers (features, tag weights): the folder is self-contained
      config.json         kind, model hyper-parameters, training options, dataset fingerprint, inputs
      metrics.jsonl       one line per epoch
      manifest.json       stage "train"
      checkpoints/last.pt resumable state

``Trained`` implements :class:`temacli.evaluation.protocols.Scorer`: NumPy in, NumPy out, no grad,
batched, on CPU or CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from temacli import artifacts
from temacli.errors import TemacliError

KINDS = ("tema", "sasrec", "gru4rec")
STAGE = "train"


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
    """A fresh model from a config.json dict; frozen inputs default to zeros of the recorded shape
    (``load_trained`` then fills them from model.safetensors)."""
    kind = config.get("kind")
    if kind == "tema":
        from temacli.model.tema import TEMA, TEMAConfig

        cfg = TEMAConfig(**config["model"])
        if tags is None and "tag" in cfg.streams:
            nnz = int(config.get("tag_nnz", 0))
            tags = (np.zeros(nnz, np.int64), np.zeros(nnz, np.int64), np.zeros(nnz, np.float32))
        return TEMA(cfg, image=image, text=text, tags=tags)
    if kind in ("sasrec", "gru4rec"):
        from temacli.model.baselines import BaselineConfig, build_baseline

        return build_baseline(BaselineConfig(**config["model"]))
    raise TemacliError(f"config.json: unknown model kind '{kind}'; choose one of {', '.join(KINDS)}")


class Trained:
    """A trained model ready to score; implements the evaluation ``Scorer`` protocol."""

    def __init__(self, model, config: dict, manifest: dict | None = None, device: str = "cpu"):
        import torch

        self.model = model.to(device).eval()
        self.config = config
        self.manifest = manifest or {}
        self.device = torch.device(device)
        self.max_len = int(config["max_len"])
        self.pad = int(config["n_x"]) + int(config["n_y"])
        self.n_x, self.n_y = int(config["n_x"]), int(config["n_y"])
        self.kind = config["kind"]
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


def read_config(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    fix = f"train a model with `temacli train --out {model_dir}`"
    if not model_dir.is_dir():
        raise TemacliError(f"{model_dir}: model folder not found; {fix}")
    return artifacts.read_json(model_dir / "config.json", what="model config", fix=fix)


def load_trained(model_dir: str | Path, device: str = "auto", dataset=None, weights: str = "model.safetensors") -> Trained:
    """Rebuild a trained model from its folder; refuse it for another dataset than ``dataset``."""
    from temacli.training.checkpoint import load_weights

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    manifest = artifacts.read_manifest(model_dir, stage=STAGE, fix=f"train a model with `temacli train --out {model_dir}`")
    if dataset is not None:
        artifacts.check_same(
            "dataset fingerprint (the model was trained on another dataset folder)",
            config.get("dataset_fingerprint"),
            dataset.fingerprint,
            str(model_dir),
            f"evaluate with the dataset the model was trained on, or retrain with --data {dataset.path}",
        )
    device = resolve_device(device)
    model = build_model(config)
    load_weights(model, model_dir / weights, device="cpu")
    return Trained(model, config, manifest, device)
