"""Throughput of `features clip` and `features text` (items/s), and `features text` on a whole catalogue.

    python examples/bench_features.py                       # this CPU: ViT-S-32-alt and ViT-B-32, MiniLM
    python examples/bench_features.py --device cuda --images 4096 --texts 16384 --workers 8
    python examples/bench_features.py --full-text           # + `features text` on all amazon-food-kitchen items

CLIP models use random weights (``--random-weights``, the flag for tests and timing): the cost of a
forward pass does not depend on the weights' values, and no weights can be downloaded here. Images are
synthetic JPEGs (``--image-size`` pixels square, noise, so decoding costs what a photo costs) written
to a temporary folder; texts are real titles from amazon-food-kitchen. Each timing runs the library's
stage function (decoding, batching, encoding and writing the memory-mapped NPY included), after one
small warm-up call that is not counted. Prints a table and, with --json, one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temacli import artifacts  # noqa: E402
from temacli.data.dataset import ITEMS  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "amazon-food-kitchen" / "items.csv"


def read_catalogue(path: Path) -> list[tuple[str, str, str]]:
    """(item_id, domain, title) rows of an items.csv, food first (domain X), then kitchen."""
    with open(path, newline="") as f:
        rows = [(r["item_id"], r["domain"], r["title"]) for r in csv.DictReader(f)]
    domains = sorted({d for _, d, _ in rows})
    return sorted(rows, key=lambda r: domains.index(r[1]))


def write_items(path: Path, rows: list[tuple[str, str, str]], images: list[str] | None = None) -> Path:
    domains = sorted({d for _, d, _ in rows}, key=lambda d: [r[1] for r in rows].index(d))
    cols = {
        "item": pa.array(np.arange(len(rows), dtype=np.int32)),
        "item_id": pa.array([r[0] for r in rows]),
        "domain": pa.array([r[1] for r in rows]),
        "domain_idx": pa.array(np.array([domains.index(r[1]) for r in rows], dtype=np.int8)),
        "title": pa.array([r[2] for r in rows]),
    }
    if images is not None:
        cols["image"] = pa.array(images, type=pa.string())
    return artifacts.write_table(pa.table(cols), path, ITEMS)


def write_jpegs(folder: Path, n: int, size: int) -> list[str]:
    from PIL import Image

    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    names = []
    for i in range(n):
        name = f"{i:06d}.jpg"
        if i < 64:  # 64 distinct noisy JPEGs (decoding costs what a photo of this size costs) ...
            img = (base // 4 + np.uint8(i * 3)).astype(np.uint8)
            Image.fromarray(img).save(folder / name, quality=85)
        else:  # ... copied round-robin: every item still has its own file to open and decode
            shutil.copyfile(folder / f"{i % 64:06d}.jpg", folder / name)
        names.append(name)
    return names


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--precision", default="auto", help="auto, float32, bfloat16, float16")
    ap.add_argument("--models", default="ViT-S-32-alt,ViT-B-32", help="open_clip models (random weights)")
    ap.add_argument("--images", type=int, default=128, help="images per CLIP timing")
    ap.add_argument("--texts", type=int, default=1024, help="texts per timing")
    ap.add_argument("--image-size", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64, help="images per batch")
    ap.add_argument("--text-batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=None, help="image decoding processes (default: spare cores, max 8)")
    ap.add_argument("--items-csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--full-text", action="store_true", help="also run `features text` on every item of --items-csv")
    ap.add_argument("--skip-clip", action="store_true")
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--json", dest="as_json", action="store_true")
    args = ap.parse_args()

    import torch

    from temacli.features import clip as fclip
    from temacli.features import text as ftext
    from temacli.features.device import resolve_device, resolve_precision

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    catalogue = [r for r in read_catalogue(args.items_csv)]
    titled = [r for r in catalogue if r[2].strip()]
    results: dict = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu x{os.cpu_count()}",
        "precision": precision,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_features.") as tmp:
        tmp = Path(tmp)
        n_img = args.images
        texts_rows = (titled * (args.texts // max(1, len(titled)) + 1))[: args.texts]
        if not args.skip_clip:
            names = write_jpegs(tmp / "images", n_img, args.image_size)
            img_rows = (titled * (n_img // max(1, len(titled)) + 1))[:n_img]
            img_items = write_items(tmp / "img" / "items.parquet", img_rows, names)
            txt_items = write_items(tmp / "txt" / "items.parquet", texts_rows)
            warm_items = write_items(tmp / "warm" / "items.parquet", img_rows[:8], names[:8])
            for model in [m for m in args.models.split(",") if m]:
                t0 = time.perf_counter()
                c = fclip.load_clip(model, None, device=device, random_weights=True, precision=precision)
                load_s = time.perf_counter() - t0
                common = dict(images_dir=tmp / "images", batch_size=args.batch_size, text_batch_size=args.text_batch_size,
                              workers=args.workers, clip=c, force=True)
                fclip.compute_clip_features(warm_items, tmp / "out_warm", **common)
                s_img = timed(lambda: fclip.compute_clip_features(img_items, tmp / "out", modality="image", **common))
                s_txt = timed(lambda: fclip.compute_clip_features(txt_items, tmp / "out", modality="text", **common))
                results["runs"].append({"what": f"clip images {model}", "items": n_img, "seconds": round(s_img, 3),
                                        "items_per_s": round(n_img / s_img, 1), "dim": c.dim, "load_s": round(load_s, 2)})
                results["runs"].append({"what": f"clip texts {model}", "items": len(texts_rows), "seconds": round(s_txt, 3),
                                        "items_per_s": round(len(texts_rows) / s_txt, 1), "dim": c.dim})
                del c
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
        if not args.skip_minilm:
            texts = [r[2] for r in texts_rows]
            ftext.encode_texts(texts[:16], device=device, precision=precision)  # load + warm-up
            # distinct texts (identical ones are encoded once, which would flatter the number)
            texts = [f"{t} #{i}" for i, t in enumerate(texts)]
            s = timed(lambda: ftext.encode_texts(texts, batch_size=args.text_batch_size, device=device, precision=precision))
            results["runs"].append({"what": "minilm texts (encode_texts)", "items": len(texts), "seconds": round(s, 3),
                                    "items_per_s": round(len(texts) / s, 1), "dim": ftext.DIM})
        if device != "cpu" and not args.skip_minilm:
            # the accelerator's rows against float32 on the CPU: same texts, cosine per row
            sample = [r[2] for r in texts_rows[:256]]
            a = ftext.encode_texts(sample, device=device, precision=precision)
            b = ftext.encode_texts(sample, device="cpu", precision="float32")
            results["minilm_min_cosine_vs_cpu_float32"] = float((a * b).sum(1).min())
        if device != "cpu" and not args.skip_clip:
            model = args.models.split(",")[0]
            ca = fclip.load_clip(model, None, device=device, random_weights=True, precision=precision)
            cb = fclip.load_clip(model, None, device="cpu", random_weights=True, precision="float32")
            outs = []
            for c in (ca, cb):
                mm = np.zeros((16, c.dim), dtype=np.float32)
                fclip.encode_images(c, names[:16], mm, tmp / "images", batch_size=16, workers=0)
                outs.append(mm)
            results[f"clip_{model}_image_min_cosine_vs_cpu_float32"] = float((outs[0] * outs[1]).sum(1).min())
        if args.full_text:
            items = write_items(tmp / "full" / "items.parquet", catalogue)
            ftext._load.cache_clear()  # count the model load, as a fresh `temacli features text` would
            s = timed(lambda: ftext.compute_text_features(items, tmp / "full_out", device=device,
                                                          batch_size=args.text_batch_size, precision=precision, force=True))
            results["runs"].append({"what": f"features text, all {len(catalogue):,} items of {args.items_csv.parent.name}",
                                    "items": len(catalogue), "with_text": len(titled), "seconds": round(s, 2),
                                    "items_per_s": round(len(catalogue) / s, 1), "dim": ftext.DIM})
    results["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.as_json:
        print(json.dumps(results))
        return
    print(f"device {results['device_name']} ({device}), precision {precision}, torch {results['torch']}, "
          f"threads {results['torch_threads']}, load average {results['load_average']:.1f} -> {results['load_average_end']:.1f}")
    print(f"{'what':58s} {'items':>7s} {'seconds':>9s} {'items/s':>9s}")
    for r in results["runs"]:
        print(f"{r['what']:58s} {r['items']:7d} {r['seconds']:9.2f} {r['items_per_s']:9.1f}")


if __name__ == "__main__":
    main()
