"""``temacli eval`` as a library call: one model, one split, one protocol -> one result dict.

The result is plain JSON (see docs/evaluation.md) and always names what its numbers mean:

* ``protocol``: ``sampled`` (the target among the split's *stored* 999 negatives, C2DSR's protocol)
  or ``full`` (the target among all items of its domain; by default the user's own history items,
  other than the target, are not candidates: ``exclude_history``),
* ``split``, ``candidates.fingerprint`` (the stored negatives' file, or for ``full`` a fingerprint of
  the dataset and the exclusion rule), ``data.fingerprint`` and the ``model`` (path, kind, weights),
* ``instances``: how many rows the split has, how many were evaluated, and every row that was not,
  counted and named by user id with the reason. Nothing is subsampled.

Metrics are per target domain plus ``all``, each with its count ``n``; ``slices`` adds the same per
history type and target popularity (:mod:`temacli.evaluation.slices`).
"""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from temacli import artifacts
from temacli.errors import TemacliError
from temacli.progress import SILENT, Progress
from temacli.evaluation.checks import check_eval_options, check_eval_sizes
from temacli.evaluation.metrics import (diagnostics_by_domain, metric_names, parse_ks, summarize_by_domain,
                                        tie_warning)
from temacli.evaluation.protocols import full_rank_stats, sampled_rank_stats
from temacli.evaluation.slices import DEFAULT_COLD_THRESHOLD, slice_masks, summarize_slices, train_item_counts

RESULT_KIND = "temacli.eval"
SCHEMA = 1
from temacli.evaluation.checks import EVAL_SPLITS, PROTOCOLS  # noqa: E402,F401
STAGE = "eval"
MAX_NAMED = 1000  # user ids listed per skip reason in the JSON (the count is always exact)


# ----------------------------------------------------------------------------- loading
# The model folder (reading it, the weight files, whether a model and a dataset belong together) is
# owned by temacli.model.folder; the names below are kept for this module's callers.
from temacli.model import folder as _folder  # noqa: E402
from temacli.model.folder import (  # noqa: E402,F401
    DEFAULT_WEIGHTS, PER_DOMAIN, check_pair, model_dataset_fingerprint, model_dataset_path, model_info, model_kind,
    model_manifest, weights_files,
)


def _load_trained(model_dir: Path, device: str, dataset, weights: str = DEFAULT_WEIGHTS) -> Any:
    """The trained model (``temacli.model.folder.load_trained``); tests replace this function."""
    return _folder.load_trained(model_dir, device=device, dataset=dataset, weights=weights)


def open_model_and_data(
    model_dir: str | Path, data_dir: str | Path | None = None, device: str = "auto", loader=None,
    weights: str = DEFAULT_WEIGHTS,
) -> tuple[Any, Any]:
    """``temacli.model.folder.open_model_and_data`` with this module's loader by default."""
    return _folder.open_model_and_data(model_dir, data_dir, device, loader or _load_trained, weights=weights)


# ----------------------------------------------------------------------------- evaluating
def candidates_info(dataset, split: str, protocol: str, exclude_history: bool) -> dict:
    if protocol == "sampled":
        # Dataset.candidates refuses a file whose content no longer matches the fingerprint `data split`
        # recorded (hashed once per open dataset), so the recorded fingerprint names what is ranked against
        n_neg = int(dataset.candidates(split).shape[1])
        return {
            "fingerprint": dataset.candidates_fingerprint(split),
            "description": f"{n_neg} stored negatives per instance (candidates_{split}.npy) + the target",
        }
    rule = "history excluded" if exclude_history else "history included"
    return {
        "fingerprint": artifacts.text_fingerprint(
            f"full|{dataset.fingerprint}|{split}|exclude_history={bool(exclude_history)}"
        ),
        "description": f"all items of the target's domain, the target's own entry once; user's {rule}",
    }


def _named(split, rows: list[int] | np.ndarray) -> dict:
    rows = [int(r) for r in rows]
    return {"n": len(rows), "user_ids": [str(split.user_id[r]) for r in rows[:MAX_NAMED]]}


