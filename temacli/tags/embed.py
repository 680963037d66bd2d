"""Item-text vectors for the tag stages: reuse ``features text``'s ``text.npy`` or encode the same way.

``tags match --method embedding`` and ``tags generate --ground embedding`` need all-MiniLM-L6-v2
vectors of the items' texts, which ``temacli features text`` already wrote. With ``--features DIR``
the stage reads ``DIR/text.npy`` when its manifest chains to the items table (same items
fingerprint) and it was written the way this stage would encode (stage ``features text``, encoder
all-MiniLM-L6-v2, the default text column, float32, the precision this device resolves to);
otherwise it encodes. Encoding here is the very call ``features text`` makes (every item's text in
item order, the same batch size), so the vectors and everything computed from them are identical
either way, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temacli import artifacts
from temacli.errors import TemacliError

COS_LO, COS_HI = 0.05, 0.55  # embedding: cosine -> score mapping (documented in docs/tags.md)


def cos_to_score(cos: np.ndarray) -> np.ndarray:
    """Cosine of an item's and a tag's text vectors -> a 1-100 score, linear between COS_LO and COS_HI."""
    x = (np.asarray(cos, dtype=np.float64) - COS_LO) / (COS_HI - COS_LO)
    return np.rint(1 + 99 * np.clip(x, 0.0, 1.0)).astype(np.float32)

BATCH = 256  # the batch size of `features text` (its default)


def _reusable(m: dict, items_fp: str, device: str) -> str | None:
    """Why a features manifest cannot stand in for encoding again (None: it can)."""
    from temacli.features.text import MODEL_NAME, resolve_device, resolve_precision

    p = m.get("params") or {}
    if m.get("stage") != "features text" or p.get("encoder") != MODEL_NAME:
        return f"written by {m.get('stage')} with encoder {p.get('encoder')}, not features text with {MODEL_NAME}"
    if p.get("text_column") is not None:
        return f"encoded text column {p.get('text_column')!r}, not the default item text"
    if p.get("dtype") != "float32":
        return f"stored as {p.get('dtype')}, not float32"
    want = resolve_precision("auto", resolve_device(device))
    if p.get("precision") != want:
        return f"encoded in {p.get('precision')}, this device encodes in {want}"
    return None


def item_text_vectors(items_path: Path, texts: list[str], features: str | Path | None = None,
                      device: str = "cpu", progress=None) -> tuple[np.ndarray, dict]:
    """float32 (n_items, 384) unit rows (zero rows for items without text) and a record of where from."""
    from temacli.features.text import MODEL_NAME, encode_texts

    items_fp = artifacts.fingerprint(items_path)
    info: dict = {"encoder": MODEL_NAME, "features": None, "reused": False}
    if features is not None:
        from temacli.features.store import load_modality

        fdir = Path(features)
        if not (fdir / "text.npy").is_file():
            raise TemacliError(f"--features {fdir}: no text.npy there; run `temacli features text --items "
                               f"{items_path} --out {fdir}` first, or leave --features out")
        mod = load_modality(fdir, "text")
        found = mod.manifest.get("inputs", {}).get("items", {}).get("fingerprint")
        artifacts.check_same("items fingerprint of text.npy", found, items_fp, str(fdir / "text.npy"),
                             f"the features were made for another items table; rerun `temacli features text "
                             f"--items {items_path} --out {fdir}`")
        if mod.embeddings.shape[0] != len(texts):
            raise TemacliError(f"{fdir / 'text.npy'}: {mod.embeddings.shape[0]} rows for {len(texts)} items; "
                               f"rerun `temacli features text --items {items_path} --out {fdir}`")
        info["features"] = str(fdir / "text.npy")
        info["features_fingerprint"] = mod.manifest["outputs"]["text"]["fingerprint"]
        why = _reusable(mod.manifest, items_fp, device)
        if why is None:
            info["reused"] = True
            if progress is not None:
                progress(len(texts))
            return np.asarray(mod.embeddings, dtype=np.float32), info
        info["not_reused_because"] = why
    vec = encode_texts(texts, batch_size=BATCH, device=device, progress=progress)
    return vec, info
