"""Summarise a folder of `temacli eval --json --out` results into the Markdown tables of docs/results.md.

Usage: python examples/summarize_results.py docs/results/fk-h100
The folder holds one sub-folder per run (NAME_sSEED) with test.sampled.json and test.full.json, or the
layout examples/train_eval_grid.sh writes (NAME_sSEED/ and NAME_sSEED.test.sampled.json beside it).
Models are grouped by NAME; each cell is the mean ± sample standard deviation over seeds (in %).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("MRR", "NDCG@5", "NDCG@10")


def load(folder: Path) -> dict:
    runs: dict = defaultdict(lambda: defaultdict(list))
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        m = re.match(r"(.+)_s(\d+)$", d.name)
        name = m.group(1) if m else d.name
        for proto in ("sampled", "full"):
            f = d / f"test.{proto}.json"  # docs/results layout, or train_eval_grid.sh's NAME.test.P.json
            if not f.is_file():
                f = d.parent / f"{d.name}.test.{proto}.json"
            if f.is_file():
                runs[name][proto].append(json.loads(f.read_text()))
    return runs


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(runs: dict, names: list[str], proto: str) -> str:
    first = next(r for n in names for r in runs[n][proto])
    domains = [d for d in first["metrics"] if d != "all"]
    head = "| model | seeds | " + " | ".join(f"{d} {m}" for d in domains for m in METRICS) + " |"
    sep = "|---|---:|" + "---:|" * (len(domains) * len(METRICS))
    rows = [head, sep]
    for n in names:
        res = runs[n][proto]
        if not res:
            continue
        cols = [cell([r["metrics"][d][m] for r in res]) for d in domains for m in METRICS]
        rows.append(f"| {n} | {len(res)} | " + " | ".join(cols) + " |")
    cf = first["candidates"]["fingerprint"].split(":")[-1][:12]
    note = f"\n\nProtocol `{proto}`, split test, candidates {cf}, n = " + ", ".join(
        f"{d} {first['metrics'][d]['n']}" for d in domains
    )
    return "\n".join(rows) + note


def main() -> None:
    folder = Path(sys.argv[1])
    runs = load(folder)
    main_models = [n for n in ("tema", "sasrec", "gru4rec") if n in runs]
    abl = [n for n in runs if n.startswith("abl_")] + (["tema"] if "tema" in runs else [])
    for proto in ("sampled", "full"):
        print(f"### Main comparison, {proto} protocol\n")
        print(table(runs, main_models, proto) + "\n")
    print("### Ablations, sampled protocol\n")
    print(table(runs, abl, "sampled") + "\n")


if __name__ == "__main__":
    main()
