"""Writing the dataset folder (layout in :mod:`temacli.data.dataset`): atomically, with stats, report, manifest.

``check_output`` runs before any work (a file where the folder should go, an unwritable parent, a folder
holding another dataset); ``write_dataset`` draws the negatives while writing, streaming them into
their NPY files chunk by chunk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from temacli import artifacts
from temacli.data.build import Built
from temacli.data.dataset import ITEMS, SPLIT, SPLITS, Dataset
from temacli.data.negatives import NegativeSpec
from temacli.data.stats import compute_stats
from temacli.errors import TemacliError
from temacli.progress import SILENT, Progress


def check_output(out: Path, params: dict, inputs: dict, force: bool = False) -> None:
    """Refuse ``--out`` before any work: one line saying what is wrong with it and what to do."""
    out = Path(out)
    artifacts.check_output(out, "dir", "--out", renamed=True)  # a file there, an unwritable parent
    if not out.exists():
        return
    mp = artifacts.manifest_path(out)
    if mp.is_file():
        try:
            old = artifacts.read_json(mp)
        except TemacliError:
            old = {}
        old_inputs = old.get("inputs", {}) if isinstance(old.get("inputs"), dict) else {}
        same = old.get("params") == params and {
            k: v.get("fingerprint") for k, v in old_inputs.items() if isinstance(v, dict)
        } == {k: v.get("fingerprint") for k, v in inputs.items()}
        if not same and not force:
            raise TemacliError(
                f"{out}: already holds a different dataset (other inputs or parameters); "
                "pass --force to replace it or choose another --out"
            )
    elif any(out.iterdir()) and not force:
        raise TemacliError(f"{out}: folder is not empty and holds no temacli dataset; pass --force or choose another --out")


def write_dataset(
    built: Built,
    out: Path,
    stage: str,
    params: dict,
    inputs: dict,
    force: bool = False,
    progress: Progress = SILENT,
) -> dict:
    """Write the dataset folder atomically; refuse to replace a different dataset without ``force``."""
    out = Path(out)
    check_output(out, params, inputs, force)
    stats = compute_stats(built.splits, built.domains, built.n_x, built.n_y)
    with artifacts.atomic_dir(out, replace=True) as tmp:
        artifacts.write_table(built.items, tmp / "items.parquet", ITEMS)
        for name in SPLITS:
            artifacts.write_table(built.splits[name], tmp / f"{name}.parquet", SPLIT)
        rng = np.random.default_rng(built.seed)
        progress.start(sum(built.candidates[s].rows for s in ("valid", "test")), "drawing negatives", unit="rows")
        for name in ("valid", "test"):
            write_negatives(built.candidates[name], rng, tmp / f"candidates_{name}.npy", progress)
        progress.finish()
        artifacts.write_json(stats, tmp / "stats.json")
        artifacts.write_json(built.report, tmp / "report.json")
        outputs = {
            "items": {"path": "items.parquet", "fingerprint": artifacts.fingerprint(tmp / "items.parquet"),
                      "rows": built.items.num_rows},
        }
        for name in SPLITS:
            outputs[name] = {"path": f"{name}.parquet", "fingerprint": artifacts.fingerprint(tmp / f"{name}.parquet"),
                             "rows": built.splits[name].num_rows}
        for name in ("valid", "test"):
            p = tmp / f"candidates_{name}.npy"
            outputs[f"candidates_{name}"] = {"path": p.name, "fingerprint": artifacts.fingerprint(p),
                                             "shape": [built.candidates[name].rows, built.candidates[name].n]}
        counts = {
            "domains": list(built.domains),
            "n_items_x": built.n_x,
            "n_items_y": built.n_y,
            "n_users": stats["users"],
            **{f"rows_{s}": built.splits[s].num_rows for s in SPLITS},
            **built.extra_counts,
        }
        manifest = artifacts.build_manifest(
            stage, params, inputs=inputs, outputs=outputs, counts=counts,
            dataset_fingerprint=artifacts.fingerprint(tmp),
            padding_index=built.n_x + built.n_y,
        )
        artifacts.write_manifest(tmp, manifest)
    return manifest


def write_negatives(spec: NegativeSpec, rng: np.random.Generator, path: Path, progress: Progress = SILENT) -> None:
    """Stream the draw into an NPY file chunk by chunk (memory stays bounded for big logs)."""
    shape = (spec.rows, spec.n)
    with artifacts.atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int32)), "fortran_order": False, "shape": shape}
        )

        def sink(chunk: np.ndarray) -> None:
            f.write(np.ascontiguousarray(chunk, dtype=np.int32).tobytes())
            progress.advance(int(chunk.shape[0]))

        spec.draw(rng, sink=sink)


def rewrite_split(folder: "str | os.PathLike | Dataset", name: str, table) -> dict:
    """Replace one split of an existing dataset folder *and* record it in the manifest.

    For deliberate edits (crafting an edge case in a test, repairing a row by hand): the dataset
    refuses a split whose content no longer matches the fingerprint its manifest records, so an
    edit must go through here, which rewrites the file, its fingerprint, its row count and the
    dataset fingerprint. Given an open :class:`Dataset`, its manifest is updated too, so the same
    object reads the new table. Returns the new manifest.
    """
    ds = folder if isinstance(folder, Dataset) else None
    folder = ds.path if ds is not None else Path(folder)
    if name not in SPLITS:
        raise TemacliError(f"unknown split '{name}'; choose one of {', '.join(SPLITS)}")
    m = artifacts.read_manifest(folder)
    if name != "train":
        shape = (m.get("outputs", {}).get(f"candidates_{name}") or {}).get("shape") or [table.num_rows]
        if shape[0] != table.num_rows:
            raise TemacliError(
                f"{folder}: {name} has {shape[0]} rows of stored negatives; the new table has {table.num_rows} rows"
            )
    path = artifacts.write_table(table, folder / f"{name}.parquet", SPLIT)
    m["outputs"][name] = {"path": path.name, "fingerprint": artifacts.fingerprint(path), "rows": table.num_rows}
    m.setdefault("counts", {})[f"rows_{name}"] = table.num_rows
    m["dataset_fingerprint"] = artifacts.fingerprint(folder)
    artifacts.write_manifest(folder, m)
    if ds is not None:
        ds.manifest.clear()
        ds.manifest.update(m)
        ds._verified.pop(name, None)
    return m
