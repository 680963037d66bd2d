"""``temacli train`` as a library call: inputs checked, epochs run, the best model kept.

Each epoch: one pass over the training windows (every next-item target, see ``batches``), then the
validation loss (last position of each validation row) and the sampled-ranking metrics on the stored
candidates (``evaluation.protocols.sampled_ranks`` + ``metrics.summarize_by_domain``), one line in
``metrics.jsonl``, early stopping, and a checkpoint. The best model is ``model.safetensors``.

Early stopping (``--early-stop``):
  * ``loss`` (the paper): the epoch with the lowest validation loss; stop after ``patience``
    evaluations without improvement.
  * ``mrr`` (C2DSR practice): each domain's best validation MRR is tracked and its weights kept as
    ``model.<domain>.safetensors``; ``model.safetensors`` is the epoch with the best mean of the two
    domains' MRR; stop when neither domain improved for ``patience`` evaluations.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from temacli import artifacts
from temacli.errors import Interrupted, TemacliError
from temacli.model import folder as mfolder
from temacli.model.api import KINDS, Trained, build_model, resolve_device

EARLY_STOPS = ("loss", "mrr")
SOFTMAXES = ("full", "sampled")
TAG_WEIGHTS = ("file", "multihot", "onehot")
# options whose change makes --resume a different run
_RESUME_KEYS = ("model", "batch_size", "lr", "weight_decay", "seed", "softmax", "negatives", "train_positions", "max_len", "early_stop")


@dataclass
class TrainOptions:
    model: str = "tema"  # tema | sasrec | gru4rec
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    early_stop: str = "loss"
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with AMX, else off) | bf16 | off
    softmax: str = "full"
    negatives: int = 1000  # per domain and batch, with --softmax sampled
    train_positions: str = "all"  # all | last
    max_len: int = 50
    eval_batch: int = 512
    eval_every: int = 1
    threads: int = 0  # torch CPU threads (0 = torch's default)
    time_limit: float = 0.0  # minutes of training after which no new epoch starts (0 = no limit)

    def check(self) -> None:
        for name, value, allowed in (
            ("--model", self.model, KINDS),
            ("--early-stop", self.early_stop, EARLY_STOPS),
            ("--softmax", self.softmax, SOFTMAXES),
            ("--train-positions", self.train_positions, ("all", "last")),
            ("--amp", self.amp, ("auto", "bf16", "off")),
        ):
            if value not in allowed:
                raise TemacliError(f"{name} {value}: choose one of {', '.join(allowed)}")
        for name, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--max-len", self.max_len),
                            ("--patience", self.patience), ("--eval-every", self.eval_every), ("--eval-batch", self.eval_batch)):
            if value < 1:
                raise TemacliError(f"{name} must be at least 1, got {value}")
        if self.time_limit < 0 or math.isnan(self.time_limit):
            raise TemacliError(f"--time-limit must be 0 (no limit) or a positive number of minutes, got {self.time_limit}")
        if self.softmax == "sampled" and self.negatives < 1:
            raise TemacliError(f"--negatives must be at least 1 with --softmax sampled, got {self.negatives}")


@dataclass
class ModelInputs:
    """Where the frozen item-side inputs come from (TEMA only)."""

    features: str | None = None  # features folder
    tags: str | None = None  # item_tags.parquet (or its folder)
    streams: tuple | None = None  # None = id + every modality given
    tag_weights: str = "file"  # file | multihot | onehot  (Table V)
    params: dict = field(default_factory=dict)  # model hyper-parameters (TEMAConfig / BaselineConfig fields)


# ----------------------------------------------------------------------------- inputs
def resolve_inputs(ds, kind: str, inp: ModelInputs) -> tuple[dict, dict, dict]:
    """(model config dict, frozen arrays, input records for the manifest)."""
    records: dict = {"dataset": mfolder.input_record(ds.path, fingerprint=ds.fingerprint, stage=ds.manifest.get("stage"))}
    if kind != "tema":
        if inp.tags or inp.features or inp.streams:
            given = "--tags" if inp.tags else "--features" if inp.features else "--streams"
            raise TemacliError(f"{given} is a TEMA input; --model {kind} uses item IDs only (drop {given})")
        from temacli.model.baselines import BaselineConfig

        try:
            cfg = BaselineConfig(n_x=ds.n_x, n_y=ds.n_y, kind=kind, **inp.params)
        except (TypeError, ValueError) as e:
            raise TemacliError(f"--model {kind}: {e}") from None
        return {"kind": kind, "model": cfg.to_dict()}, {}, records

    from temacli.features.store import available, load_modality

    streams = inp.streams
    present = available(inp.features) if inp.features else []
    if inp.features and not Path(inp.features).is_dir():
        raise TemacliError(f"--features {inp.features}: folder not found; run `temacli features clip --out {inp.features}`")
    if streams is None:
        streams = ("id",) + tuple(s for s, f in (("img", "image"), ("tex", "text")) if f in present)
        if inp.tags:
            streams += ("tag",)
    streams = tuple(streams)
    if "id" not in streams or any(s not in ("id", "img", "tex", "tag") for s in streams):
        raise TemacliError(f"--streams {','.join(streams)}: use id plus any of img, tex, tag (e.g. id,img,tex,tag)")
    arrays: dict = {}
    params = dict(inp.params)
    for s, name in (("img", "image"), ("tex", "text")):
        if s not in streams:
            continue
        if not inp.features:
            raise TemacliError(
                f"--streams asks for {s} but no --features folder was given; pass --features DIR "
                f"(from `temacli features {'clip' if name == 'image' else 'text'}`) or drop {s}"
            )
        mod = load_modality(inp.features, name, ds)
        arrays[name] = np.asarray(mod.embeddings, dtype=np.float32)
        params[f"{name}_dim"] = mod.dim
        out = mod.manifest.get("outputs", {}).get(name, {})
        records[f"features_{name}"] = mfolder.input_record(
            Path(inp.features) / f"{name}.npy",
            fingerprint=out.get("fingerprint") or artifacts.fingerprint(Path(inp.features) / f"{name}.npy"),
            stage=mod.manifest.get("stage"),
            params=mod.manifest.get("params", {}),
        )
    tag_nnz = 0
    if "tag" in streams:
        if not inp.tags:
            raise TemacliError("--streams asks for tag but no --tags file was given; pass --tags item_tags.parquet or drop tag")
        from temacli.tags.store import load_item_tags

        it = load_item_tags(inp.tags, ds)
        item, tag, weight = _tag_weights(it.item, it.tag, it.weight, inp.tag_weights)
        arrays["tags"] = (item, tag, weight)
        params["n_tags"] = it.n_tags
        tag_nnz = int(item.size)
        path = Path(inp.tags) / "item_tags.parquet" if Path(inp.tags).is_dir() else Path(inp.tags)
        records["tags"] = mfolder.input_record(
            path,
            fingerprint=artifacts.fingerprint(path),
            stage=it.manifest.get("stage"),
            params=it.manifest.get("params", {}),
            weights=inp.tag_weights,
        )
    from temacli.model.tema import TEMAConfig

    try:
        cfg = TEMAConfig(n_x=ds.n_x, n_y=ds.n_y, streams=streams, **params)
    except (TypeError, ValueError) as e:
        raise TemacliError(f"--model tema: {e}") from None
    return {"kind": "tema", "model": cfg.to_dict(), "tag_nnz": tag_nnz}, arrays, records


def _tag_weights(item, tag, weight, how: str):
    """Table V's tag representations: as given by `tags match`, multi-hot, or one-hot (top tag)."""
    if how not in TAG_WEIGHTS:
        raise TemacliError(f"--tag-weights {how}: choose one of {', '.join(TAG_WEIGHTS)}")
    keep = weight > 0
    item, tag, weight = item[keep], tag[keep], weight[keep].astype(np.float32)
    if how == "multihot":
        weight = np.ones_like(weight)
    elif how == "onehot":
        order = np.lexsort((tag, -weight, item))  # per item: highest weight first, ties by tag index
        item, tag = item[order], tag[order]
        first = np.ones(item.size, dtype=bool)
        first[1:] = item[1:] != item[:-1]
        item, tag, weight = item[first], tag[first], np.ones(int(first.sum()), np.float32)
    return item, tag, weight


