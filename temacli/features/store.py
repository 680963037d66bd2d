"""The features folder: one NPY matrix per modality, row-aligned with the dataset's item indices.

    features/
      text.npy      float32|float16 (n_items, d): L2-normalised rows; zero rows where has_text is false
      has_text.npy  bool (n_items,)
      text.npy.manifest.json    stage "features clip" or "features text"; inputs.items.fingerprint
      image.npy, has_image.npy, image.npy.manifest.json    (features clip only)

A manifest's ``counts`` hold ``n_items``, ``dim`` and ``missing``; its ``inputs.items.fingerprint``
must equal the dataset's items fingerprint, so features made for another items table are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temacli import artifacts
from temacli.errors import TemacliError

MODALITIES = ("image", "text")
STAGES = ("features clip", "features text")


@dataclass
class Modality:
    name: str
    embeddings: np.ndarray  # (n_items, dim), memory-mapped
    mask: np.ndarray  # bool (n_items,): True where the item has this modality
    manifest: dict

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def write_manifest_for(
    features_dir: str | Path,
    name: str,
    stage: str,
    params: dict,
    items_path: str | Path,
    items_fingerprint: str,
    counts: dict,
    **extra,
) -> Path:
    """Write ``<name>.npy.manifest.json`` for a modality already written to ``features_dir``."""
    features_dir = Path(features_dir)
    emb = features_dir / f"{name}.npy"
    mask = features_dir / f"has_{name}.npy"
    m = artifacts.build_manifest(
        stage,
        params,
        inputs={"items": artifacts.input_record(items_path, items_fingerprint)},
        outputs={
            name: {"path": emb.name, "fingerprint": artifacts.fingerprint(emb)},
            f"has_{name}": {"path": mask.name, "fingerprint": artifacts.fingerprint(mask)},
        },
        counts=counts,
        **extra,
    )
    return artifacts.write_manifest(emb, m)


def load_modality(features_dir: str | Path, name: str, dataset=None) -> Modality:
    """Load one modality, checking shapes and (given a Dataset) the items fingerprint."""
    if name not in MODALITIES:
        raise TemacliError(f"unknown modality '{name}'; choose one of {', '.join(MODALITIES)}")
    features_dir = Path(features_dir)
    emb_path = features_dir / f"{name}.npy"
    fix = (
        f"run `temacli features {'clip' if name == 'image' else 'text'} --out {features_dir}` "
        "for this dataset's items.parquet"
    )
    if not emb_path.is_file():
        raise TemacliError(f"{emb_path}: {name} features not found; {fix}")
    manifest = artifacts.read_manifest(emb_path, fix=fix)
    if manifest.get("stage") not in STAGES:
        raise TemacliError(f"{emb_path}: manifest stage '{manifest.get('stage')}' is not a features stage; {fix}")
    n = dataset.n_items if dataset is not None else int(manifest["counts"]["n_items"])
    emb = artifacts.read_npy(emb_path, shape0=n, ndim=2, what=f"{name} features", fix=fix)
    mask = artifacts.read_npy(features_dir / f"has_{name}.npy", shape0=n, ndim=1, what=f"has_{name} mask", fix=fix)
    if dataset is not None:
        from temacli.data.dataset import check_items_fingerprint

        found = manifest.get("inputs", {}).get("items", {}).get("fingerprint")
        check_items_fingerprint(found, dataset, str(emb_path), fix)
    return Modality(name=name, embeddings=emb, mask=np.asarray(mask, dtype=bool), manifest=manifest)


def available(features_dir: str | Path) -> list[str]:
    """Modalities present in a features folder."""
    features_dir = Path(features_dir)
    return [m for m in MODALITIES if (features_dir / f"{m}.npy").is_file()]
