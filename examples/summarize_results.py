"""Summarise a folder of `temacli eval --json --out` results into the Markdown tables of docs/results.md.

Usage: python examples/summarize_results.py docs/results/fk-h100 [--layout paper|llmcdsr] [--weights W]
The folder holds one sub-folder per run (NAME_sSEED) with test.sampled.json and test.full.json, or the
layout examples/train_eval_grid.sh writes (NAME_sSEED/ and NAME_sSEED.test.sampled.json beside it).
Models are grouped by NAME; each cell is the mean ± sample standard deviation over seeds (in %).
``--weights W`` reads the results of one selection of each run (train_eval_grid.sh's WEIGHTS): the files
test.W.P.json in the run folder, or NAME_sSEED.W.test.P.json beside it (W = per-domain, valid-loss, ...).

``--layout llmcdsr`` prints LLMCDSR's columns (NDCG@k and HR@k for k in 1, 3, 5, 10), which the results
hold when they were evaluated with ``temacli eval --ks 1,3,5,10`` (or ``--layout llmcdsr``). Runs whose
results carry a tie warning (``temacli eval`` diagnostics) are listed under the tables.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("MRR", "NDCG@5", "NDCG@10")
LLMCDSR_METRICS = tuple(f"NDCG@{k}" for k in (1, 3, 5, 10)) + tuple(f"HR@{k}" for k in (1, 3, 5, 10))


def load(folder: Path, weights: str = "") -> dict:
    runs: dict = defaultdict(lambda: defaultdict(list))
    w = f"{weights}." if weights else ""
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        m = re.match(r"(.+)_s(\d+)$", d.name)
        name = m.group(1) if m else d.name
        for proto in ("sampled", "full"):
            f = d / f"test.{w}{proto}.json"  # docs/results layout, or train_eval_grid.sh's NAME.test.P.json
            if not f.is_file():
                f = d.parent / f"{d.name}.{w}test.{proto}.json"
            if f.is_file():
                runs[name][proto].append(json.loads(f.read_text()))
    return runs


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(runs: dict, names: list[str], proto: str, metrics: tuple = METRICS) -> str:
    first = next(r for n in names for r in runs[n][proto])
    domains = [d for d in first["metrics"] if d != "all"]
    head = "| model | seeds | " + " | ".join(f"{d} {m}" for d in domains for m in metrics) + " |"
    sep = "|---|---:|" + "---:|" * (len(domains) * len(metrics))
    rows = [head, sep]
    for n in names:
        res = runs[n][proto]
        if not res:
            continue
        missing = sorted({m for r in res for m in metrics if m not in r["metrics"][domains[0]]})
        if missing:
            raise SystemExit(f"{n} ({proto}): the results have no {', '.join(missing)}; "
                             "evaluate them with `temacli eval --ks 1,3,5,10`")
        cols = [cell([r["metrics"][d][m] for r in res]) for d in domains for m in metrics]
        rows.append(f"| {n} | {len(res)} | " + " | ".join(cols) + " |")
    cf = first["candidates"]["fingerprint"].split(":")[-1][:12]
    note = f"\n\nProtocol `{proto}`, split test, candidates {cf}, n = " + ", ".join(
        f"{d} {first['metrics'][d]['n']}" for d in domains
    )
    return "\n".join(rows) + note


def warnings(runs: dict) -> list[str]:
    out = []
    for name, by_proto in sorted(runs.items()):
        for proto, res in by_proto.items():
            for r in res:
                out += [f"{name} ({proto}): {w}" for w in r.get("warnings") or []]
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--layout", choices=("paper", "llmcdsr"), default="paper")
    ap.add_argument("--weights", default="", help="one selection of each run: per-domain, valid-loss, ... (default: model.safetensors)")
    args = ap.parse_args(argv)
    metrics = LLMCDSR_METRICS if args.layout == "llmcdsr" else METRICS
    runs = load(args.folder, args.weights)
    main_models = [n for n in ("tema", "sasrec", "gru4rec") if n in runs]
    abl = [n for n in runs if n.startswith("abl_")] + (["tema"] if "tema" in runs else [])
    for proto in ("sampled", "full"):
        names = [n for n in main_models if runs[n][proto]]
        if names:
            print(f"### Main comparison, {proto} protocol\n")
            print(table(runs, names, proto, metrics) + "\n")
    if any(runs[n]["sampled"] for n in abl if n != "tema"):
        print("### Ablations, sampled protocol\n")
        print(table(runs, abl, "sampled", metrics) + "\n")
    for w in warnings(runs):
        print(f"- {w}")


if __name__ == "__main__":
    main()