# ----------------------------------------------------------------------------- the run
def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    opts: TrainOptions,
    inputs: ModelInputs | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Train a model and write the model folder; returns the final summary (also in manifest.json)."""
    import torch

    from temacli.data.dataset import Dataset
    from temacli.training import distributed
    from temacli.training.batches import BatchStream, windows
    from temacli.model.folder import load_checkpoint, save_checkpoint, save_weights

    opts.check()
    inputs = inputs or ModelInputs()
    out = Path(out)
    dist = distributed.from_env()
    device = resolve_device(opts.device)
    if dist.enabled and device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(device)
    distributed.init(dist, device)
    if opts.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    use_amp = opts.amp == "bf16" or (opts.amp == "auto" and (device.startswith("cuda") or cpu_has_bf16_matmul()))

    ds = Dataset.open(data)
    train_split, valid_split = ds.split("train"), ds.split("valid")
    if len(train_split) == 0:
        raise TemacliError(f"{ds.path}: the training split is empty; rebuild it with `temacli data split`")
    cands = ds.candidates("valid")

    inputs.params = {**inputs.params, "max_len": opts.max_len}
    config, arrays, records = resolve_inputs(ds, opts.model, inputs)
    config.update(
        {
            "train": asdict(opts),
            "dataset_fingerprint": ds.fingerprint,
            "items_fingerprint": ds.items_fingerprint,
            "domains": list(ds.domains),
            "n_x": ds.n_x,
            "n_y": ds.n_y,
            "pad": ds.pad,
            "max_len": opts.max_len,
            "inputs": records,
        }
    )
    _prepare_out(out, config, resume, force, dist.main)

    torch.manual_seed(opts.seed)
    model = build_model(config, image=arrays.get("image"), text=arrays.get("text"), tags=arrays.get("tags")).to(device)
    config["n_parameters"] = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    gen = torch.Generator().manual_seed(opts.seed)
    tracker = _new_tracker(ds.domains)
    start_epoch = 0
    if resume:
        start_epoch, tracker = load_checkpoint(out / "checkpoints" / "last.pt", model, optimizer, gen, device)
        if dist.main:
            _truncate_metrics(out / "metrics.jsonl", start_epoch)
    if dist.main:
        artifacts.write_json(config, out / "config.json")
    ddp_model = distributed.wrap(model, dist, device)

    win = windows(train_split, opts.max_len, ds.pad)
    stream = BatchStream(
        win, ds.n_x, ds.n_y, opts.batch_size, gen, opts.train_positions,
        opts.negatives if opts.softmax == "sampled" else 0, dist.rank, dist.world,
    )
    valid_win = windows(valid_split, opts.max_len, ds.pad)
    scorer = Trained(model, config, device=device)
    display = _Display(progress and dist.main)
    summary: dict = {}
    epoch = start_epoch
    started = time.perf_counter()
    timed_out = False
    try:
        for epoch in range(start_epoch + 1, opts.epochs + 1):
            if tracker["stopped"]:
                break
            if opts.time_limit and epoch > start_epoch + 1:
                spent = distributed.broadcast(time.perf_counter() - started, dist)
                if spent >= opts.time_limit * 60:
                    timed_out = True
                    break
            model.train()
            t0 = time.perf_counter()
            total, count = 0.0, 0
            display.start(epoch, opts.epochs, len(stream))
            for batch in stream:
                seq, target = batch.seq.to(device), batch.target.to(device)
                negs = batch.negatives.to(device) if batch.negatives is not None else None
                with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_amp):
                    loss_sum, n = ddp_model(seq, target, negs)
                loss = loss_sum.float() / max(batch.n_targets_global, 1) * dist.world
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss_sum.detach())
                count += n
                display.step(total / max(count, 1))
            train_s = time.perf_counter() - t0
            total, count = distributed.all_reduce_sum([total, count], dist)
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "train_seconds": round(train_s, 3),
                "sequences_per_s": round(len(win) / train_s, 1) if train_s > 0 else None,
                "targets": int(count),
            }
            evaluate = epoch % opts.eval_every == 0 or epoch == opts.epochs
            if dist.main:
                if evaluate:
                    record.update(_validate(model, scorer, valid_win, valid_split, cands, ds, opts, device))
                    _track(tracker, record, opts, model, out, ds.domains, save_weights)
                record["seconds"] = round(time.perf_counter() - t0, 3)
                tracker["epoch"] = epoch
                _append_metrics(out / "metrics.jsonl", record)
                save_checkpoint(out / "checkpoints" / "last.pt", model, optimizer, gen, epoch, tracker)
                display.end(record, ds.domains)
            tracker = distributed.broadcast(tracker, dist)
            distributed.barrier(dist)
        summary = _finish(out, config, tracker, opts, records, ds, len(win), dist.main,
                          status="time limit" if timed_out else "done")
    except KeyboardInterrupt:
        display.close()
        if dist.main:
            _finish(out, config, tracker, opts, records, ds, len(win), True, status="interrupted")
        raise Interrupted(
            f"training stopped during epoch {epoch}; epochs up to {tracker['epoch']} are saved in {out}; "
            f"continue with --resume"
        ) from None
    finally:
        display.close()
        distributed.cleanup(dist)
    return summary


def cpu_has_bf16_matmul() -> bool:
    """True on CPUs with bf16 matrix units (Intel AMX), where bf16 autocast was measured faster.

    Elsewhere bf16 on CPU is emulated and slower, so ``--amp auto`` leaves it off.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def _validate(model, scorer, valid_win, valid_split, cands, ds, opts, device) -> dict:
    """Validation loss (last position of each row) and sampled-ranking metrics per domain."""
    import torch

    from temacli.evaluation.metrics import summarize_by_domain
    from temacli.evaluation.protocols import sampled_ranks
    from temacli.training.batches import BatchStream

    model.eval()
    gen = torch.Generator().manual_seed(opts.seed + 1)  # same validation negatives every epoch
    stream = BatchStream(
        valid_win, ds.n_x, ds.n_y, opts.eval_batch, gen, "last",
        opts.negatives if opts.softmax == "sampled" else 0, shuffle=False,
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for b in stream:
            negs = b.negatives.to(device) if b.negatives is not None else None
            loss_sum, n = model(b.seq.to(device), b.target.to(device), negs)
            total += float(loss_sum)
            count += n
        scorer.refresh()
        ranks = sampled_ranks(scorer, valid_split, cands, batch_size=opts.eval_batch)
    metrics = summarize_by_domain(ranks, valid_split.target_domain, ds.domains)
    return {"valid_loss": total / max(count, 1), "valid": metrics}


def _new_tracker(domains) -> dict:
    return {
        "epoch": 0,
        "best_epoch": 0,
        "best_loss": None,
        "best_mean_mrr": None,
        "best_mrr": {d: None for d in domains},
        "best_mrr_epoch": {d: 0 for d in domains},
        "bad": 0,
        "stopped": False,
    }


def _track(tracker: dict, record: dict, opts: TrainOptions, model, out: Path, domains, save_weights) -> None:
    """Update the early-stopping state; save the weights of every new best."""
    epoch = record["epoch"]
    improved = False
    if opts.early_stop == "loss":
        loss = record["valid_loss"]
        if tracker["best_loss"] is None or loss < tracker["best_loss"]:
            tracker["best_loss"], tracker["best_epoch"] = loss, epoch
            save_weights(model, out / "model.safetensors")
            improved = True
    else:
        for d in domains:
            m = record["valid"][d]["MRR"]
            if not math.isnan(m) and (tracker["best_mrr"][d] is None or m > tracker["best_mrr"][d]):
                tracker["best_mrr"][d], tracker["best_mrr_epoch"][d] = m, epoch
                save_weights(model, out / f"model.{d}.safetensors")
                improved = True
        mean = float(np.nanmean([record["valid"][d]["MRR"] for d in domains]))
        if tracker["best_mean_mrr"] is None or mean > tracker["best_mean_mrr"]:
            tracker["best_mean_mrr"], tracker["best_epoch"] = mean, epoch
            save_weights(model, out / "model.safetensors")
    tracker["bad"] = 0 if improved else tracker["bad"] + 1
    record["improved"] = improved
    if tracker["bad"] >= opts.patience:
        tracker["stopped"] = True


def _prepare_out(out: Path, config: dict, resume: bool, force: bool, main: bool) -> None:
    existing = out / "config.json"
    if resume:
        if not existing.is_file():
            raise TemacliError(f"--resume: {out} holds no training run (no config.json); start without --resume")
        old = artifacts.read_json(existing, what="model config")
        for key in ("kind", "model", "dataset_fingerprint", "inputs"):
            if _comparable(old.get(key)) != _comparable(config.get(key)):
                raise TemacliError(f"--resume: {out} was trained with a different {key}; resume with the same options or use a new --out")
        for key in _RESUME_KEYS:
            if old.get("train", {}).get(key) != config["train"].get(key):
                raise TemacliError(
                    f"--resume: {out} was trained with {key}={old['train'].get(key)!r}, now {config['train'].get(key)!r}; "
                    "resume with the same options or use a new --out"
                )
        return
    if existing.is_file() and not force:
        raise TemacliError(f"{out} already holds a trained model; pass --resume to continue it or --force to start over")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "checkpoints/last.pt"):
            (out / name).unlink(missing_ok=True)
        for p in out.glob("model*.safetensors"):
            p.unlink()


