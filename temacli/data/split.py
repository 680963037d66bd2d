"""``data split``: from a raw interaction log to the cross-domain dataset (Sections III-A, IV-A).

The stage in one call, :func:`split_dataset`: check the options and ``--out`` before any work, build the
dataset in memory (:mod:`temacli.data.build`, reading through :mod:`temacli.data.read`), then write it
(:mod:`temacli.data.write`: splits, the negatives of :mod:`temacli.data.negatives` drawn once from the
seed, Table I of :mod:`temacli.data.stats`, report, manifest). Importers of published splits live in
:mod:`temacli.data.formats` and write the same folder.

The public names of those modules stay importable from here (``from temacli.data.split import
SplitOptions, split_dataset, sample_negatives, ...``).
"""

from __future__ import annotations

import os
from pathlib import Path

from temacli import artifacts
from temacli.data.build import (  # noqa: F401  (re-exported)
    BUILD_STEPS,
    RANGES,
    SPLIT_MODES,
    Built,
    SplitOptions,
    build_from_log,
    check_value,
    filter_log,
    range_text,
    split_table,
)
from temacli.data.dataset import STAGE
from temacli.data.negatives import NegativeSpec, sample_negatives  # noqa: F401  (re-exported)
from temacli.data.stats import compute_stats  # noqa: F401  (re-exported)
from temacli.data.write import check_output, rewrite_split, write_dataset  # noqa: F401  (re-exported)
from temacli.progress import SILENT, Progress


def split_dataset(
    interactions: str | os.PathLike,
    items: str | os.PathLike | None,
    out: str | os.PathLike,
    opts: SplitOptions,
    force: bool = False,
    progress: Progress = SILENT,
) -> dict:
    """``temacli data split`` as a library call. Returns the written manifest (with its ``report``)."""
    interactions = Path(interactions)
    items_path = Path(items) if items is not None else None
    opts.check()
    params = {"format": "log", **opts.params()}
    inputs = {"interactions": _input(interactions, "interactions")}
    if items_path is not None:
        inputs["items"] = _input(items_path, "items")
    check_output(Path(out), params, inputs, force)
    built = build_from_log(interactions, items_path, opts, progress)
    m = write_dataset(built, Path(out), STAGE, params, inputs, force=force, progress=progress)
    m["report"] = built.report
    return m


def _input(path: Path, what: str) -> dict:
    from temacli.errors import TemacliError

    if not path.exists():
        raise TemacliError(f"{path}: {what} file not found; check the path")
    if path.is_dir():
        raise TemacliError(f"{path}: is a folder, expected a {what} file (CSV or Parquet)")
    return artifacts.input_record(path)
