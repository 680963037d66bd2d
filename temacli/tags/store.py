"""Tag artifacts: per-domain tag lists, the shared vocabulary, and the item-tag table.

    tags/<domain>.parquet        DOMAIN_TAGS: the kept list of Algorithm 1 for one domain
    tags/tag_vocab.parquet       TAG_VOCAB: union of the domains' lists with stable indices
    tags/item_tags.parquet       ITEM_TAGS: long table (item, tag, score, weight)
    (each with a ``.manifest.json`` beside it)

``item_tags`` manifests record ``inputs.items.fingerprint`` (the dataset's items table) and the
vocabulary's fingerprint; ``weight`` is the value used in Eq. 3/7 (after selection and representation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from temacli import artifacts
from temacli.artifacts import Column, Contract
from temacli.errors import TemacliError

DOMAIN_TAGS = Contract(
    "domain tags",
    (
        Column("domain", "string"),
        Column("tag", "string", doc="normalised tag text"),
        Column("votes", "int", pa.int32(), doc="number of runs whose list contained the tag"),
        Column("runs", "int", pa.int32(), doc="number of runs that parsed (R minus failures)"),
        Column("mean_score", "float", pa.float32(), doc="mean relevance score in [0, 1] over the votes"),
    ),
    fix="run `temacli tags generate` for this domain",
)

TAG_VOCAB = Contract(
    "tag vocabulary",
    (
        Column("tag_index", "int", pa.int32(), doc="stable index 0..n_tags-1"),
        Column("tag", "string"),
        Column("domain", "string", doc="domain whose list the tag came from"),
    ),
    fix="run `temacli tags match`, which writes tag_vocab.parquet beside item_tags.parquet",
)

ITEM_TAGS = Contract(
    "item tags",
    (
        Column("item", "int", pa.int32(), doc="dataset item index"),
        Column("tag_index", "int", pa.int32(), doc="index into tag_vocab.parquet"),
        Column("score", "float", pa.float32(), doc="relevance 1-100"),
        Column("weight", "float", pa.float32(), doc="weight in Eq. 3/7 after selection and representation"),
    ),
    fix="run `temacli tags match` for this dataset's items.parquet",
)


@dataclass
class ItemTags:
    """Item-tag weights as a sparse matrix in COO form, ready for Eq. 7."""

    item: np.ndarray  # int64 (nnz,)
    tag: np.ndarray  # int64 (nnz,)
    weight: np.ndarray  # float32 (nnz,)
    n_tags: int
    vocab: list[str]
    manifest: dict


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_item_tags(path, item, tag, score, weight, n_tags: int, represent: str | None, allow_empty: bool = False) -> None:
    """The ITEM_TAGS promises, checked where the file is read (one line naming the file and row):
    at least one row; item >= 0; tag_index in the vocabulary; scores finite in 1-100; weights finite in
    (0, 1]; one row per (item, tag); each item's weights sum to 1 (every representation of
    ``temacli.tags.represent`` promises it; onehot: exactly one row per item)."""
    fix = ITEM_TAGS.fix
    if item.size == 0:
        if allow_empty:
            return
        raise TemacliError(f"{path}: has no rows (no item got a tag), so it cannot be used; look at the report "
                           f"beside it and rerun `temacli tags match`")
    checks = (
        (item < 0, "item index is negative"),
        ((tag < 0) | (tag >= n_tags), f"tag_index outside the vocabulary (0..{n_tags - 1})"),
        (~np.isfinite(score) | (score < 1) | (score > 100), "score is not a number in 1-100"),
        (~np.isfinite(weight) | (weight <= 0) | (weight > 1 + 1e-6), "weight is not a number in (0, 1]"),
    )
    for bad, what in checks:
        if bad.any():
            r = _first(bad)
            raise TemacliError(f"{path}: row {r} (item {item[r]}, tag_index {tag[r]}, score {score[r]}, "
                               f"weight {weight[r]}): {what}; {fix}")
    order = np.lexsort((tag, item))
    i_s, t_s = item[order], tag[order]
    dup = (i_s[1:] == i_s[:-1]) & (t_s[1:] == t_s[:-1])
    if dup.any():
        r = int(order[1:][dup][0])
        raise TemacliError(f"{path}: row {r}: (item {item[r]}, tag_index {tag[r]}) appears twice; {fix}")
    uniq, inv, counts = np.unique(item, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=weight.astype(np.float64))
    off = np.abs(sums - 1.0) > 1e-3
    if off.any():
        k = _first(off)
        raise TemacliError(f"{path}: the weights of item {uniq[k]} sum to {sums[k]:.6g}, not 1 (every "
                           f"representation's weights sum to 1 per item); {fix}")
    if represent == "onehot" and (counts > 1).any():
        k = _first(counts > 1)
        raise TemacliError(f"{path}: item {uniq[k]} has {counts[k]} tags under --represent onehot (one expected); {fix}")


def load_item_tags(path: str | Path, dataset=None, allow_empty: bool = False) -> ItemTags:
    """Read item_tags.parquet and the vocabulary beside it; check they belong to ``dataset``."""
    path = Path(path)
    if path.is_dir():
        path = path / "item_tags.parquet"
    fix = ITEM_TAGS.fix
    table = artifacts.read_table(path, ITEM_TAGS)
    manifest = artifacts.read_manifest(path, stage="tags match", fix=fix)
    vocab_t = artifacts.read_table(path.parent / "tag_vocab.parquet", TAG_VOCAB)
    vocab_fp = manifest.get("outputs", {}).get("tag_vocab", {}).get("fingerprint")
    if vocab_fp is not None:
        artifacts.check_same(
            "tag vocabulary fingerprint", vocab_fp, artifacts.fingerprint(path.parent / "tag_vocab.parquet"),
            str(path.parent / "tag_vocab.parquet"), "rerun `temacli tags match` so both files come from one run",
        )
    idx = vocab_t.column("tag_index").to_numpy()
    if not np.array_equal(np.sort(idx), np.arange(len(idx))):
        raise TemacliError(f"{path.parent / 'tag_vocab.parquet'}: tag_index is not 0..n-1; {TAG_VOCAB.fix}")
    order = np.argsort(idx)
    names = vocab_t.column("tag").to_pylist()  # once, not once per tag
    vocab = [names[i] for i in order]
    item = table.column("item").to_numpy().astype(np.int64)
    tag = table.column("tag_index").to_numpy().astype(np.int64)
    weight = table.column("weight").to_numpy().astype(np.float32)
    score = table.column("score").to_numpy().astype(np.float32)
    check_item_tags(path, item, tag, score, weight, len(vocab), manifest.get("params", {}).get("represent"),
                    allow_empty)
    # rows first (their message says what is wrong), then: an edited but valid file is refused too
    own_fp = manifest.get("outputs", {}).get("item_tags", {}).get("fingerprint")
    if own_fp is not None:  # an item_tags.parquet edited after `tags match` wrote it is refused
        artifacts.check_same(
            "item tags fingerprint (the file changed after `tags match` wrote it)", own_fp,
            artifacts.fingerprint(path), str(path), "rerun `temacli tags match` (or `tags merge`) to rebuild it",
        )
    if dataset is not None:
        from temacli.data.dataset import check_items_fingerprint

        found = manifest.get("inputs", {}).get("items", {}).get("fingerprint")
        check_items_fingerprint(found, dataset, str(path), fix)
        if item.size and (item.min() < 0 or item.max() >= dataset.n_items):
            raise TemacliError(f"{path}: item index outside 0..{dataset.n_items - 1}; {fix}")
    return ItemTags(
        item=item,
        tag=tag,
        weight=weight,
        n_tags=len(vocab),
        vocab=vocab,
        manifest=manifest,
    )
