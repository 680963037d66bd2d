"""Frozen CLIP image and text embeddings with open_clip (TEMA-LLM Section III-E, Eqs. 5-6).

    load_clip(model, pretrained)      -> Clip: the frozen model, its preprocessing and tokenizer,
                                         where its weights came from and their fingerprint
    encode_images(clip, paths)        -> rows written into ``out``; mask and a reason per missing image
    encode_clip_texts(clip, texts)    -> rows written into ``out``; mask
    compute_clip_features(items, out) -> the ``features clip`` stage: image.npy, text.npy, masks,
                                         missing_*.json reports and manifests

Weights (``pretrained``) are an open_clip tag (downloaded by open_clip where the network allows,
read from its cache where it does not), a local checkpoint file (``.pt``, ``.pth``, ``.bin``,
``.safetensors``) or an open_clip ``local-dir:FOLDER`` (``open_clip_config.json`` + weights).
Random weights are never a fallback: they exist only behind ``random_weights=True``, a switch
for tests and timing runs, and manifests say so.

open_clip and torch are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from temacli import artifacts
from temacli.errors import TemacliError, check_range
from temacli.features import store

STAGE = "features clip"
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
LOCAL_DIR = "local-dir:"
RANDOM = "random"

from temacli.progress import SILENT, Progress  # noqa: E402  (the one progress protocol)

_NO_WEIGHTS_FIX = (
    "give a local checkpoint (--pretrained /path/to/weights.safetensors, .pt or .bin, or "
    "--pretrained local-dir:FOLDER), or compute text features offline with `temacli features text`"
)


# ----------------------------------------------------------------------------- the model
@dataclass
class Clip:
    """A frozen open_clip model ready to embed images and texts."""

    model: Any
    preprocess: Callable  # PIL image -> tensor (3, H, W)
    tokenizer: Callable  # list[str] -> LongTensor (n, context)
    device: str
    model_name: str
    pretrained: str  # the tag, the file, "local-dir:FOLDER" or "random"
    source: str  # "tag", "file", "local-dir" or "random"
    weights_fingerprint: str
    dim: int
    extra: dict = field(default_factory=dict)
    trim_text: bool = False  # run the text tower only up to each batch's longest text (exact for CLIP)

    def params(self) -> dict:
        """What identifies the embeddings (recorded in manifests)."""
        return {
            "model": self.model_name,
            "pretrained": self.pretrained,
            "weights_source": self.source,
            "weights_fingerprint": self.weights_fingerprint,
            **self.extra,
        }


def _online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Can we open a connection to ``host`` within ``timeout`` seconds (DNS included)?"""
    result = [False]

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0]


def _set_offline() -> None:
    """Make huggingface_hub answer from its cache at once instead of retrying the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import sys

    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:  # already imported: the environment variable was read at import
        hub_constants.HF_HUB_OFFLINE = True


def _state_fingerprint(model) -> str:
    """Fingerprint of a model's weights in memory (for random weights, which have no file)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode() + b"\0")
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()