def _comparable(v):
    return json.loads(json.dumps(v, default=str))


def _append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, default=artifacts._json_default) + "\n")


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Keep the lines of epochs <= ``epoch`` (those the checkpoint covers)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epoch]
    with artifacts.atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in lines))


def _finish(out: Path, config: dict, tracker: dict, opts: TrainOptions, records: dict, ds, n_rows: int, main: bool, status: str) -> dict:
    summary = {
        "status": status,
        "epochs_run": tracker["epoch"],
        "stopped_early": bool(tracker["stopped"]),
        "best_epoch": tracker["best_epoch"],
        "early_stop": opts.early_stop,
        "best_valid_loss": tracker["best_loss"],
        "best_mean_mrr": tracker["best_mean_mrr"],
        "best_mrr": tracker["best_mrr"],
        "best_mrr_epoch": tracker["best_mrr_epoch"],
    }
    if not main:
        return summary
    config["best"] = summary
    mfolder.write_config(out, config)
    counts = {"train_rows": n_rows, "n_parameters": config.get("n_parameters"), "epochs_run": tracker["epoch"]}
    mfolder.write_folder_manifest(out, config, records, summary, counts)
    return summary


class _Display:
    """A rich progress bar per epoch and one line of metrics after it (stderr)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None
        self.task = None

    def start(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self.progress is None:
            self.console = Console(stderr=True)
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("loss {task.fields[loss]}"), console=self.console, transient=True,
            )
            self.progress.start()
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, loss="-")

    def step(self, loss: float) -> None:
        if self.enabled and self.task is not None:
            self.progress.update(self.task, advance=1, loss=f"{loss:.4f}")

    def end(self, record: dict, domains) -> None:
        if not self.enabled:
            return
        self.progress.remove_task(self.task)
        parts = [f"epoch {record['epoch']}", f"train loss {record['train_loss']:.4f}"]
        if "valid_loss" in record:
            parts.append(f"valid loss {record['valid_loss']:.4f}")
            for d in domains:
                v = record["valid"][d]
                parts.append(f"{d} MRR {v['MRR']:.4f} NDCG@5 {v['NDCG@5']:.4f} NDCG@10 {v['NDCG@10']:.4f}")
            if record.get("improved"):
                parts.append("*")
        parts.append(f"{record['seconds']:.1f}s")
        self.console.print("  ".join(parts), highlight=False, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
