"""The dataset folder written by ``temacli data split`` (and the importers), and its reader.

Layout (documented in docs/artifacts.md)::

    data/
      items.parquet            one row per item index (ITEMS)
      train.parquet            SPLIT rows: training sequences (history + target = one sequence)
      valid.parquet, test.parquet
                               SPLIT rows: one evaluation instance each
      candidates_valid.npy     int32 (n_valid, 999): negatives per valid row, row-aligned
      candidates_test.npy      int32 (n_test, 999)
      stats.json               Table I figures per domain
      report.json              what filtering dropped, items without text, ...
      manifest.json

The manifest records a content fingerprint for every file; :class:`Dataset` checks a file against it
the first time the file is read (and again only if the file's size or modification time changed), so an
edited ``test.parquet`` or candidates file is refused instead of being evaluated under the old identity.

Item indices: domain X items are ``0..n_x-1``, domain Y items ``n_x..n_x+n_y-1``. The padding
index is ``n_items = n_x + n_y`` (one past the last item), as in C2DSR; it never appears in a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from temacli import artifacts
from temacli.artifacts import Column, Contract
from temacli.errors import TemacliError

STAGE = "data split"
SPLITS = ("train", "valid", "test")
N_NEGATIVES = 999
_FIX = "run `temacli data split` to (re)build the dataset folder"
# manifest counts every reader relies on (Dataset.open refuses a manifest without them)
REQUIRED_COUNTS = ("domains", "n_items_x", "n_items_y", "rows_train", "rows_valid", "rows_test")
FILES = {
    "items": "items.parquet",
    **{s: f"{s}.parquet" for s in SPLITS},
    "candidates_valid": "candidates_valid.npy",
    "candidates_test": "candidates_test.npy",
}


def _item_index(name: str, doc: str) -> Column:  # item indices are int32 in every file
    return Column(name, "int", pa.int32(), doc=doc)


def _domain_index(name: str, doc: str) -> Column:  # 0 = X, 1 = Y, int8 in every file
    return Column(name, "int", pa.int8(), doc=doc)


def _text(name: str, doc: str, nullable: bool = False) -> Column:
    return Column(name, "string", nullable=nullable, doc=doc)


ITEMS = Contract(
    "items",
    (
        _item_index("item", "global item index: X items 0..nX-1, Y items nX..nX+nY-1"),
        _text("item_id", "the item's id in the raw data (e.g. ASIN)"),
        _text("domain", "domain name (one of the dataset's two domains)"),
        _domain_index("domain_idx", "0 for domain X, 1 for domain Y"),
        _text("title", "title; empty string when unknown"),
    ),
    fix=_FIX,
    optional=(
        _text("description", "optional description", nullable=True),
        _text("image", "optional image path or URL", nullable=True),
    ),
)

SPLIT = Contract(
    "split",
    (
        Column("user", "int", pa.int32(), doc="user index (0-based, dataset-wide)"),
        _text("user_id", "the user's id in the raw data"),
        Column("history", "list<int>", doc="mixed-domain item indices in time order, before the target"),
        _item_index("target", "the next item (training: the sequence's last item)"),
        _domain_index("target_domain", "0 = X, 1 = Y: domain of the target"),
    ),
    fix=_FIX,
)


@dataclass
class Split:
    """One split as flat NumPy arrays: ``history(i)`` is row i's item sequence before its target."""

    name: str
    user: np.ndarray
    user_id: np.ndarray
    offsets: np.ndarray  # int64 (n+1,)
    values: np.ndarray  # int32 flat history items
    target: np.ndarray  # int32 (n,)
    target_domain: np.ndarray  # int8 (n,)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def history(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def sequence(self, i: int) -> np.ndarray:
        """History followed by the target (a training row's whole sequence)."""
        return np.append(self.history(i), self.target[i]).astype(np.int32)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, rows: np.ndarray, max_len: int, pad: int, with_target: bool = False) -> np.ndarray:
        """Left-padded int64 matrix (len(rows), max_len) of the last ``max_len`` history items.

        With ``with_target`` the target is appended to each history first (training sequences).
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full((len(rows), max_len), pad, dtype=np.int64)
        for j, i in enumerate(rows):
            seq = self.sequence(i) if with_target else self.history(i)
            seq = seq[-max_len:]
            if len(seq):
                out[j, max_len - len(seq) :] = seq
        return out

    @classmethod
    def from_table(cls, name: str, table: pa.Table) -> "Split":
        hist = table.column("history").combine_chunks()
        if isinstance(hist, pa.ChunkedArray):  # empty table
            hist = pa.array([], type=pa.list_(pa.int32()))
        offsets = np.asarray(hist.offsets, dtype=np.int64)
        values = np.asarray(hist.values, dtype=np.int32)
        if offsets.size and offsets[0] != 0:
            values = values[offsets[0] :]
            offsets = offsets - offsets[0]
        return cls(
            name=name,
            user=table.column("user").to_numpy().astype(np.int32),
            user_id=np.asarray(table.column("user_id").to_pylist(), dtype=object),
            offsets=offsets,
            values=values,
            target=table.column("target").to_numpy().astype(np.int32),
            target_domain=table.column("target_domain").to_numpy().astype(np.int8),
        )


@dataclass
class Dataset:
    """A dataset folder, read lazily; validated against its contracts and manifest.

    Each file is checked against the fingerprint the manifest records the first time it is read
    (cached per open; re-checked only when its size or modification time changes).
    """

    path: Path
    manifest: dict = field(repr=False)
    _verified: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, path: str | Path) -> "Dataset":
        path = Path(path)
        if not path.is_dir():
            raise TemacliError(f"{path}: dataset folder not found; {_FIX}")
        manifest = artifacts.read_manifest(path, stage=None, fix=_FIX)
        if not isinstance(manifest, dict) or manifest.get("stage") not in (STAGE, "data import"):
            stage = manifest.get("stage") if isinstance(manifest, dict) else None
            raise TemacliError(f"{path}: not a dataset folder (manifest stage '{stage}'); {_FIX}")
        check_manifest(manifest, artifacts.manifest_path(path))
        return cls(path=path, manifest=manifest)

    # identity -----------------------------------------------------------------------
    @property
    def domains(self) -> tuple[str, str]:
        d = self.manifest["counts"]["domains"]
        return (d[0], d[1])

    @property
    def n_x(self) -> int:
        return int(self.manifest["counts"]["n_items_x"])

    @property
    def n_y(self) -> int:
        return int(self.manifest["counts"]["n_items_y"])

    @property
    def n_items(self) -> int:
        return self.n_x + self.n_y

    @property
    def pad(self) -> int:
        """The padding index: one past the last item."""
        return self.n_items

    def domain_range(self, d: int) -> tuple[int, int]:
        """[start, stop) of domain ``d``'s item indices (0 = X, 1 = Y)."""
        return (0, self.n_x) if d == 0 else (self.n_x, self.n_items)

    def recorded_fingerprint(self, name: str) -> str:
        """The fingerprint the manifest records for one of its files (``items``, ``test``, ``candidates_test``...)."""
        rec = (self.manifest.get("outputs") or {}).get(name)
        fp = rec.get("fingerprint") if isinstance(rec, dict) else None
        if not isinstance(fp, str):
            raise TemacliError(
                f"{artifacts.manifest_path(self.path)}: the dataset manifest records no fingerprint for "
                f"{FILES.get(name, name)}; {_FIX}"
            )
        return fp

    @property
    def items_fingerprint(self) -> str:
        """Fingerprint of items.parquet: features and tags are tied to it."""
        return self.recorded_fingerprint("items")

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the whole dataset (items, splits, candidates): models are tied to it."""
        return self.manifest["dataset_fingerprint"]

    def candidates_fingerprint(self, split: str) -> str:
        return self.recorded_fingerprint(f"candidates_{split}")

    def verify(self, name: str) -> Path:
        """Check one file against its recorded fingerprint (once per open and file version); its path."""
        path = self.path / FILES[name]
        if not path.is_file():
            raise TemacliError(f"{path}: file not found; {_FIX}")
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns)
        if self._verified.get(name) == key:
            return path
        expected = self.recorded_fingerprint(name)
        found = artifacts.fingerprint(path)
        if found != expected:
            what = f"the stored negatives ({path.name})" if name.startswith("candidates_") else path.name
            raise TemacliError(
                f"{path}: {what} changed after `data split` recorded it (fingerprint {_short(expected)} in the "
                f"manifest, {_short(found)} on disk); rebuild the dataset folder with `temacli data split`, "
                "or write deliberate edits with temacli.data.split.rewrite_split"
            )
        self._verified[name] = key
        return path

    # content ------------------------------------------------------------------------
    @cached_property
    def items(self) -> pa.Table:
        t = artifacts.read_table(self.verify("items"), ITEMS)
        if t.num_rows != self.n_items:
            raise TemacliError(
                f"{self.path / 'items.parquet'}: {t.num_rows} rows, manifest says {self.n_items}; {_FIX}"
            )
        return t

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise TemacliError(f"unknown split '{name}'; choose one of {', '.join(SPLITS)}")
        t = artifacts.read_table(self.verify(name), SPLIT)
        return Split.from_table(name, t)

    def candidates(self, name: str) -> np.ndarray:
        """Stored negatives of the valid or test split: int32 (rows, 999), memory-mapped."""
        if name not in ("valid", "test"):
            raise TemacliError(f"split '{name}' has no stored candidates (valid and test do)")
        n = int(self.manifest["counts"][f"rows_{name}"])
        return artifacts.read_npy(
            self.verify(f"candidates_{name}"), shape0=n, ndim=2, what="candidates", fix=_FIX
        )

    def user_index(self) -> dict[str, int]:
        """Map from raw user id to user index, over all splits."""
        out: dict[str, int] = {}
        for s in SPLITS:
            t = artifacts.read_table(self.verify(s), SPLIT, columns=["user", "user_id"])
            for u, uid in zip(t.column("user").to_pylist(), t.column("user_id").to_pylist()):
                out.setdefault(uid, u)
        return out


def check_manifest(m: dict, where: Path) -> None:
    """A dataset manifest must carry the counts its readers use: one line naming the first field missing."""
    counts = m.get("counts")
    if not isinstance(counts, dict):
        raise TemacliError(f"{where}: the dataset manifest has no counts (domains, item and row counts); {_FIX}")
    for key in REQUIRED_COUNTS:
        if key not in counts:
            raise TemacliError(f"{where}: the dataset manifest lacks counts.{key}; {_FIX}")
        v = counts[key]
        if key == "domains":
            ok = isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) and x for x in v) and v[0] != v[1]
            want = "two different domain names"
        else:
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
            want = "a non-negative integer"
        if not ok:
            raise TemacliError(f"{where}: the dataset manifest's counts.{key} is {v!r}, expected {want}; {_FIX}")
    if not isinstance(m.get("dataset_fingerprint"), str):
        raise TemacliError(f"{where}: the dataset manifest lacks dataset_fingerprint; {_FIX}")


def _short(fp: str | None) -> str:
    return "none" if fp is None else fp.split(":", 1)[-1][:12]


def check_items_fingerprint(found: str | None, dataset: Dataset, where: str, fix: str) -> None:
    """Refuse an artifact (features, tags) computed for another items table."""
    artifacts.check_same(
        f"items table fingerprint (it was made for another items.parquet than {dataset.path})",
        dataset.items_fingerprint,
        found,
        where,
        fix,
    )


def item_texts(items: pa.Table, text_column: str | None = None) -> list[str]:
    """Each item's text: title, then description when present, then an extra column when named.

    Parts are joined with ". "; an item with none of them gets "" (callers treat it as missing).
    """
    cols = [items.column("title").to_pylist()]
    if "description" in items.column_names:
        cols.append(items.column("description").to_pylist())
    if text_column is not None:
        if text_column not in items.column_names:
            raise TemacliError(
                f"items table has no column '{text_column}' (found: {', '.join(items.column_names)}); "
                "pass an existing column to --text-column"
            )
        cols.append(items.column(text_column).to_pylist())
    out = []
    for parts in zip(*cols):
        out.append(". ".join(p.strip() for p in parts if p and p.strip()))
    return out
