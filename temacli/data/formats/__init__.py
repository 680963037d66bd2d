"""Importers for published, pre-split benchmarks (they write the same artifacts as ``data split``).

Each format module has ``build(folder, domains, seed=..., **options) -> Built``; :func:`import_dataset`
is the stage (``temacli data split --format NAME FOLDER``). Formats sit above the rest of
``temacli.data`` and import only its public names (build, negatives, write); nothing in
``temacli.data`` imports a format.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from temacli import artifacts
from temacli.data.build import check_value
from temacli.data.dataset import N_NEGATIVES, STAGE
from temacli.data.formats.common import default_domains
from temacli.data.write import check_output, write_dataset
from temacli.errors import TemacliError
from temacli.progress import SILENT, Progress

IMPORT_FORMATS = ("llmcdsr", "c2dsr")


def import_dataset(
    fmt: str,
    folder: str | os.PathLike,
    out: str | os.PathLike,
    domains: tuple[str, str] | None = None,
    seed: int = 42,
    force: bool = False,
    exclude_history: bool | None = None,
    progress: Progress = SILENT,
) -> dict:
    """``temacli data split --format llmcdsr|c2dsr FOLDER``: import a published split.

    ``exclude_history`` (LLMCDSR only) replaces the publisher's rule (only the target excluded) with
    one that also keeps the user's history out of the negatives; None keeps the publisher's rule.
    Returns the written manifest (with its ``report``).
    """
    if fmt not in IMPORT_FORMATS:
        raise TemacliError(f"unknown --format '{fmt}'; choose log, {', '.join(IMPORT_FORMATS)}")
    check_value("--seed", seed)
    folder = Path(folder)
    if not folder.is_dir():
        raise TemacliError(f"{folder}: folder not found; give the published {fmt} data folder")
    if domains is not None and (len(domains) != 2 or domains[0] == domains[1]):
        raise TemacliError(f"--domains needs two different names (got {','.join(domains)}), e.g. food,kitchen")
    mod = importlib.import_module(f"temacli.data.formats.{fmt}")
    options = {}
    if exclude_history is not None:
        if not hasattr(mod, "EXCLUDE_HISTORY_DEFAULT"):
            raise TemacliError(f"--negatives-exclude-history is not an option of --format {fmt}")
        options["exclude_history"] = bool(exclude_history)
    doms = default_domains(folder, domains)
    params = {"format": fmt, "domains": list(doms), "seed": seed, "negatives": N_NEGATIVES, **options}
    inputs = {f.name: artifacts.input_record(f) for f in sorted(folder.iterdir()) if f.is_file()}
    check_output(Path(out), params, inputs, force)
    built = mod.build(folder, doms, seed=seed, **options)
    m = write_dataset(built, Path(out), STAGE, params, inputs, force=force, progress=progress)
    m["report"] = built.report
    return m
