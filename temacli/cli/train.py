"""``temacli train``: train TEMA-LLM (or a baseline) on a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from temacli.cli._console import console
from temacli.cli._json import print_json
from temacli.cli._options import (Amp, Arch, Attention, CrossWeights, Fusion, Log, Positions, Renamed, Softmax,
                                  TagWeights, TrainPositions, renamed_command, value)


def _floats(value: Optional[str], what: str, n: int) -> Optional[tuple]:
    if value is None:
        return None
    try:
        parts = tuple(float(p) for p in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{what}: give {n} numbers separated by commas") from None
    if len(parts) != n:
        raise typer.BadParameter(f"{what}: give {n} numbers separated by commas, got {len(parts)}")
    return parts


def train(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder from `temacli data split`."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (model.safetensors, config.json, metrics.jsonl, metrics.csv, manifest.json, checkpoints/); checked before any work."),
    arch: Arch = typer.Option(Arch.tema, "--arch", case_sensitive=False, help="Model architecture (a kind of the model registry): tema, or a baseline on the mixed sequence: sasrec, gru4rec. (Was --model, still accepted for this release.)"),
    features: Optional[Path] = typer.Option(None, "--features", help="Features folder (image.npy / text.npy) for the img and tex streams."),
    tags: Optional[Path] = typer.Option(None, "--tags", help="item_tags.parquet from `temacli tags match` for the tag stream (omit: no tags)."),
    streams: Optional[str] = typer.Option(None, "--streams", help="TEMA streams, e.g. id,img,tex,tag (default: id + every input given)."),
    tag_weights: TagWeights = typer.Option(TagWeights.file, "--tag-weights", case_sensitive=False, help="Tag vector per item (Table V): file (the weights of `tags match` as written), weighted (w / sum w), multihot (1/k each), onehot (top tag); each but file sums to 1 per item."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Model width q (TEMA Eq. 9; baselines' embedding size), 1..16384. Default 256. A model too large for the machine's memory is refused before it is built."),
    blocks: Optional[int] = typer.Option(None, "--blocks", help="Attention blocks per encoder, 1..64 (TEMA default 1, SASRec 2)."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads, 1..256 (default 1)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Dropout in [0, 1) (TEMA default 0.3 as in the paper, baselines 0.2)."),
    ffn: Optional[bool] = typer.Option(None, "--ffn/--no-ffn", help="TEMA: feed-forward sublayer after each attention (default off: Eq. 10 is attention only)."),
    alpha: Optional[str] = typer.Option(None, "--alpha", help="TEMA Eq. 13 weights of id,img,tex; tag gets 1 - sum. Default 0.4,0.2,0.2."),
    lambda1: Optional[float] = typer.Option(None, "--lambda1", help="TEMA Eq. 15-16 weight of the other domain's sequence (default 0.3)."),
    lambda2: Optional[float] = typer.Option(None, "--lambda2", help="TEMA Eq. 15-16 weight of the mixed sequence (default 0.1)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="TEMA softmax(cos / tau) of Eq. 12 (default 0.1; 1 = literal)."),
    fusion: Optional[Fusion] = typer.Option(None, "--fusion", case_sensitive=False, help="TEMA: which streams use Eq. 9's fused embedding: id (default), all, none."),
    attention: Optional[Attention] = typer.Option(None, "--attention", case_sensitive=False, help="TEMA: multi (S^X, S^Y, S^X+Y; default) or single (S^X+Y only: the Table IV ablation)."),
    positions: Optional[Positions] = typer.Option(None, "--positions", case_sensitive=False, help="TEMA: positions of S^X, S^Y counted within the domain (default) or in the mixed sequence."),
    cross_weights: Optional[CrossWeights] = typer.Option(None, "--cross-weights", case_sensitive=False, help="TEMA: symmetric (own domain 1, other lambda1, mixed lambda2; default) or literal (X 1, Y lambda1)."),
    epochs: int = typer.Option(100, "--epochs", help="Most epochs to run, 1..100000."),
    batch_size: int = typer.Option(256, "--batch-size", help="Sequences per batch (global, over all processes), 1..1000000."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate, in (0, 10]."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Adam weight decay, 0..1."),
    patience: int = typer.Option(10, "--patience", help="Stop after this many validations without improvement, 1..100000."),
    early_stop: str = typer.Option("loss", "--early-stop", metavar="loss|mrr|hr@K|ndcg@K", help="Model selection: loss (validation loss, the paper), or per domain: mrr (C2DSR), hr@K or ndcg@K with K an integer (e.g. hr@10, ndcg@5; LLMCDSR); each domain's best epoch is kept as model.<domain>.safetensors (for `eval --weights per-domain`)."),
    softmax: Softmax = typer.Option(Softmax.full, "--softmax", case_sensitive=False, help="full: over all the target domain's items; sampled: over --negatives shared negatives per batch."),
    negatives: int = typer.Option(1000, "--negatives", help="Negatives per domain and batch with --softmax sampled, 1..1000000."),
    train_positions: TrainPositions = typer.Option(TrainPositions.all, "--train-positions", case_sensitive=False, help="Targets per training sequence: all (every next item) or last."),
    max_len: int = typer.Option(50, "--max-len", help="Most recent items a sequence keeps, 1..10000."),
    seed: int = typer.Option(42, "--seed", help="Seed of initialisation, data order, dropout and sampled negatives."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Use only deterministic kernels (slower on CUDA)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."),
    amp: Amp = typer.Option(Amp.auto, "--amp", case_sensitive=False, help="bf16 autocast: auto (on for CUDA and for CPUs with AMX bf16 units, else off), bf16, off."),
    eval_every: int = typer.Option(1, "--eval-every", help="Validate every N epochs (and after the last), 1..100000."),
    eval_batch: int = typer.Option(512, "--eval-batch", help="Rows per validation batch, 1..1000000."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch, 0..4096 (0: torch's default)."),
    time_limit: float = typer.Option(0.0, "--time-limit", help="Minutes of training after which no new epoch starts; the best epoch so far is kept (0: no limit). Continue later with --resume."),
    log: Log = typer.Option(Log.none, "--log", case_sensitive=False, help="Extra run logs beside metrics.jsonl and metrics.csv: none, or tensorboard (event files in MODEL/tensorboard/; needs pip install 'temacli[tensorboard]')."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace a model already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (notes and epoch lines stay)."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
) -> None:
    """Train TEMA-LLM, one of its ablations, or a baseline; keep the best epoch.

    Example: temacli train --data runs/fk/data --features runs/fk/features --tags runs/fk/tags/item_tags.parquet --out runs/fk/model

    Example: temacli train --data runs/fk/data --arch sasrec --epochs 20 --out runs/fk/sasrec

    Example: temacli train --data runs/fk/data --attention single --out runs/fk/single   (Table IV ablation)

    Several GPUs: torchrun --nproc-per-node 4 -m temacli train --data runs/fk/data --out runs/fk/model
    """
    from temacli.training.loop import ModelInputs, TrainOptions, train as run

    from temacli.cli._console import RichProgress
    from temacli.model.registry import params_from_flags

    kind = arch.value
    flags = {
        "--dim": dim, "--blocks": blocks, "--heads": heads, "--dropout": dropout, "--ffn/--no-ffn": ffn,
        "--alpha": _floats(alpha, "--alpha", 3), "--lambda1": lambda1, "--lambda2": lambda2,
        "--temperature": temperature, "--fusion": value(fusion), "--attention": value(attention),
        "--positions": value(positions), "--cross-weights": value(cross_weights),
    }
    params = params_from_flags(kind, flags)  # the registry says which flags the kind takes
    stream_list = tuple(s.strip() for s in streams.split(",") if s.strip()) if streams else None
    opts = TrainOptions(
        model=kind, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
        early_stop=early_stop, seed=seed, deterministic=deterministic, device=device, amp=amp.value, softmax=softmax.value,
        negatives=negatives, train_positions=train_positions.value, max_len=max_len, eval_batch=eval_batch,
        eval_every=eval_every, threads=threads, time_limit=time_limit, log=log.value,
    )
    inputs = ModelInputs(
        features=str(features) if features else None, tags=str(tags) if tags else None,
        streams=stream_list, tag_weights=tag_weights.value, params=params,
    )
    summary = run(data, out, opts, inputs, resume=resume, force=force, progress=RichProgress(enabled=not quiet))
    if as_json:
        print_json(summary)
    elif summary:
        console.print(
            f"best epoch {summary['best_epoch']} of {summary['epochs_run']} "
            f"({_ending(summary)}); model in {out}",
            highlight=False, markup=False,
        )


def _ending(summary: dict) -> str:
    if summary.get("status") == "time limit":
        return "time limit reached; continue with --resume"
    return "stopped early" if summary["stopped_early"] else "all epochs"


def register(app: typer.Typer) -> None:
    # --model was the architecture until this release: now --arch (--model DIR is a model folder elsewhere)
    app.command("train", cls=renamed_command(Renamed("--model", "arch", short="-m")))(train)