def resolve_weights(model_name: str, pretrained: str, cache_dir: str | None = None) -> tuple[str, str, str]:
    """Find the weights ``pretrained`` names: (source, what to give open_clip, path to fingerprint).

    A tag is fetched into (or found in) open_clip's cache; offline machines are detected in a few
    seconds and answered from the cache, or refused in one line.
    """
    import open_clip

    if pretrained.startswith(LOCAL_DIR):
        folder = Path(pretrained[len(LOCAL_DIR) :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise TemacliError(
                f"--pretrained {pretrained}: {folder} has no open_clip_config.json; "
                "give a folder saved by open_clip (config + weights) or a checkpoint file"
            )
        ckpts = [p for p in sorted(folder.iterdir()) if p.suffix in CHECKPOINT_SUFFIXES]
        if not ckpts:
            raise TemacliError(
                f"--pretrained {pretrained}: {folder} has no weights file ({', '.join(CHECKPOINT_SUFFIXES)}); "
                + _NO_WEIGHTS_FIX
            )
        return "local-dir", LOCAL_DIR + str(folder), str(folder)
    path = Path(pretrained).expanduser()
    looks_like_file = path.suffix in CHECKPOINT_SUFFIXES or os.sep in pretrained or path.exists()
    if looks_like_file:
        if not path.is_file():
            raise TemacliError(f"--pretrained {pretrained}: checkpoint file not found; {_NO_WEIGHTS_FIX}")
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise TemacliError(
                f"--pretrained {pretrained}: unsupported checkpoint type '{path.suffix}'; "
                f"use one of {', '.join(CHECKPOINT_SUFFIXES)} or an open_clip tag"
            )
        return "file", str(path), str(path)
    if model_name not in open_clip.list_models():
        raise TemacliError(
            f"--clip-model {model_name}: not an open_clip model; run `python -c \"import open_clip; "
            "print(open_clip.list_models())\"` for the names"
        )
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise TemacliError(
            f"--pretrained {pretrained}: not a checkpoint file and not an open_clip tag of {model_name} "
            f"(tags: {', '.join(tags) or 'none'}); {_NO_WEIGHTS_FIX}"
        )
    from urllib.parse import urlparse

    host = "huggingface.co" if cfg.get("hf_hub") else (urlparse(cfg.get("url", "")).hostname or "huggingface.co")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if not offline and not _online(host):
        offline = True  # answer from the cache now rather than after ~45 s of retries
    if offline:
        _set_offline()
    try:
        target = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - any download failure is the same message to the user
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        why = "this machine is offline and they are not in the cache" if offline else f"download failed ({first})"
        raise TemacliError(
            f"weights '{pretrained}' for {model_name} cannot be had: {why}; {_NO_WEIGHTS_FIX}"
        ) from None
    if not target or not Path(target).is_file():
        raise TemacliError(f"weights '{pretrained}' for {model_name} cannot be had; {_NO_WEIGHTS_FIX}")
    return "tag", pretrained, str(target)


def load_clip(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    device: str = "cpu",
    random_weights: bool = False,
    seed: int = 0,
    cache_dir: str | None = None,
    precision: str = "auto",
) -> Clip:
    """Load a frozen open_clip model.

    ``random_weights=True`` (tests and timing only) builds the architecture with weights drawn from
    ``seed``; otherwise ``pretrained`` must name real weights, and failing to find them is an error.
    """
    import logging
    import warnings

    import torch

    from temacli.features.device import resolve_device, resolve_precision, torch_dtype

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    model_name = model_name.replace("/", "-")  # open_clip's spelling: ViT-B/32 -> ViT-B-32
    if random_weights and pretrained not in (None, "", RANDOM):
        raise TemacliError("--random-weights and --pretrained exclude each other; drop one of them")
    if not random_weights and not pretrained:
        raise TemacliError(f"no weights given; pass --pretrained TAG|FILE|local-dir:FOLDER ({_NO_WEIGHTS_FIX})")

    import open_clip

    if random_weights:
        if model_name not in open_clip.list_models():
            raise TemacliError(f"--clip-model {model_name}: not an open_clip model")
        source, arg, fp_path = RANDOM, None, None
    else:
        source, arg, fp_path = resolve_weights(model_name, pretrained, cache_dir)

    name_for_clip = arg if source == "local-dir" else model_name
    pretrained_for_clip = None if source in ("local-dir", RANDOM) else arg
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # open_clip logs "initialized randomly" etc. at WARNING
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
            warnings.simplefilter("ignore")
            if random_weights:
                torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name_for_clip, pretrained=pretrained_for_clip, device="cpu", cache_dir=cache_dir
            )
            tokenizer = open_clip.get_tokenizer(name_for_clip, cache_dir=cache_dir)
    except TemacliError:
        raise
    except Exception as e:  # noqa: BLE001 - a checkpoint that does not fit the architecture, ...
        raise TemacliError(
            f"cannot load {model_name} with weights '{pretrained or RANDOM}': {type(e).__name__}: "
            f"{str(e).splitlines()[0][:300] if str(e) else ''}; check that --clip-model matches the checkpoint"
        ) from None
    finally:
        root_logger.setLevel(level)
    model.eval().requires_grad_(False)
    if source == RANDOM:
        fp = _state_fingerprint(model)  # of the float32 weights, before any cast
        pretrained_name = RANDOM
    else:
        fp = artifacts.fingerprint(fp_path)
        pretrained_name = pretrained
    model.to(device=device, dtype=torch_dtype(precision))
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer([""]).to(device)).shape[-1])
    extra = {"precision": precision}
    if source == RANDOM:
        extra["seed"] = seed
    clip = Clip(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=device,
        model_name=model_name,
        pretrained=pretrained_name,
        source=source,
        weights_fingerprint=fp,
        dim=dim,
        extra=extra,
    )
    clip.trim_text = _check_trim(clip)
    return clip


