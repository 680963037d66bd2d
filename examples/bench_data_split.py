"""Benchmark `data split`: wall time and peak memory on amazon-food-kitchen and on a generated log.

Usage:
    python examples/bench_data_split.py --real ../shared/data/amazon-food-kitchen
    python examples/bench_data_split.py --generate 10000000
    python examples/bench_data_split.py --llmcdsr ../shared/data/llmcdsr-food-kitchen

Each case runs in a fresh subprocess; peak memory is that process's maximum resident set size
(ru_maxrss), wall time covers reading, filtering, splitting, drawing candidates and writing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(path: Path, n: int, seed: int = 0) -> None:
    """A log shaped like Amazon data: ~35 interactions per user, popularity-skewed items, day ties."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users = n // 35
    lens = np.clip(rng.geometric(1 / 35, n_users), 10, 200)
    lens = (lens * (n / lens.sum())).astype(np.int64)
    lens[lens < 10] = 10
    total = int(lens.sum())
    user = np.repeat(np.arange(n_users), lens)
    dom = (rng.random(total) < 0.45).astype(np.int8)
    n_items = (200_000, 300_000)
    item = np.where(dom == 0, rng.zipf(1.3, total) % n_items[0], rng.zipf(1.3, total) % n_items[1])
    ts = 1_300_000_000 + (rng.integers(0, 3000, total) * 86400)
    table = pa.table({
        "user_id": pa.array(np.char.add("u", user.astype(str))),
        "item_id": pa.array(np.char.add(np.where(dom == 0, "f", "k"), item.astype(str))),
        "domain": pa.array(np.where(dom == 0, "food", "kitchen")),
        "timestamp": pa.array(ts),
    })
    pq.write_table(table, path)


def run_case(interactions: Path, items: Path | None, out: Path) -> dict:
    code = (
        "import time, resource, json, sys\n"
        "t=time.perf_counter()\n"
        "from temacli.data.split import split_dataset, SplitOptions\n"
        f"m=split_dataset({str(interactions)!r}, {str(items) if items else None!r}, {str(out)!r}, "
        "SplitOptions(domains=('food','kitchen')), force=True)\n"
        "print(json.dumps({'wall_s': time.perf_counter()-t, 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024, "
        "'counts': m['counts'], 'raw': m['report']['raw_interactions']}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_import(folder: Path, out: Path) -> dict:
    code = (
        "import time, resource, json\n"
        "t=time.perf_counter()\n"
        "from temacli.data.formats import import_dataset\n"
        f"m=import_dataset('llmcdsr', {str(folder)!r}, {str(out)!r}, force=True)\n"
        "print(json.dumps({'wall_s': time.perf_counter()-t, 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024, "
        "'counts': m['counts']}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=Path, help="folder with interactions.csv and items.csv")
    ap.add_argument("--generate", type=int, help="number of interactions of a generated log")
    ap.add_argument("--llmcdsr", type=Path, help="a published LLMCDSR folder to import")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.real:
            r = run_case(a.real / "interactions.csv", a.real / "items.csv", tmp / "real")
            print(f"real {a.real}: {r['raw']:,} interactions  wall {r['wall_s']:.2f} s  peak RSS {r['peak_rss_mib']:.0f} MiB")
        if a.llmcdsr:
            r = run_import(a.llmcdsr, tmp / "llmcdsr")
            c = r["counts"]
            print(
                f"import {a.llmcdsr}: {c['rows_train']:,} training rows, {c['rows_valid'] + c['rows_test']:,} "
                f"evaluation rows  wall {r['wall_s']:.2f} s  peak RSS {r['peak_rss_mib']:.0f} MiB"
            )
        if a.generate:
            log = tmp / "log.parquet"
            t = time.perf_counter()
            generate(log, a.generate)
            print(f"generated {a.generate:,} interactions in {time.perf_counter() - t:.1f} s")
            r = run_case(log, None, tmp / "gen")
            c = r["counts"]
            print(
                f"generated: {r['raw']:,} interactions, {c['n_users']:,} users kept, "
                f"{c['n_items_x'] + c['n_items_y']:,} items  wall {r['wall_s']:.2f} s  peak RSS {r['peak_rss_mib']:.0f} MiB"
            )


if __name__ == "__main__":
    main()