def _clean(obj: Any) -> Any:
    """NaN (a metric of an empty group) becomes None so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def evaluate_scorer(
    scorer,
    dataset,
    split: str = "test",
    protocol: str = "sampled",
    exclude_history: bool = True,
    batch_size: int = 256,
    chunk_size: int = 32768,
    cold_threshold: int = DEFAULT_COLD_THRESHOLD,
    model: dict | None = None,
    progress: Progress = SILENT,
    ks: Sequence[int] | None = None,
) -> dict:
    """Evaluate ``scorer`` (a :class:`~temacli.evaluation.protocols.Scorer`) on ``dataset``'s split.

    ``ks``: cutoffs (NDCG@k and HR@k for each k; default NDCG@5/10 and HR@1/5/10); MRR always.
    ``progress`` (:class:`temacli.progress.Progress`) gets one phase with the instances to score.
    """
    if protocol not in PROTOCOLS:
        raise TemacliError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if split not in EVAL_SPLITS:
        raise TemacliError(f"cannot evaluate on split '{split}'; choose one of {', '.join(EVAL_SPLITS)}")
    check_eval_sizes(batch_size, chunk_size, cold_threshold)
    ks = parse_ks(ks) if ks is not None else None
    sp = dataset.split(split)
    n = len(sp)
    if n == 0:
        raise TemacliError(f"{dataset.path}: split '{split}' has no rows to evaluate")
    lengths = sp.lengths
    tgt = sp.target.astype(np.int64)
    dom = sp.target_domain.astype(np.int64)
    lo = np.where(dom == 0, 0, dataset.n_x)
    hi = np.where(dom == 0, dataset.n_x, dataset.n_items)
    empty = lengths == 0
    outside = ~empty & ((tgt < lo) | (tgt >= hi))
    rows = np.nonzero(~(empty | outside))[0]
    if rows.size == 0:
        raise TemacliError(
            f"{dataset.path}: none of the {n} rows of split '{split}' can be scored "
            f"({int(empty.sum())} with an empty history, {int(outside.sum())} with a target outside its domain)"
        )
    cand_info = candidates_info(dataset, split, protocol, exclude_history)  # refuses edited negatives first

    progress.start(int(rows.size), f"eval {split} ({protocol})", unit="instances")
    t0 = time.perf_counter()
    try:
        if protocol == "sampled":
            stats = sampled_rank_stats(scorer, sp, dataset.candidates(split), batch_size=batch_size, rows=rows,
                                       progress=progress)
        else:
            ranges = (dataset.domain_range(0), dataset.domain_range(1))
            stats = full_rank_stats(scorer, sp, ranges, rows=rows, exclude_history=exclude_history,
                                    batch_size=batch_size, chunk_size=chunk_size, progress=progress)
    finally:
        progress.finish()
    seconds = time.perf_counter() - t0
    ranks = stats.ranks

    names = dataset.domains
    doms = dom[rows]
    metrics = summarize_by_domain(ranks, doms, names, ks=ks)
    counts = train_item_counts(dataset.split("train"), dataset.n_items)
    masks = slice_masks(sp, rows, dataset.n_x, counts, cold_threshold)
    slices = summarize_slices(ranks, doms, masks, names, ks=ks)
    diagnostics = diagnostics_by_domain(stats.ties, stats.nan_candidates, stats.nan_target, doms, names)
    warnings = [w for w in (tie_warning(diagnostics, names),) if w]

    instances: dict[str, Any] = {
        "total": n,
        "evaluated": int(rows.size),
        "skipped": {},
        "nan_score": _named(sp, rows[stats.nan_target]),
        "history_truncated": int((lengths[rows] > int(scorer.max_len)).sum()),
        "max_len": int(scorer.max_len),
        "candidates_per_instance": {"min": int(stats.n_candidates.min()), "max": int(stats.n_candidates.max())},
    }
    if empty.any():
        instances["skipped"]["empty history"] = _named(sp, np.nonzero(empty)[0])
    if outside.any():
        instances["skipped"]["target outside its domain"] = _named(sp, np.nonzero(outside)[0])

    result = {
        "kind": RESULT_KIND,
        "schema": SCHEMA,
        "model": model or {"path": None, "name": type(scorer).__name__, "kind": type(scorer).__name__, "fingerprint": None},
        "data": {"path": str(dataset.path), "fingerprint": dataset.fingerprint, "domains": list(names)},
        "split": split,
        "protocol": protocol,
        "exclude_history": bool(exclude_history) if protocol == "full" else None,
        "candidates": cand_info,
        "rank_rule": "1 + number of candidates scoring strictly higher (ties favour the target)",
        "cold_threshold": int(cold_threshold),
        "ks": list(ks) if ks is not None else None,
        "metric_names": list(metric_names(ks)),
        "instances": instances,
        "metrics": metrics,
        "diagnostics": diagnostics,
        "warnings": warnings,
        "slices": slices,
        "timing": {
            "scoring_seconds": round(seconds, 3),
            "instances_per_second": round(rows.size / seconds, 1) if seconds > 0 else None,
            "device": str(getattr(scorer, "device", "cpu")),
            "batch_size": batch_size,
            "chunk_size": chunk_size if protocol == "full" else None,
        },
    }
    return _clean(result)


# evaluate_scorer's options and their defaults (what evaluate and the saved-result lookup accept)
SCORER_OPTIONS = {n: p.default for n, p in inspect.signature(evaluate_scorer).parameters.items()
                  if n not in ("scorer", "dataset", "model")}


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path | None = None,
    device: str = "auto",
    loader=None,
    weights: str = DEFAULT_WEIGHTS,
    **options: Any,
) -> dict:
    """Load a model folder and its dataset, check they belong together, evaluate.

    ``options`` are :func:`evaluate_scorer`'s (``split``, ``protocol``, ``exclude_history``,
    ``batch_size``, ``chunk_size``, ``cold_threshold``, ``ks``, ``progress``); their values are
    checked before anything is loaded. ``weights``: the weight file in the model folder, or
    ``per-domain`` (each domain's targets ranked by that domain's best-validation weights).
    """
    opts = scorer_options(**options)
    opts["ks"] = check_eval_options(opts["split"], opts["protocol"], opts["batch_size"], opts["chunk_size"],
                                    opts["cold_threshold"], opts["ks"])
    t0 = time.perf_counter()
    trained, dataset = open_model_and_data(model_dir, data_dir, device, loader, weights=weights)
    load_s = time.perf_counter() - t0
    result = evaluate_scorer(trained, dataset, model=model_info(trained, model_dir, weights, dataset.domains), **opts)
    result["timing"]["load_seconds"] = round(load_s, 3)
    return result


def scorer_options(**options: Any) -> dict:
    """``options`` completed with :func:`evaluate_scorer`'s defaults; an unknown name is refused."""
    unknown = sorted(set(options) - set(SCORER_OPTIONS))
    if unknown:
        raise TypeError(f"evaluate() got unexpected option(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(SCORER_OPTIONS)}")
    return {n: options.get(n, default) for n, default in SCORER_OPTIONS.items()}


