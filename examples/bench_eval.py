"""Benchmark ``temacli eval`` (both protocols) and ``temacli recommend --user`` end to end.

Every number is a wall-clock time of the real command in a fresh process (process start, imports,
model loading included), plus the scoring time the command reports itself.

    # amazon-food-kitchen: splits the data and trains a 1-epoch TEMA model first if they are missing
    python examples/bench_eval.py --work runs/bench

    # a quick run on the bundled sample
    python examples/bench_eval.py --work runs/bench-sample \\
        --interactions examples/sample/interactions.csv --items examples/sample/items.csv

    # an existing model and dataset
    python examples/bench_eval.py --work runs/bench --model runs/fk/model --data runs/fk/data

The model's weights do not change the timings (same shapes, same work), so a model trained for one
epoch is enough to time evaluation; its metrics mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AFK = ROOT.parent / "shared" / "data" / "amazon-food-kitchen"
TEMACLI = [sys.executable, "-m", "temacli"]


def sh(args: list, capture: bool = True) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([str(a) for a in args], capture_output=capture, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(map(str, args))}\n{p.stderr}")
    return wall, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    ap.add_argument("--interactions", type=Path, default=AFK / "interactions.csv")
    ap.add_argument("--items", type=Path, default=AFK / "items.csv")
    ap.add_argument("--data", type=Path, help="existing dataset folder (default: WORK/data, split if missing)")
    ap.add_argument("--model", type=Path, help="existing model folder (default: WORK/tema, trained if missing)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--users", type=int, default=5, help="recommend --user runs to time")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    a = ap.parse_args()

    data = a.data or a.work / "data"
    model = a.model or a.work / "tema"
    if not data.exists():
        print(f"splitting {a.interactions} -> {data}", file=sys.stderr)
        sh(TEMACLI + ["data", "split", "--interactions", a.interactions, "--items", a.items,
                      "--domains", "food,kitchen", "--out", data])
    if not model.exists():
        print(f"training a {a.epochs}-epoch TEMA model (timing only) -> {model}", file=sys.stderr)
        sh(TEMACLI + ["train", "--data", data, "--out", model, "--epochs", a.epochs, "--device", a.device,
                      "--train-positions", "last"], capture=False)

    rows = []
    for protocol in ("sampled", "full"):
        wall, out = sh(TEMACLI + ["eval", "--model", model, "--data", data, "--split", "test",
                                  "--protocol", protocol, "--device", a.device, "--json"])
        r = json.loads(out)
        rows.append({
            "what": f"eval --protocol {protocol} (test)",
            "wall_s": round(wall, 2),
            "load_s": r["timing"]["load_seconds"],
            "scoring_s": r["timing"]["scoring_seconds"],
            "instances": r["instances"]["evaluated"],
            "instances_per_s": r["timing"]["instances_per_second"],
            "MRR_all": round(r["metrics"]["all"]["MRR"], 4),
        })

    from temacli.data.dataset import Dataset

    sp = Dataset.open(data).split("test")
    picks = [str(sp.user_id[int(i)]) for i in
             sorted({int(j * (len(sp) - 1) / max(a.users - 1, 1)) for j in range(a.users)})]
    walls = []
    for uid in picks:
        wall, _ = sh(TEMACLI + ["recommend", "--model", model, "--data", data, "--user", uid, "--k", "10",
                                "--device", a.device, "--explain"])
        walls.append(wall)
    rows.append({"what": f"recommend --user --k 10 --explain ({len(walls)} users)",
                 "wall_s": round(statistics.median(walls), 2), "wall_min_s": round(min(walls), 2),
                 "wall_max_s": round(max(walls), 2)})
    wall, _ = sh(TEMACLI + ["--help"])
    rows.append({"what": "temacli --help (process start + CLI import)", "wall_s": round(wall, 2)})

    import torch

    env = {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "device": a.device,
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "data": str(data), "model": str(model)}
    print(json.dumps(env))
    print("| what | wall s | details |")
    print("|---|---:|---|")
    for r in rows:
        details = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("what", "wall_s"))
        print(f"| {r['what']} | {r['wall_s']} | {details} |")
    if a.json:
        a.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
