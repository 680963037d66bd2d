"""Saved evaluation results inside the model folder, reused by ``eval --compare``.

Every ``temacli eval`` of a model folder saves its result as
``MODEL/eval/<split>.<protocol>[.keep-history].<weights>.<cutoffs>.<key>.json`` (with a manifest
beside it). ``<key>`` is a fingerprint of what the numbers depend on: the dataset fingerprint, the
split, the protocol and history rule, the cutoffs, the weights choice and the cold threshold.

``eval --compare MODEL ...`` first looks there (:func:`lookup`): a saved result is used only when
its dataset fingerprint, candidate-set fingerprint (the stored negatives are re-hashed) and model
weights fingerprint all equal the current ones; otherwise the model is evaluated again and the
result saved. ``--recompute`` skips the lookup. A model folder that cannot be written (read-only,
shared) is evaluated as usual; the result is just not saved (:func:`save` returns ``None``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from temacli import artifacts
from temacli.errors import TemacliError

CACHE_DIR = "eval"


def params(split: str, protocol: str, exclude_history: bool, ks, weights: str, cold_threshold: int) -> dict:
    """The options a saved result must match (``exclude_history`` counts only for ``full``)."""
    return {
        "split": split,
        "protocol": protocol,
        "exclude_history": bool(exclude_history) if protocol == "full" else None,
        "ks": list(ks) if ks is not None else None,
        "weights": weights,
        "cold_threshold": int(cold_threshold),
    }


def result_params(result: dict) -> dict:
    """:func:`params` as recorded in a result."""
    return params(result["split"], result["protocol"], bool(result.get("exclude_history")), result.get("ks"),
                  (result.get("model") or {}).get("weights") or "model.safetensors", result["cold_threshold"])


def _weights_label(weights: str) -> str:
    if weights == "per-domain":
        return "per-domain"
    name = Path(weights).name
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else name.replace(".", "_")


def path_for(model_dir: str | Path, data_fingerprint: str, p: dict) -> Path:
    """Where the result of options ``p`` on dataset ``data_fingerprint`` is saved in ``model_dir``."""
    key = artifacts.text_fingerprint(json.dumps({"data": data_fingerprint, **p}, sort_keys=True))
    cut = "k" + "-".join(map(str, p["ks"])) if p["ks"] is not None else "default-ks"
    parts = [p["split"], p["protocol"]] + (["keep-history"] if p["exclude_history"] is False else [])
    parts += [_weights_label(p["weights"]), cut, key.split(":", 1)[-1][:12]]
    return Path(model_dir) / CACHE_DIR / (".".join(parts) + ".json")


def save(result: dict, model_dir: str | Path) -> Path | None:
    """Save ``result`` in its model folder; ``None`` when the folder cannot be written."""
    from temacli.evaluation.evaluate import write_result

    path = path_for(model_dir, result["data"]["fingerprint"], result_params(result))
    try:
        return write_result(result, path)
    except (OSError, TemacliError):
        return None


def lookup(model_dir: str | Path, data_dir: str | Path | None, p: dict) -> tuple[dict | None, str]:
    """A saved result of ``model_dir`` for options ``p`` that is still valid, and why (not).

    Returns ``(result, note)``: ``result`` is ``None`` when nothing valid is saved, and ``note``
    says what was found (``"saved result reused: PATH"``, ``"no saved result"``, or which
    fingerprint changed). Nothing is loaded but manifests and the saved JSON (and the stored
    negatives, re-hashed).
    """
    from temacli.data.dataset import Dataset
    from temacli.evaluation import evaluate as ev
    from temacli.model.folder import ModelFolder

    folder = ModelFolder.open(model_dir)
    dataset = Dataset.open(data_dir if data_dir is not None else folder.dataset_path())
    path = path_for(model_dir, dataset.fingerprint, p)
    if not path.is_file():
        return None, "no saved result"
    try:
        saved = ev.read_result(path)
    except TemacliError:
        return None, f"saved result {path} unreadable"
    if saved["data"]["fingerprint"] != dataset.fingerprint:
        return None, "dataset changed"
    if result_params(saved) != p:
        return None, "options differ"
    cands = ev.candidates_info(dataset, p["split"], p["protocol"], p["exclude_history"] is not False)
    if (saved.get("candidates") or {}).get("fingerprint") != cands["fingerprint"]:
        return None, "candidates changed"
    if saved["model"].get("fingerprint") != folder.info(p["weights"], dataset.domains)["fingerprint"]:
        return None, "model weights changed"
    saved["model"]["path"] = str(model_dir)
    saved["data"]["path"] = str(dataset.path)
    saved["reused_from"] = str(path)
    return saved, f"saved result reused: {path}"


def evaluate_cached(model_dir: str | Path, data_dir: str | Path | None = None, recompute: bool = False,
                    **opts: Any) -> tuple[dict, str]:
    """:func:`temacli.evaluation.evaluate.evaluate` unless a valid saved result exists; saves what it computes.

    ``opts`` are ``evaluate``'s keyword arguments. Returns ``(result, note)``.
    """
    from temacli.evaluation import evaluate as ev
    from temacli.evaluation.checks import check_eval_options

    o = ev.scorer_options(**{k: v for k, v in opts.items() if k not in ("device", "loader", "weights")})
    ks = check_eval_options(o["split"], o["protocol"], o["batch_size"], o["chunk_size"], o["cold_threshold"], o["ks"])
    p = params(o["split"], o["protocol"], o["exclude_history"], ks, opts.get("weights", ev.DEFAULT_WEIGHTS),
               o["cold_threshold"])
    if not recompute:
        found, note = lookup(model_dir, data_dir, p)
        if found is not None:
            return found, note
    result = ev.evaluate(model_dir, data_dir, **opts)
    saved = save(result, model_dir)
    return result, (f"evaluated; saved in {saved}" if saved else "evaluated; the model folder is not writable, not saved")
