"""Compare evaluation results of several runs, the way the paper's Tables II-III do.

Results are comparable only when they were computed on the same dataset (fingerprint), split,
protocol and candidate set (the stored negatives' fingerprint, or for ``full`` the same exclusion
rule) over the same number of instances; :func:`check_comparable` refuses anything else with one
line that names the two runs and what differs.
"""

from __future__ import annotations

import math
import re

from temacli.errors import TemacliError
from temacli.evaluation.metrics import MAX_K
from temacli.evaluation.report import short_fp

COMPARE_METRICS = ("MRR", "NDCG@5", "NDCG@10")
COMPARE_KIND = "temacli.compare"


def _label(result: dict) -> str:
    m = result.get("model") or {}
    return str(m.get("path") or m.get("name") or "?")


_CHECKS = (
    ("dataset", lambda r: (r.get("data") or {}).get("fingerprint"), True,
     "evaluate every model on the same --data folder"),
    ("split", lambda r: r.get("split"), False, "evaluate every model on the same --split"),
    ("protocol", lambda r: r.get("protocol"), False, "evaluate every model with the same --protocol"),
    ("candidate set", lambda r: (r.get("candidates") or {}).get("fingerprint"), True,
     "evaluate every model on the same dataset folder, whose stored negatives are drawn once"),
    ("history exclusion", lambda r: r.get("exclude_history"), False,
     "evaluate every model with the same --keep-history choice"),
    ("number of evaluated instances", lambda r: (r.get("instances") or {}).get("evaluated"), False,
     "check the skipped instances of each run (`temacli eval --json`)"),
)


ALL_METRICS = ("MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10")
_METRIC = re.compile(r"^(MRR|NDCG@(\d+)|HR@(\d+))$")


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"MRR,NDCG@10"`` -> ("MRR", "NDCG@10"): MRR, NDCG@k or HR@k (k from 1 to MAX_K).

    Whether the results hold them is checked by :func:`comparison` (``eval --ks`` chooses the cutoffs).
    """
    names = tuple(m.strip().upper() for m in text.split(",") if m.strip())
    bad = []
    for m in names:
        hit = _METRIC.match(m)
        k = hit and (hit.group(2) or hit.group(3))
        if not hit or (k and not 1 <= int(k) <= MAX_K):
            bad.append(m)
    if bad or not names:
        raise TemacliError(f"--metrics {text}: choose from MRR, NDCG@k, HR@k (k between 1 and {MAX_K}), e.g. MRR,NDCG@10,HR@10")
    return tuple(dict.fromkeys(names))


def check_comparable(results: list[dict]) -> None:
    """Refuse results computed on different data, splits, protocols or candidates."""
    if len(results) < 2:
        raise TemacliError("--compare needs at least two runs (model folders or result JSON files)")
    ref = results[0]
    for other in results[1:]:
        for what, get, is_fp, fix in _CHECKS:
            a, b = get(ref), get(other)
            if a != b:
                shown = (short_fp(a), short_fp(b)) if is_fp else (a, b)
                raise TemacliError(
                    f"cannot compare {_label(other)} with {_label(ref)}: {what} differs "
                    f"({shown[1]} vs {shown[0]}); {fix}"
                )


def _unique_names(results: list[dict]) -> list[str]:
    names = [str((r.get("model") or {}).get("name") or _label(r)) for r in results]
    if len(set(names)) == len(names):
        return names
    return [_label(r) for r in results]


def comparison(results: list[dict], metrics: tuple[str, ...] = COMPARE_METRICS) -> dict:
    """One row per run, one column per (domain, metric); ``best`` marks the row(s) with the maximum."""
    check_comparable(results)
    ref = results[0]
    domains = list(ref["data"]["domains"])
    names = _unique_names(results)
    for name, r in zip(names, results):
        missing = [k for k in metrics if k not in r["metrics"]["all"]]
        if missing:
            ks = sorted({int(k.split("@")[1]) for k in metrics if "@" in k})
            raise TemacliError(
                f"{_label(r)}: the result has no {', '.join(missing)}; evaluate every run with "
                f"--ks {','.join(map(str, ks))} (or choose --metrics among {', '.join(k for k in r['metrics']['all'] if k != 'n')})"
            )
    rows = []
    for name, r in zip(names, results):
        values = {d: {k: r["metrics"][d][k] for k in metrics} for d in domains + ["all"]}
        n = {d: r["metrics"][d]["n"] for d in domains + ["all"]}
        m = r.get("model") or {}
        rows.append({"model": name, "path": m.get("path"), "kind": m.get("kind"),
                     "fingerprint": m.get("fingerprint"), "values": values, "n": n})
    best: dict = {}
    for d in domains + ["all"]:
        best[d] = {}
        for k in metrics:
            vals = [row["values"][d][k] for row in rows]
            finite = [v for v in vals if v is not None and not math.isnan(v)]
            top = max(finite) if finite else None
            best[d][k] = [i for i, v in enumerate(vals) if top is not None and v == top]
    return {
        "kind": COMPARE_KIND,
        "data": {"fingerprint": ref["data"]["fingerprint"], "domains": domains},
        "split": ref["split"],
        "protocol": ref["protocol"],
        "exclude_history": ref.get("exclude_history"),
        "candidates": ref["candidates"],
        "metrics": list(metrics),
        "rows": rows,
        "best": best,
        "warnings": [f"{name}: {w}" for name, r in zip(names, results) for w in (r.get("warnings") or [])],
    }


def write_comparison(table: dict, results: list[dict], path) -> None:
    """Save a comparison (with every run's full result) as JSON, with a manifest beside it."""
    from temacli import artifacts

    path = artifacts.write_json({**table, "results": results}, path)
    inputs = {f"model:{r['model']}": {"path": r["path"], "fingerprint": r["fingerprint"]} for r in table["rows"]}
    inputs["data"] = {"fingerprint": table["data"]["fingerprint"]}
    params = {"split": table["split"], "protocol": table["protocol"], "exclude_history": table["exclude_history"]}
    manifest = artifacts.build_manifest(
        "eval compare", params, inputs, outputs={"comparison": {"fingerprint": artifacts.fingerprint(path)}},
        counts={"runs": len(results)},
    )
    artifacts.write_manifest(path, manifest)
