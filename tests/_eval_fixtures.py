"""Fixtures for the evaluation and recommend tests: a fake trained model.

Datasets come from conftest.py's ``make_dataset(root, preset="eval")``; really trained models from its
``trained_runs``. ``DotModel`` implements the model interface (``temacli.model.api.Trained``) with NumPy dot
products over two modalities (``id``, ``img``) and three branches (``X``, ``Y``, ``X+Y``), so its
``explain`` parts add up exactly to its scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from temacli.data.dataset import Dataset


class DotModel:
    """A fake trained model: score(item) = sum over branches b, modalities m of h[b, m] . E[m][item].

    ``h[X]`` averages the history's X items, ``h[Y]`` its Y items, ``h[X+Y]`` all of them (the
    target-domain vector ``dom_vec`` is added to the X+Y branch). ``calls`` counts method calls so
    tests can check that each sequence is encoded once.
    """

    MODALITIES = ("id", "img")
    BRANCHES = ("X", "Y", "X+Y")

    def __init__(self, dataset: Dataset, dim: int = 6, seed: int = 0, max_len: int = 8, kind: str = "fake"):
        rng = np.random.default_rng(seed)
        self.n_x, self.n_y = dataset.n_x, dataset.n_y
        self.pad = dataset.pad
        self.max_len = max_len
        n = dataset.n_items + 1
        self.E = {m: rng.normal(size=(n, dim)).astype(np.float32) for m in self.MODALITIES}
        for m in self.MODALITIES:
            self.E[m][self.pad] = 0.0
        self.dom_vec = rng.normal(size=(2, dim)).astype(np.float32)
        self.config = {"kind": kind, "dataset_fingerprint": dataset.fingerprint}
        self.manifest = {"inputs": {"dataset": {"path": str(dataset.path), "fingerprint": dataset.fingerprint}}}
        self.calls = {"encode": 0, "encoded_rows": 0, "score_candidates": 0, "score_items": 0}
        self.device = "cpu"

    def encode(self, histories: np.ndarray, target_domain: np.ndarray) -> dict:
        self.calls["encode"] += 1
        self.calls["encoded_rows"] += len(histories)
        h = np.asarray(histories, dtype=np.int64)
        valid = h != self.pad
        is_x = valid & (h < self.n_x)
        is_y = valid & (h >= self.n_x)
        state = {}
        for b, mask in (("X", is_x), ("Y", is_y), ("X+Y", valid)):
            w = mask / np.maximum(mask.sum(1, keepdims=True), 1)
            for m in self.MODALITIES:
                v = np.einsum("bl,bld->bd", w, self.E[m][h])
                if b == "X+Y":
                    v = v + self.dom_vec[np.asarray(target_domain, dtype=np.int64)]
                state[(b, m)] = v.astype(np.float32)
        return state

    def explain(self, state: dict, items: np.ndarray) -> dict[str, np.ndarray]:
        items = np.asarray(items, dtype=np.int64)
        return {f"{b}/{m}": np.einsum("bd,bcd->bc", state[(b, m)], self.E[m][items]).astype(np.float32)
                for b in self.BRANCHES for m in self.MODALITIES}

    def score_candidates(self, state: dict, items: np.ndarray) -> np.ndarray:
        self.calls["score_candidates"] += 1
        return sum(self.explain(state, items).values())

    def score_items(self, state: dict, items: np.ndarray) -> np.ndarray:
        self.calls["score_items"] += 1
        items = np.asarray(items, dtype=np.int64)
        return sum(state[(b, m)] @ self.E[m][items].T for b in self.BRANCHES for m in self.MODALITIES)


def write_fake_model_dir(path: Path, model: DotModel) -> Path:
    """A model folder a fake loader can open: manifest.json, config.json and the arrays."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.config))
    (path / "manifest.json").write_text(json.dumps({"stage": "train", **model.manifest}))
    np.save(path / "weights.npy", np.concatenate([model.E[m] for m in model.MODALITIES], axis=1))
    return path


@pytest.fixture
def fake_models(monkeypatch):
    """Register fake models by folder; eval and recommend load them instead of real ones."""
    registry: dict[tuple[str, str], DotModel] = {}

    def loader(model_dir, device, dataset, weights="model.safetensors"):
        key = (str(Path(model_dir).resolve()), weights)
        if key not in registry:
            raise AssertionError(f"no fake model registered for {model_dir} ({weights})")
        return registry[key]

    import temacli.evaluation.evaluate as ev

    monkeypatch.setattr(ev, "_load_trained", loader)

    def add(path: Path, model: DotModel, weights: str = "model.safetensors") -> Path:
        write_fake_model_dir(path, model)
        (path / weights).write_bytes(model.E["id"].tobytes())  # what a weights file's fingerprint sees
        registry[(str(path.resolve()), weights)] = model
        return path

    return add