def save_checkpoint(clip: Clip, path: str | Path) -> Path:
    """Save the model's weights (float32) as a checkpoint ``--pretrained PATH`` loads (.safetensors or .pt)."""
    import torch

    path = Path(path)
    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in clip.model.state_dict().items()
    }
    with artifacts.atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        elif path.suffix in (".pt", ".pth", ".bin"):
            torch.save(state, tmp)
        else:
            raise TemacliError(f"{path}: checkpoint must end in {', '.join(CHECKPOINT_SUFFIXES)}")
    return path


# ----------------------------------------------------------------------------- images
def image_path(value: str | None, images_dir: str | Path | None) -> tuple[Path | None, str | None]:
    """Where an item's image lies, or why it has none: (path, None) or (None, reason)."""
    if value is None or not str(value).strip():
        return None, "no_path"
    value = str(value).strip()
    if value.startswith(("http://", "https://")):
        return None, "url_not_fetched"
    p = Path(value).expanduser()
    if not p.is_absolute() and images_dir is not None:
        p = Path(images_dir).expanduser() / p
    return p, None


class _ImageFiles:
    """A torch-style dataset over image files: (row, tensor, reason) with reason None when decoded."""

    def __init__(self, rows: list[int], paths: list[str], preprocess: Callable, size: tuple[int, int, int]):
        self.rows, self.paths, self.preprocess, self.size = rows, paths, preprocess, size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        import torch
        from PIL import Image

        p = self.paths[k]
        try:
            with Image.open(p) as im:
                im.load()  # a truncated or corrupt file fails here, not later
                x = self.preprocess(im.convert("RGB"))
            return self.rows[k], x, None
        except FileNotFoundError:
            reason = "not_found"
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            reason = f"unreadable: {type(e).__name__}: {str(e)[:120]}"
        return self.rows[k], torch.zeros(self.size), reason


def _collate(batch):
    import torch

    rows = [b[0] for b in batch]
    return rows, torch.stack([b[1] for b in batch]), [b[2] for b in batch]


def _input_size(clip: Clip) -> tuple[int, int, int]:
    size = getattr(clip.model.visual, "image_size", 224)
    if isinstance(size, int):
        size = (size, size)
    return (3, int(size[0]), int(size[1]))


def default_workers() -> int:
    """Image decoding processes: one per spare core, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def encode_images(
    clip: Clip,
    values: list[str | None],
    out: np.ndarray,
    images_dir: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Embed each item's image into ``out`` (n, dim); returns has_image and (row, reason) per miss.

    A missing path, a URL, a missing file or an unreadable/truncated file gives a zero row and
    has_image False, never an exception.
    """
    import torch
    from torch.utils.data import DataLoader

    n = len(values)
    mask = np.zeros(n, dtype=bool)
    missing: list[tuple[int, str]] = []
    rows, paths = [], []
    for i, v in enumerate(values):
        p, reason = image_path(v, images_dir)
        if reason is not None:
            missing.append((i, reason))
        else:
            rows.append(i)
            paths.append(str(p))  # plain strings: a million Path objects would cost far more RAM
    if missing:
        out[[m[0] for m in missing]] = 0
        if progress:
            progress(len(missing))
    if not rows:
        return mask, missing
    ds = _ImageFiles(rows, paths, clip.preprocess, _input_size(clip))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=clip.device.startswith("cuda"),
        persistent_workers=False,
    )
    dtype = next(clip.model.parameters()).dtype
    with torch.inference_mode():
        for brows, x, reasons in loader:
            ok = [j for j, r in enumerate(reasons) if r is None]
            bad_rows = [brows[j] for j, r in enumerate(reasons) if r is not None]
            missing.extend((brows[j], r) for j, r in enumerate(reasons) if r is not None)
            if bad_rows:
                out[bad_rows] = 0
            if ok:
                x = x[ok].to(clip.device, dtype=dtype, non_blocking=True)
                z = torch.nn.functional.normalize(clip.model.encode_image(x).float(), dim=-1)
                ok_rows = np.asarray([brows[j] for j in ok])
                out[ok_rows] = z.cpu().numpy().astype(out.dtype, copy=False)
                mask[ok_rows] = True
            if progress:
                progress(len(brows))
    return mask, missing


