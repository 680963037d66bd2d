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

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from temacli import artifacts
from temacli.errors import TemacliError
from temacli.evaluation.metrics import summarize_by_domain
from temacli.evaluation.protocols import full_ranks, sampled_ranks
from temacli.evaluation.slices import DEFAULT_COLD_THRESHOLD, slice_masks, summarize_slices, train_item_counts

RESULT_KIND = "temacli.eval"
SCHEMA = 1
PROTOCOLS = ("sampled", "full")
EVAL_SPLITS = ("valid", "test")
STAGE = "eval"
MAX_NAMED = 1000  # user ids listed per skip reason in the JSON (the count is always exact)


# ----------------------------------------------------------------------------- loading
DEFAULT_WEIGHTS = "model.safetensors"
PER_DOMAIN = "per-domain"


def _load_trained(model_dir: Path, device: str, dataset, weights: str = DEFAULT_WEIGHTS) -> Any:
    """The trained model (``temacli.model.api.load_trained``); tests replace this function."""
    try:
        from temacli.model.api import load_trained
    except ImportError as e:  # the model package is missing from this install
        raise TemacliError(f"cannot load models: temacli.model.api is not available ({e})") from None
    return load_trained(model_dir, device=device, dataset=dataset, weights=weights)


def weights_files(model_dir: Path, weights: str, domains: tuple[str, str]) -> list[str]:
    """The weight file(s) ``--weights`` names: one file, or one per domain for ``per-domain``."""
    names = [f"model.{d}.safetensors" for d in domains] if weights == PER_DOMAIN else [weights]
    for name in names:
        if Path(name).name != name:
            raise TemacliError(f"--weights {weights}: give a file name inside {model_dir}, not a path")
        if not (model_dir / name).is_file():
            hint = ("train with `temacli train --early-stop mrr`, which keeps each domain's best epoch"
                    if weights == PER_DOMAIN else f"choose a .safetensors file of {model_dir}")
            raise TemacliError(f"{model_dir / name}: weights not found; {hint}")
    return names


