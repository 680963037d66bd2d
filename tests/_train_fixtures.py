"""Tiny inputs for the model and training tests, written through the real library contracts.

* ``make_features`` / ``make_tags``: image/text NPY features and an item_tags.parquet with manifests
  tied to a dataset's items fingerprint, as the features and tags stages write them.

Datasets come from conftest.py's ``make_dataset`` fixture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from temacli import artifacts
from temacli.data.dataset import Dataset
from temacli.features.store import write_manifest_for
from temacli.tags.store import ITEM_TAGS, TAG_VOCAB

def make_features(ds: Dataset, out: Path, dims=(("image", 12), ("text", 8)), seed: int = 0, items_fp: str | None = None) -> Path:
    """Random L2-normalised features per modality, with a few items missing each modality."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, dim in dims:
        emb = rng.normal(size=(ds.n_items, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        mask = np.ones(ds.n_items, dtype=bool)
        mask[::7] = False
        emb[~mask] = 0.0
        artifacts.write_npy(emb, out / f"{name}.npy")
        artifacts.write_npy(mask, out / f"has_{name}.npy")
        write_manifest_for(
            out, name, "features clip" if name == "image" else "features text", {"model": "fixture"},
            ds.path / "items.parquet", items_fp or ds.items_fingerprint,
            {"n_items": ds.n_items, "dim": dim, "missing": int((~mask).sum())},
        )
    return out


def make_tags(ds: Dataset, out: Path, n_tags: int = 6, seed: int = 0, items_fp: str | None = None,
              method: str = "llm") -> Path:
    """item_tags.parquet (2-3 tags per item, scores 30-99, weights score / sum of the item's scores, as
    `tags match --represent weighted` writes them) + tag_vocab.parquet + manifest."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = pa.table({
        "tag_index": pa.array(np.arange(n_tags), pa.int32()),
        "tag": [f"tag{i}" for i in range(n_tags)],
        "domain": ["food" if i < n_tags // 2 else "kitchen" for i in range(n_tags)],
    })
    artifacts.write_table(vocab, out / "tag_vocab.parquet", TAG_VOCAB)
    item, tag, score = [], [], []
    for v in range(ds.n_items):
        k = 2 + v % 2
        for t in rng.choice(n_tags, size=k, replace=False):
            item.append(v)
            tag.append(int(t))
            score.append(float(rng.integers(30, 100)))
    score = np.asarray(score, np.float32)
    item_a = np.asarray(item, np.int64)
    weight = score / np.bincount(item_a, weights=score)[item_a]  # weighted multi-hot: each item's weights sum to 1
    table = pa.table({
        "item": pa.array(item, pa.int32()),
        "tag_index": pa.array(tag, pa.int32()),
        "score": pa.array(score, pa.float32()),
        "weight": pa.array(weight, pa.float32()),
    })
    path = out / "item_tags.parquet"
    artifacts.write_table(table, path, ITEM_TAGS)
    m = artifacts.build_manifest(
        "tags match", {"method": method, "represent": "weighted"},
        inputs={"items": artifacts.input_record(ds.path / "items.parquet", items_fp or ds.items_fingerprint)},
        outputs={"item_tags": {"path": path.name, "fingerprint": artifacts.fingerprint(path)},
                 "tag_vocab": {"path": "tag_vocab.parquet", "fingerprint": artifacts.fingerprint(out / "tag_vocab.parquet")}},
        counts={"n_tags": n_tags, "rows": table.num_rows},
    )
    artifacts.write_manifest(path, m)
    return path