# ----------------------------------------------------------------------------- texts
def _can_trim(model) -> bool:
    """True for open_clip's standard CLIP text tower: causal mask and EOT (argmax/eos) pooling.

    With a causal mask, the padding after a text's end token cannot change any earlier position, so
    running only up to the batch's longest text gives the same embeddings as the full 77-token
    context, at a fraction of the cost (item titles are ~25 tokens).
    """
    import open_clip

    return (
        type(model) is open_clip.CLIP
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
    )


def _encode_text_trimmed(model, tokens):
    """``model.encode_text(tokens)`` (open_clip CLIP) computed on the tokens up to the last non-pad column."""
    import torch
    from open_clip.transformer import text_global_pool

    nonzero = (tokens != 0).any(0).nonzero()
    L = int(nonzero[-1]) + 1 if len(nonzero) else 1
    tokens = tokens[:, :L]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast)
    x = x + model.positional_embedding[:L].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:L, :L])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return x


def _check_trim(clip: "Clip") -> bool:
    """Use the trimmed text path only if it reproduces ``encode_text`` on this model, here."""
    import torch

    if not _can_trim(clip.model):
        return False
    tokens = clip.tokenizer(["a red tea tin", "stainless steel paring knife, 3.5 inch, with a sheath"]).to(clip.device)
    try:
        with torch.inference_mode():
            full = torch.nn.functional.normalize(clip.model.encode_text(tokens).float(), dim=-1)
            short = torch.nn.functional.normalize(_encode_text_trimmed(clip.model, tokens).float(), dim=-1)
    except Exception:  # noqa: BLE001 - an open_clip whose internals moved: use its own encode_text
        return False
    tol = 1e-4 if next(clip.model.parameters()).dtype == torch.float32 else 2e-2
    return bool((full - short).abs().max() <= tol)


