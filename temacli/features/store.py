"""The features folder: one NPY matrix per modality, row-aligned with the dataset's item indices.

    features/
      text.npy      float32|float16 (n_items, d): L2-normalised rows; zero rows where has_text is false
      has_text.npy  bool (n_items,)
      text.npy.manifest.json    stage "features clip" or "features text"; inputs.items.fingerprint
      image.npy, has_image.npy, image.npy.manifest.json    (features clip only)

A manifest's ``counts`` hold ``n_items``, ``dim`` and ``missing``; its ``inputs.items.fingerprint``
must equal the dataset's items fingerprint, so features made for another items table are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temacli import artifacts
from temacli.errors import TemacliError

MODALITIES = ("image", "text")
STAGES = ("features clip", "features text")


@dataclass
class Modality:
    name: str
    embeddings: np.ndarray  # (n_items, dim), memory-mapped
    mask: np.ndarray  # bool (n_items,): True where the item has this modality
    manifest: dict

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def write_manifest_for(
    features_dir: str | Path,
    name: str,
    stage: str,
    params: dict,
    items_path: str | Path,
    items_fingerprint: str,
    counts: dict,
    **extra,
) -> Path:
    """Write ``<name>.npy.manifest.json`` for a modality already written to ``features_dir``."""
    features_dir = Path(features_dir)
    emb = features_dir / f"{name}.npy"
    mask = features_dir / f"has_{name}.npy"
    m = artifacts.build_manifest(
        stage,
        params,
        inputs={"items": artifacts.input_record(items_path, items_fingerprint)},
        outputs={
            name: {"path": emb.name, "fingerprint": artifacts.fingerprint(emb)},
            f"has_{name}": {"path": mask.name, "fingerprint": artifacts.fingerprint(mask)},
        },
        counts=counts,
        **extra,
    )
    return artifacts.write_manifest(emb, m)


def load_modality(features_dir: str | Path, name: str, dataset=None) -> Modality:
    """Load one modality, checking shapes and (given a Dataset) the items fingerprint."""
    if name not in MODALITIES:
        raise TemacliError(f"unknown modality '{name}'; choose one of {', '.join(MODALITIES)}")
    features_dir = Path(features_dir)
    emb_path = features_dir / f"{name}.npy"
    fix = (
        f"run `temacli features {'clip' if name == 'image' else 'text'} --out {features_dir}` "
        "for this dataset's items.parquet"
    )
    if not emb_path.is_file():
        raise TemacliError(f"{emb_path}: {name} features not found; {fix}")
    manifest = artifacts.read_manifest(emb_path, fix=fix)
    if manifest.get("stage") not in STAGES:
        raise TemacliError(f"{emb_path}: manifest stage '{manifest.get('stage')}' is not a features stage; {fix}")
    n = dataset.n_items if dataset is not None else int(manifest["counts"]["n_items"])
    emb = artifacts.read_npy(emb_path, shape0=n, ndim=2, what=f"{name} features", fix=fix)
    mask = artifacts.read_npy(features_dir / f"has_{name}.npy", shape0=n, ndim=1, what=f"has_{name} mask", fix=fix)
    if dataset is not None:
        from temacli.data.dataset import check_items_fingerprint

        found = manifest.get("inputs", {}).get("items", {}).get("fingerprint")
        check_items_fingerprint(found, dataset, str(emb_path), fix)
    return Modality(name=name, embeddings=emb, mask=np.asarray(mask, dtype=bool), manifest=manifest)


def available(features_dir: str | Path) -> list[str]:
    """Modalities present in a features folder."""
    features_dir = Path(features_dir)
    return [m for m in MODALITIES if (features_dir / f"{m}.npy").is_file()]


# ----------------------------------------------------------------------------- writing (the stages' side)
REPORT_NAME = "missing_{name}.json"  # beside the NPY: which items lack the modality, and why


@dataclass
class ItemsInput:
    """An items table to compute features for, with the fingerprint features are tied to."""

    path: Path  # the items.parquet file
    table: "object"  # pyarrow.Table validated against temacli.data.dataset.ITEMS
    fingerprint: str  # == Dataset.items_fingerprint when the file sits in a dataset folder

    @property
    def n_items(self) -> int:
        return int(self.table.num_rows)


def read_items(path: str | Path) -> ItemsInput:
    """Read ``items.parquet`` (or a dataset folder holding one) and check it against its folder's manifest.

    Rows must be the item indices 0..n-1 in order, so row i of every features matrix is item i.
    """
    from temacli.data.dataset import ITEMS

    path = Path(path)
    if path.is_dir():
        path = path / "items.parquet"
    fix = "pass the items.parquet of a dataset folder written by `temacli data split`"
    if not path.is_file():
        raise TemacliError(f"{path}: items table not found; {fix}")
    table = artifacts.read_table(path, ITEMS)
    fp = artifacts.fingerprint(path)
    folder_manifest = path.parent / artifacts.MANIFEST_NAME
    if folder_manifest.is_file():
        m = artifacts.read_json(folder_manifest, what="manifest")
        expected = m.get("outputs", {}).get("items", {}).get("fingerprint")
        if expected is not None:
            artifacts.check_same(
                "items.parquet fingerprint (the file changed after its dataset folder was written)",
                expected,
                fp,
                str(path),
                "rebuild the dataset folder with `temacli data split`",
            )
    idx = table.column("item").to_numpy()
    if len(idx) and not np.array_equal(idx, np.arange(len(idx), dtype=idx.dtype)):
        bad = int(np.flatnonzero(idx != np.arange(len(idx)))[0])
        raise TemacliError(
            f"{path}: row {bad} holds item {int(idx[bad])}; rows must be item indices 0..{len(idx) - 1} in order; {fix}"
        )
    return ItemsInput(path=path, table=table, fingerprint=fp)


def begin_modality(features_dir: str | Path, name: str) -> Path:
    """Remove ``name``'s manifest before its files are rewritten.

    The manifest is written last, so a run that dies half way leaves a modality without a manifest
    (refused by :func:`load_modality`) instead of new arrays under an old manifest.
    """
    features_dir = Path(features_dir)
    features_dir.mkdir(parents=True, exist_ok=True)
    mp = artifacts.manifest_path(features_dir / f"{name}.npy")
    mp.unlink(missing_ok=True)
    return features_dir


def write_mask(features_dir: str | Path, name: str, mask: np.ndarray) -> Path:
    return artifacts.write_npy(np.asarray(mask, dtype=bool), Path(features_dir) / f"has_{name}.npy")


def write_report(features_dir: str | Path, name: str, stage: str, missing: list[dict]) -> Path:
    """``missing_<name>.json``: count by reason, then one record per item without this modality."""
    by_reason: dict[str, int] = {}
    for rec in missing:
        key = rec["reason"].split(":", 1)[0]
        by_reason[key] = by_reason.get(key, 0) + 1
    path = Path(features_dir) / REPORT_NAME.format(name=name)
    artifacts.write_json(
        {"stage": stage, "modality": name, "missing": len(missing), "by_reason": by_reason, "items": missing}, path
    )
    return path


def is_up_to_date(features_dir: str | Path, name: str, stage: str, params: dict, items_fingerprint: str) -> bool:
    """True when ``name`` was already written by ``stage`` with these params for these items, intact."""
    features_dir = Path(features_dir)
    emb, mask = features_dir / f"{name}.npy", features_dir / f"has_{name}.npy"
    mp = artifacts.manifest_path(emb)
    if not (emb.is_file() and mask.is_file() and mp.is_file()):
        return False
    try:
        m = artifacts.read_json(mp, what="manifest")
        same = (
            m.get("stage") == stage
            and m.get("params") == params
            and m.get("inputs", {}).get("items", {}).get("fingerprint") == items_fingerprint
        )
        if not same:
            return False
        outs = m.get("outputs", {})
        return outs.get(name, {}).get("fingerprint") == artifacts.fingerprint(emb) and outs.get(
            f"has_{name}", {}
        ).get("fingerprint") == artifacts.fingerprint(mask)
    except (TemacliError, OSError, AttributeError):
        return False


DTYPES = ("float32", "float16")


def write_modality(
    features_dir: str | Path,
    name: str,
    stage: str,
    params: dict,
    items: ItemsInput,
    dim: int,
    dtype: str,
    fill,
    **extra,
) -> dict:
    """Write one modality: ``fill(mm)`` writes rows into a memory-mapped (n_items, dim) NPY and returns
    ``(mask, missing)`` where ``missing`` is a list of report records ``{item, item_id, reason, ...}``.

    Order: old manifest removed, ``<name>.npy`` and ``has_<name>.npy`` written atomically, the report,
    then the manifest. Returns a summary (path, n_items, dim, missing, by reason).
    """
    if dtype not in DTYPES:
        raise TemacliError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    features_dir = begin_modality(features_dir, name)
    emb_path = features_dir / f"{name}.npy"
    with artifacts.npy_writer(emb_path, (items.n_items, int(dim)), dtype) as mm:
        mask, missing = fill(mm)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (items.n_items,) or int((~mask).sum()) != len(missing):
        raise RuntimeError(f"{name}: mask and missing list disagree ({int((~mask).sum())} vs {len(missing)})")
    write_mask(features_dir, name, mask)
    report = write_report(features_dir, name, stage, missing)
    counts = {"n_items": items.n_items, "dim": int(dim), "missing": len(missing)}
    write_manifest_for(features_dir, name, stage, params, items.path, items.fingerprint, counts, **extra)
    by_reason: dict[str, int] = {}
    for rec in missing:
        key = rec["reason"].split(":", 1)[0]
        by_reason[key] = by_reason.get(key, 0) + 1
    return {
        "modality": name,
        "path": str(emb_path),
        "n_items": items.n_items,
        "dim": int(dim),
        "dtype": dtype,
        "missing": len(missing),
        "missing_by_reason": by_reason,
        "report": str(report),
    }


def skipped_summary(features_dir: str | Path, name: str) -> dict:
    """The summary of a modality left as it was (already up to date)."""
    m = artifacts.read_manifest(Path(features_dir) / f"{name}.npy")
    return {
        "modality": name,
        "path": str(Path(features_dir) / f"{name}.npy"),
        "n_items": m["counts"]["n_items"],
        "dim": m["counts"]["dim"],
        "dtype": m["params"].get("dtype"),
        "missing": m["counts"]["missing"],
        "up_to_date": True,
    }