def model_manifest(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise TemacliError(f"{model_dir}: model folder not found; pass the --out folder of `temacli train`")
    return artifacts.read_manifest(model_dir, fix="pass the --out folder of `temacli train`")


def model_dataset_path(manifest: dict) -> str | None:
    return ((manifest.get("inputs") or {}).get("dataset") or {}).get("path")


def model_dataset_fingerprint(trained) -> str | None:
    found = (((getattr(trained, "manifest", None) or {}).get("inputs") or {}).get("dataset") or {}).get("fingerprint")
    return found or (getattr(trained, "config", None) or {}).get("dataset_fingerprint")


def open_model_and_data(
    model_dir: str | Path, data_dir: str | Path | None = None, device: str = "auto", loader=None,
    weights: str = DEFAULT_WEIGHTS,
) -> tuple[Any, Any]:
    """Open a model folder and its dataset; refuse a pair that does not belong together.

    ``data_dir`` defaults to the dataset path recorded in the model's manifest. ``weights`` names
    the weight file in the folder, or ``per-domain`` for C2DSR's per-domain model selection (a
    :class:`~temacli.evaluation.protocols.DomainRouter` over ``model.<domain>.safetensors``).
    """
    from temacli.data.dataset import Dataset

    model_dir = Path(model_dir)
    manifest = model_manifest(model_dir)
    if data_dir is None:
        recorded = model_dataset_path(manifest)
        if recorded is None:
            raise TemacliError(f"{model_dir}: the model's manifest names no dataset; pass --data")
        data_dir = recorded
    dataset = Dataset.open(data_dir)
    load = loader or _load_trained
    if weights == DEFAULT_WEIGHTS:
        trained = load(model_dir, device, dataset)
        check_pair(trained, dataset, model_dir)
        return trained, dataset
    from temacli.evaluation.protocols import DomainRouter

    names = weights_files(model_dir, weights, dataset.domains)
    models = [load(model_dir, device, dataset, weights=name) for name in names]
    for m in models:
        check_pair(m, dataset, model_dir)
    if len(models) == 1:
        return models[0], dataset
    router = DomainRouter(tuple(models))
    router.config, router.manifest = models[0].config, models[0].manifest
    router.kind, router.n_x, router.n_y = model_kind(models[0]), models[0].n_x, models[0].n_y
    return router, dataset


def check_pair(trained, dataset, model_dir: str | Path) -> None:
    """The model was trained on this dataset: same fingerprint, same item counts."""
    artifacts.check_same(
        f"dataset fingerprint (the model was trained on another dataset than {dataset.path})",
        dataset.fingerprint,
        model_dataset_fingerprint(trained),
        str(model_dir),
        "pass the --data folder the model was trained on, or retrain the model on this one",
    )
    if (int(trained.n_x), int(trained.n_y)) != (dataset.n_x, dataset.n_y):
        raise TemacliError(
            f"{model_dir}: the model has {trained.n_x}+{trained.n_y} items, the dataset {dataset.path} "
            f"{dataset.n_x}+{dataset.n_y}; pass the --data folder the model was trained on"
        )


def model_kind(trained) -> str:
    config = getattr(trained, "config", None) or {}
    kind = getattr(trained, "kind", None) or config.get("kind")
    if kind is None and isinstance(config.get("model"), str):
        kind = config["model"]
    return str(kind or type(trained).__name__)


def model_info(trained, model_dir: str | Path, weights: str = DEFAULT_WEIGHTS, domains=None) -> dict:
    """How a result names its model: folder, kind, weight file(s) and their fingerprint."""
    model_dir = Path(model_dir)
    manifest = getattr(trained, "manifest", None) or {}
    outputs = manifest.get("outputs") or {}
    info = {"path": str(model_dir), "name": model_dir.name, "kind": model_kind(trained), "weights": weights}
    if weights == DEFAULT_WEIGHTS:
        fp = (outputs.get("model") or {}).get("fingerprint")
        if fp is None and (model_dir / weights).is_file():
            fp = artifacts.fingerprint(model_dir / weights)
        if fp is None and model_dir.is_dir():
            fp = artifacts.fingerprint(model_dir)
    else:
        names = weights_files(model_dir, weights, tuple(domains or ()))
        fps = [(outputs.get(Path(n).stem) or {}).get("fingerprint") or artifacts.fingerprint(model_dir / n)
               for n in names]
        fp = fps[0] if len(fps) == 1 else artifacts.text_fingerprint("|".join(fps))
        if weights != PER_DOMAIN:
            info["name"] = f"{model_dir.name}:{weights}"
        else:
            info["name"] = f"{model_dir.name}:per-domain"
    info["fingerprint"] = fp
    return info


# ----------------------------------------------------------------------------- evaluating
def candidates_info(dataset, split: str, protocol: str, exclude_history: bool) -> dict:
    if protocol == "sampled":
        n_neg = int(dataset.candidates(split).shape[1])
        path = Path(dataset.path) / f"candidates_{split}.npy"
        artifacts.check_same(
            "stored negatives (the file changed since `data split` recorded it)",
            dataset.candidates_fingerprint(split), artifacts.fingerprint(path), str(path),
            "rebuild the dataset folder with `temacli data split` instead of editing its files",
        )
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
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict:
    """Evaluate ``scorer`` (a :class:`~temacli.evaluation.protocols.Scorer`) on ``dataset``'s split.

    ``on_start(n)`` is called with the number of instances to score before scoring starts;
    ``progress(k)`` after each batch of ``k``.
    """
    if protocol not in PROTOCOLS:
        raise TemacliError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if split not in EVAL_SPLITS:
        raise TemacliError(f"cannot evaluate on split '{split}'; choose one of {', '.join(EVAL_SPLITS)}")
    if batch_size < 1 or chunk_size < 1:
        raise TemacliError("--batch-size and --chunk-size must be at least 1")
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
    if on_start is not None:
        on_start(int(rows.size))

    nan_rows: list[int] = []
    t0 = time.perf_counter()
    n_cand = None
    if protocol == "sampled":
        cands = dataset.candidates(split)
        ranks = sampled_ranks(scorer, sp, cands, batch_size=batch_size, rows=rows, progress=progress, nan_rows=nan_rows)
        n_cand_each = int(cands.shape[1])
    else:
        ranges = (dataset.domain_range(0), dataset.domain_range(1))
        ranks, n_cand = full_ranks(
            scorer, sp, ranges, rows=rows, exclude_history=exclude_history, batch_size=batch_size,
            chunk_size=chunk_size, progress=progress, nan_rows=nan_rows,
        )
    seconds = time.perf_counter() - t0

    names = dataset.domains
    doms = dom[rows]
    metrics = summarize_by_domain(ranks, doms, names)
    counts = train_item_counts(dataset.split("train"), dataset.n_items)
    masks = slice_masks(sp, rows, dataset.n_x, counts, cold_threshold)
    slices = summarize_slices(ranks, doms, masks, names)

    instances: dict[str, Any] = {
        "total": n,
        "evaluated": int(rows.size),
        "skipped": {},
        "nan_score": _named(sp, nan_rows),
        "history_truncated": int((lengths[rows] > int(scorer.max_len)).sum()),
        "max_len": int(scorer.max_len),
    }
    if empty.any():
        instances["skipped"]["empty history"] = _named(sp, np.nonzero(empty)[0])
    if outside.any():
        instances["skipped"]["target outside its domain"] = _named(sp, np.nonzero(outside)[0])
    if protocol == "full":
        instances["candidates_per_instance"] = {"min": int(n_cand.min()), "max": int(n_cand.max())}
    else:
        instances["candidates_per_instance"] = {"min": n_cand_each, "max": n_cand_each}

    result = {
        "kind": RESULT_KIND,
        "schema": SCHEMA,
        "model": model or {"path": None, "name": type(scorer).__name__, "kind": type(scorer).__name__, "fingerprint": None},
        "data": {"path": str(dataset.path), "fingerprint": dataset.fingerprint, "domains": list(names)},
        "split": split,
        "protocol": protocol,
        "exclude_history": bool(exclude_history) if protocol == "full" else None,
        "candidates": candidates_info(dataset, split, protocol, exclude_history),
        "rank_rule": "1 + number of candidates scoring strictly higher (ties favour the target)",
        "cold_threshold": int(cold_threshold),
        "instances": instances,
        "metrics": metrics,
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


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path | None = None,
    split: str = "test",
    protocol: str = "sampled",
    exclude_history: bool = True,
    batch_size: int = 256,
    chunk_size: int = 32768,
    cold_threshold: int = DEFAULT_COLD_THRESHOLD,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    loader=None,
    weights: str = DEFAULT_WEIGHTS,
) -> dict:
    """Load a model folder and its dataset, check they belong together, evaluate.

    ``weights``: the weight file in the model folder, or ``per-domain`` (each domain's targets
    ranked by that domain's best-validation weights, C2DSR's model selection).
    """
    if protocol not in PROTOCOLS:
        raise TemacliError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if split not in EVAL_SPLITS:
        raise TemacliError(f"cannot evaluate on split '{split}'; choose one of {', '.join(EVAL_SPLITS)}")
    t0 = time.perf_counter()
    trained, dataset = open_model_and_data(model_dir, data_dir, device, loader, weights=weights)
    load_s = time.perf_counter() - t0
    result = evaluate_scorer(
        trained, dataset, split=split, protocol=protocol, exclude_history=exclude_history,
        batch_size=batch_size, chunk_size=chunk_size, cold_threshold=cold_threshold,
        model=model_info(trained, model_dir, weights, dataset.domains), progress=progress, on_start=on_start,
    )
    result["timing"]["load_seconds"] = round(load_s, 3)
    return result


# ----------------------------------------------------------------------------- saved results
def write_result(result: dict, path: str | Path) -> Path:
    """Save a result as JSON with a manifest beside it (inputs: the model weights and the dataset)."""
    path = Path(path)
    artifacts.write_json(result, path)
    inputs = {"data": {"path": result["data"]["path"], "fingerprint": result["data"]["fingerprint"]}}
    if result["model"].get("path"):
        inputs["model"] = {"path": result["model"]["path"], "fingerprint": result["model"]["fingerprint"]}
    params = {k: result[k] for k in ("split", "protocol", "exclude_history", "cold_threshold")}
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