def encode_clip_texts(
    clip: Clip,
    texts: list[str],
    out: np.ndarray,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed texts with the CLIP text tower into ``out`` (n, dim); empty text -> zero row. Returns has_text.

    open_clip's tokenizer truncates at the model's context length (77 tokens for most CLIP models).
    """
    import torch

    clean = [(t or "").strip() for t in texts]
    mask = np.asarray([bool(t) for t in clean], dtype=bool)
    empty = np.flatnonzero(~mask)
    if len(empty):
        out[empty] = 0
        if progress:
            progress(len(empty))
    present = np.flatnonzero(mask)
    if clip.trim_text:  # batches of similar length: each runs only as far as its longest text
        present = present[np.argsort([-len(clean[i]) for i in present], kind="stable")]
    with torch.inference_mode():
        for start in range(0, len(present), batch_size):
            idx = present[start : start + batch_size]
            tokens = clip.tokenizer([clean[i] for i in idx]).to(clip.device)
            z = _encode_text_trimmed(clip.model, tokens) if clip.trim_text else clip.model.encode_text(tokens)
            z = torch.nn.functional.normalize(z.float(), dim=-1)
            out[idx] = z.cpu().numpy().astype(out.dtype, copy=False)
            if progress:
                progress(len(idx))
    return mask


# ----------------------------------------------------------------------------- the stage
MODALITY_CHOICES = ("both", "image", "text")


def compute_clip_features(
    items: str | Path,
    out: str | Path,
    model_name: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    images_dir: str | Path | None = None,
    image_column: str = "image",
    text_column: str | None = None,
    modality: str = "both",
    device: str = "cpu",
    batch_size: int = 64,
    text_batch_size: int = 256,
    workers: int | None = None,
    dtype: str = "float32",
    random_weights: bool = False,
    seed: int = 0,
    cache_dir: str | None = None,
    force: bool = False,
    progress: Progress = SILENT,
    clip: Clip | None = None,
    precision: str = "auto",
) -> dict:
    """``temacli features clip`` as a library call; returns a summary per modality written.

    ``clip`` may pass an already loaded model (benchmarks); otherwise it is loaded from
    ``model_name``/``pretrained`` (or random weights, for tests only).
    """
    from temacli.data.dataset import item_texts

    from temacli.features.device import check_device_name, check_precision_name

    # flags first, then the output folder, then the inputs: nothing is loaded or written for a bad call
    if modality not in MODALITY_CHOICES:
        raise TemacliError(f"--modality {modality}: choose one of {', '.join(MODALITY_CHOICES)}")
    check_range("--batch-size", batch_size, 1, store.MAX_BATCH)
    check_range("--text-batch-size", text_batch_size, 1, store.MAX_BATCH)
    if workers is not None:
        check_range("--workers", workers, 0, store.MAX_WORKERS)
    check_range("--seed", seed, 0, 2**32 - 1)
    if dtype not in store.DTYPES:
        raise TemacliError(f"--dtype {dtype}: choose one of {', '.join(store.DTYPES)}")
    check_device_name(device)
    check_precision_name(precision)
    if images_dir is not None and not Path(images_dir).expanduser().is_dir():
        raise TemacliError(f"--images-dir {images_dir}: folder not found; give the folder the image paths are relative to")
    store.check_features_out(out)
    inp = store.read_items(items)
    table = inp.table
    if modality in ("both", "image"):
        store.check_text_column(table, image_column, "--image-column", inp.path, required=image_column != "image")
    if modality in ("both", "text") and text_column is not None:
        store.check_text_column(table, text_column, "--text-column", inp.path)
    texts = item_texts(table, text_column) if modality in ("both", "text") else None
    if modality in ("both", "image"):
        values = table.column(image_column).to_pylist() if image_column in table.column_names else [None] * inp.n_items
    workers = default_workers() if workers is None else int(workers)
    progress = progress or SILENT
    if clip is None:
        progress.message(f"loading {model_name} ({'random weights, for tests only' if random_weights else pretrained})")
        clip = load_clip(model_name, pretrained, device, random_weights, seed, cache_dir, precision)
    out = Path(out)
    item_ids = table.column("item_id").to_pylist()
    summary: dict[str, Any] = {
        "stage": STAGE,
        "out": str(out),
        "model": clip.model_name,
        "pretrained": clip.pretrained,
        "weights_source": clip.source,
        "device": clip.device,
        "precision": clip.extra.get("precision"),
        "modalities": [],
    }
    extra = {"device": clip.device}


    def advance(desc: str, total: int):
        progress.start(total, desc)
        return lambda k: progress.advance(k)

    if modality in ("both", "image"):
        params = {
            **clip.params(),
            "modality": "image",
            "image_column": image_column,
            "images_dir": str(Path(images_dir).expanduser().resolve()) if images_dir else None,
            "dtype": dtype,
        }
        if not force and store.is_up_to_date(out, "image", STAGE, params, inp.fingerprint):
            summary["modalities"].append(store.skipped_summary(out, "image"))
        else:
            def fill_images(mm):
                mask, missing = encode_images(
                    clip, values, mm, images_dir, batch_size, workers, advance("images", inp.n_items)
                )
                no_column = image_column not in table.column_names
                recs = [
                    {"item": int(r), "item_id": item_ids[r], "reason": "no_image_column" if no_column else why,
                     "image": values[r]}
                    for r, why in sorted(missing)
                ]
                return mask, recs

            summary["modalities"].append(
                store.write_modality(out, "image", STAGE, params, inp, clip.dim, dtype, fill_images, **extra)
            )
            progress.finish()
    if modality in ("both", "text"):
        params = {**clip.params(), "modality": "text", "text_column": text_column, "dtype": dtype}
        if not force and store.is_up_to_date(out, "text", STAGE, params, inp.fingerprint):
            summary["modalities"].append(store.skipped_summary(out, "text"))
        else:
            def fill_texts(mm):
                mask = encode_clip_texts(clip, texts, mm, text_batch_size, advance("texts", inp.n_items))
                recs = [{"item": int(r), "item_id": item_ids[r], "reason": "no_text"} for r in np.flatnonzero(~mask)]
                return mask, recs

            summary["modalities"].append(
                store.write_modality(out, "text", STAGE, params, inp, clip.dim, dtype, fill_texts, **extra)
            )
            progress.finish()
    return summary