# ----------------------------------------------------------------------------- saved results
def write_result(result: dict, path: str | Path) -> Path:
    """Save a result as JSON with a manifest beside it (inputs: the model weights and the dataset)."""
    path = Path(path)
    artifacts.write_json(result, path)
    inputs = {"data": {"path": result["data"]["path"], "fingerprint": result["data"]["fingerprint"]}}
    if result["model"].get("path"):
        inputs["model"] = {"path": result["model"]["path"], "fingerprint": result["model"]["fingerprint"]}
    params = {k: result.get(k) for k in ("split", "protocol", "exclude_history", "cold_threshold", "ks")}
    params["weights"] = result["model"].get("weights")
    manifest = artifacts.build_manifest(
        STAGE, params, inputs, outputs={"result": {"fingerprint": artifacts.fingerprint(path)}},
        counts={"instances": result["instances"]["total"], "evaluated": result["instances"]["evaluated"]},
    )
    artifacts.write_manifest(path, manifest)
    return path


def read_result(path: str | Path) -> dict:
    """Read a result written by ``temacli eval --out`` or ``--json``; refuse anything else."""
    path = Path(path)
    obj = artifacts.read_json(path, what="evaluation result", fix="write it with `temacli eval --json` or --out")
    if not isinstance(obj, dict) or obj.get("kind") != RESULT_KIND:
        raise TemacliError(f"{path}: not a temacli evaluation result; write it with `temacli eval --json` or --out")
    if obj.get("schema") != SCHEMA:
        raise TemacliError(f"{path}: evaluation result schema {obj.get('schema')}, expected {SCHEMA}; re-run `temacli eval`")
    return obj
