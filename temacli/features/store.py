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


FLOAT_DTYPES = ("float16", "float32", "float64")  # float64 is accepted and read as float32 by consumers
_SCAN_ELEMENTS = 1 << 22  # rows are checked for finiteness in chunks of about this many values


def _field(manifest: dict, dotted: str):
    cur = manifest
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def check_manifest_fields(manifest: dict, name: str, where: str, fix: str) -> None:
    """Refuse a features manifest that lacks a field the readers rely on (one line, naming the field)."""
    need = {
        "counts.n_items": int,
        "counts.dim": int,
        "inputs.items.fingerprint": str,
        f"outputs.{name}.fingerprint": str,
        f"outputs.has_{name}.fingerprint": str,
    }
    for key, typ in need.items():
        v = _field(manifest, key)
        if v is None:
            raise TemacliError(f"{where}: manifest field {key} is missing; {fix}")
        if not isinstance(v, typ) or isinstance(v, bool) or (typ is int and v < 0):
            raise TemacliError(
                f"{where}: manifest field {key} is {v!r}, expected {'a non-negative integer' if typ is int else 'a string'}; {fix}"
            )


def first_non_finite(arr: np.ndarray, as_float32: bool = False) -> tuple[int, int]:
    """(first row with a NaN or infinite value or -1, number of such rows), scanning in chunks.

    ``as_float32``: judge the values as float32 (a float64 value beyond float32's range becomes infinite)."""
    n = int(arr.shape[0])
    width = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    step = max(1, _SCAN_ELEMENTS // max(1, width))
    first, count = -1, 0
    for lo in range(0, n, step):
        block = np.asarray(arr[lo : lo + step])
        if as_float32:
            with np.errstate(over="ignore"):
                block = block.astype(np.float32)
        bad = ~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        k = int(bad.sum())
        if k:
            if first < 0:
                first = lo + int(np.flatnonzero(bad)[0])
            count += k
    return first, count


def check_matrix(emb: np.ndarray, path: Path, what: str, fix: str) -> None:
    """A features matrix must be floating point and finite: one line naming the file and the first bad row."""
    if emb.dtype.name not in FLOAT_DTYPES:
        raise TemacliError(
            f"{path}: {what} are stored as {emb.dtype.name}, expected float32 or float16 (float64 is read as float32); {fix}"
        )
    wide = emb.dtype == np.float64
    first, count = first_non_finite(emb, as_float32=wide)
    if first >= 0:
        what_bad = "NaN, infinity or beyond float32's range" if wide else "NaN or infinity"
        raise TemacliError(
            f"{path}: row {first} (item {first}) of the {what} is not finite ({what_bad}; {count:,} row{'s' if count != 1 else ''} in all); {fix}"
        )


def check_mask(mask: np.ndarray, path: Path, what: str, fix: str) -> np.ndarray:
    """A mask is bool; an integer mask of only 0 and 1 is accepted and read as bool."""
    if mask.dtype == np.bool_:
        return np.asarray(mask, dtype=bool)
    if np.issubdtype(mask.dtype, np.integer):
        vals = np.asarray(mask)
        bad = np.flatnonzero((vals != 0) & (vals != 1))
        if bad.size == 0:
            return vals.astype(bool)
        raise TemacliError(f"{path}: row {int(bad[0])} of the {what} holds {int(vals[bad[0]])}, expected true/false (0/1); {fix}")
    raise TemacliError(f"{path}: {what} is stored as {mask.dtype.name}, expected bool; {fix}")


def load_modality(features_dir: str | Path, name: str, dataset=None) -> Modality:
    """Load one modality, checking it before anyone trains or matches on it.

    Checked: the manifest (a features stage, with counts.n_items, counts.dim, the items fingerprint and
    the outputs' fingerprints), the shapes, the dtype (float16/float32; float64 accepted, read as
    float32 by consumers; anything else refused), every value finite (the first NaN or infinite row is
    named), the mask (bool, or integers 0/1), the files' fingerprints against the manifest (a file
    edited after it was written is refused) and, given a Dataset, the items fingerprint.
    """
    if name not in MODALITIES:
        raise TemacliError(f"unknown modality '{name}'; choose one of {', '.join(MODALITIES)}")
    features_dir = Path(features_dir)
    emb_path = features_dir / f"{name}.npy"
    mask_path = features_dir / f"has_{name}.npy"
    fix = (
        f"run `temacli features {'clip' if name == 'image' else 'text'} --out {features_dir}` "
        "for this dataset's items.parquet"
    )
    if not emb_path.is_file():
        raise TemacliError(f"{emb_path}: {name} features not found; {fix}")
    manifest = artifacts.read_manifest(emb_path, fix=fix)
    mp = artifacts.manifest_path(emb_path)
    if not isinstance(manifest, dict):
        raise TemacliError(f"{mp}: manifest is not a JSON object; {fix}")
    if manifest.get("stage") not in STAGES:
        raise TemacliError(f"{emb_path}: manifest stage '{manifest.get('stage')}' is not a features stage; {fix}")
    check_manifest_fields(manifest, name, str(mp), fix)
    n = dataset.n_items if dataset is not None else int(manifest["counts"]["n_items"])
    emb = artifacts.read_npy(emb_path, shape0=n, ndim=2, what=f"{name} features", fix=fix)
    mask = artifacts.read_npy(mask_path, shape0=n, ndim=1, what=f"has_{name} mask", fix=fix)
    if int(manifest["counts"]["n_items"]) != n:
        raise TemacliError(f"{mp}: counts.n_items is {manifest['counts']['n_items']}, the matrix has {n} rows; {fix}")
    if int(manifest["counts"]["dim"]) != emb.shape[1]:
        raise TemacliError(f"{mp}: counts.dim is {manifest['counts']['dim']}, the matrix has {emb.shape[1]} columns; {fix}")
    if emb.shape[1] < 1:
        raise TemacliError(f"{emb_path}: {name} features have 0 columns; {fix}")
    check_matrix(emb, emb_path, f"{name} features", fix)
    mask = check_mask(mask, mask_path, f"has_{name} mask", fix)
    for key, path in ((name, emb_path), (f"has_{name}", mask_path)):
        artifacts.check_same(
            f"{path.name} fingerprint (the file changed after its manifest was written)",
            manifest["outputs"][key]["fingerprint"],
            artifacts.fingerprint(path),
            str(path),
            fix,
        )
    if dataset is not None:
        from temacli.data.dataset import check_items_fingerprint

        found = manifest["inputs"]["items"]["fingerprint"]
        check_items_fingerprint(found, dataset, str(emb_path), fix)
    return Modality(name=name, embeddings=emb, mask=mask, manifest=manifest)


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
        expected = _field(m, "outputs.items.fingerprint") if isinstance(m, dict) else None
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


MAX_BATCH = 65536  # --batch-size / --text-batch-size: 1 to this
MAX_WORKERS = 64  # --workers: 0 (decode in the main process) to this


def check_features_out(out: str | Path, flag: str = "--out") -> Path:
    """Refuse a features folder that cannot be written, before any model is loaded (exit 2, nothing written)."""
    out = artifacts.check_output(out, "dir", flag)
    if out.is_dir():
        for name in MODALITIES:
            for f in (f"{name}.npy", f"has_{name}.npy", REPORT_NAME.format(name=name), f"{name}.npy.manifest.json"):
                if (out / f).is_dir():
                    raise TemacliError(f"{flag} {out}: {out / f} is a folder where the output file {f} goes; remove it or choose another {flag}")
    return out


def check_text_column(table, column: str, flag: str, path: Path, required: bool = True) -> None:
    """An items column named by a flag must exist (when ``required``) and hold strings."""
    import pyarrow as pa

    if column not in table.column_names:
        if required:
            raise TemacliError(
                f"{flag} {column}: {path} has no such column (found: {', '.join(table.column_names)}); pass an existing column"
            )
        return
    t = table.schema.field(column).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        raise TemacliError(f"{flag} {column}: column of {path} has type {t}, expected strings; pass a text column")


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
        check_manifest_fields(m, name, str(mp), "")
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
    counts = m.get("counts") if isinstance(m.get("counts"), dict) else {}
    params = m.get("params") if isinstance(m.get("params"), dict) else {}
    return {
        "modality": name,
        "path": str(Path(features_dir) / f"{name}.npy"),
        "n_items": counts.get("n_items"),
        "dim": counts.get("dim"),
        "dtype": params.get("dtype"),
        "missing": counts.get("missing"),
        "up_to_date": True,
    }
