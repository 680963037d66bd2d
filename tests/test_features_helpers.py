"""Builders the features tests still share: an items table alone, image files, and (for the few tests whose
item texts ``data split`` would change, or with one item in a domain, that also need a dataset folder) a
dataset folder around it. Everything else builds datasets with conftest's ``make_dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from temacli import artifacts
from temacli.data.dataset import ITEMS, SPLIT

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_items(folder: Path, titles_x, titles_y, images=None, descriptions=None, extra=None) -> Path:
    """``folder/items.parquet`` alone (the ITEMS contract; no dataset manifest, which the features commands do
    not need), with the item texts exactly as given. Returns the folder.

    ``images``: optional list (one per item) of image paths or None; ``extra``: {column: values}.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n_x, n_y = len(titles_x), len(titles_y)
    n = n_x + n_y
    cols = {
        "item": pa.array(np.arange(n, dtype=np.int32)),
        "item_id": pa.array([f"I{i:04d}" for i in range(n)]),
        "domain": pa.array(["food"] * n_x + ["kitchen"] * n_y),
        "domain_idx": pa.array(np.array([0] * n_x + [1] * n_y, dtype=np.int8)),
        "title": pa.array(list(titles_x) + list(titles_y)),
    }
    if descriptions is not None:
        cols["description"] = pa.array(descriptions, type=pa.string())
    if images is not None:
        cols["image"] = pa.array([None if p is None else str(p) for p in images], type=pa.string())
    for k, v in (extra or {}).items():
        cols[k] = pa.array(v, type=pa.string())
    artifacts.write_table(pa.table(cols), folder / "items.parquet", ITEMS)
    return folder


def build_dataset(folder: Path, titles_x, titles_y, images=None, descriptions=None, extra=None) -> Path:
    """:func:`write_items` plus random splits, negatives and a ``data split`` manifest, for the tests that need
    ``Dataset.open`` on items ``make_dataset`` cannot write (one item in a domain, whitespace-only titles,
    extra columns)."""
    write_items(folder, titles_x, titles_y, images, descriptions, extra)
    n_x, n_y = len(titles_x), len(titles_y)
    n = n_x + n_y
    rng = np.random.default_rng(0)
    rows = {}
    for split in ("train", "valid", "test"):
        hist = [list(rng.integers(0, n, 3)) for _ in range(4)]
        t = pa.table(
            {
                "user": pa.array(np.arange(4, dtype=np.int32)),
                "user_id": pa.array([f"u{u}" for u in range(4)]),
                "history": pa.array(hist, type=pa.list_(pa.int32())),
                "target": pa.array(np.array([0, n_x, 1, n_x + 1], dtype=np.int32) % n),
                "target_domain": pa.array(np.array([0, 1, 0, 1], dtype=np.int8)),
            }
        )
        artifacts.write_table(t, folder / f"{split}.parquet", SPLIT)
        rows[split] = 4
    outputs = {"items": {"path": "items.parquet", "fingerprint": artifacts.fingerprint(folder / "items.parquet")}}
    for split in ("valid", "test"):
        p = artifacts.write_npy(rng.integers(0, n, (4, 999)).astype(np.int32), folder / f"candidates_{split}.npy")
        outputs[f"candidates_{split}"] = {"path": p.name, "fingerprint": artifacts.fingerprint(p)}
    m = artifacts.build_manifest(
        "data split",
        {"format": "test"},
        outputs=outputs,
        counts={
            "domains": ["food", "kitchen"],
            "n_items_x": n_x,
            "n_items_y": n_y,
            "rows_train": rows["train"],
            "rows_valid": rows["valid"],
            "rows_test": rows["test"],
        },
        dataset_fingerprint=artifacts.fingerprint(folder),
    )
    artifacts.write_manifest(folder, m)
    return folder


def write_images(folder: Path) -> dict[str, Path]:
    """Real small image files: PNG, JPEG, a grayscale PNG, a truncated JPEG, a non-image, a big RGBA PNG."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    files = {}
    red = np.zeros((40, 60, 3), dtype=np.uint8)
    red[..., 0] = 220
    Image.fromarray(red).save(folder / "red.png")
    files["red_png"] = folder / "red.png"
    noise = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.jpg", quality=90)
    files["noise_jpg"] = folder / "noise.jpg"
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8), mode="L").save(folder / "gray.png")
    files["gray_png"] = folder / "gray.png"
    Image.fromarray(rng.integers(0, 255, (300, 200, 4), dtype=np.uint8), mode="RGBA").save(folder / "rgba.png")
    files["rgba_png"] = folder / "rgba.png"
    full = (folder / "noise.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    files["truncated_jpg"] = folder / "truncated.jpg"
    (folder / "notanimage.png").write_bytes(b"this is not a PNG file at all")
    files["garbage_png"] = folder / "notanimage.png"
    return files
