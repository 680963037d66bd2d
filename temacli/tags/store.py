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


def load_item_tags(path: str | Path, dataset=None) -> ItemTags:
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
    vocab = [vocab_t.column("tag").to_pylist()[i] for i in order]
    item = table.column("item").to_numpy().astype(np.int64)
    tag = table.column("tag_index").to_numpy().astype(np.int64)
    if tag.size and (tag.min() < 0 or tag.max() >= len(vocab)):
        raise TemacliError(f"{path}: tag_index outside the vocabulary (0..{len(vocab) - 1}); {fix}")
    if dataset is not None:
        from temacli.data.dataset import check_items_fingerprint

        found = manifest.get("inputs", {}).get("items", {}).get("fingerprint")
        check_items_fingerprint(found, dataset, str(path), fix)
        if item.size and (item.min() < 0 or item.max() >= dataset.n_items):
            raise TemacliError(f"{path}: item index outside 0..{dataset.n_items - 1}; {fix}")
    return ItemTags(
        item=item,
        tag=tag,
        weight=table.column("weight").to_numpy().astype(np.float32),
        n_tags=len(vocab),
        vocab=vocab,
        manifest=manifest,
    )
