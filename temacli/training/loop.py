"""``temacli train`` as a library call: inputs checked, epochs run, the best model kept.

Each epoch: one pass over the training windows (every next-item target, see ``batches``), each batch
through the one training step (``step.train_step``), then the validation loss (last position of each
validation row) and the sampled-ranking metrics on the stored candidates, one line in
``metrics.jsonl`` (and ``metrics.csv``), early stopping, and a checkpoint. The model folder is written
and read through :mod:`temacli.model.folder`.

Early stopping (``--early-stop``, :class:`EarlyStopping`):
  * ``loss`` (the paper): the epoch with the lowest validation loss is ``model.safetensors``; stop
    after ``patience`` validations without improvement.
  * ``mrr``, ``hr@K``, ``ndcg@K`` (C2DSR's and LLMCDSR's practice): each domain's best validation
    value of the metric is tracked and its weights kept as ``model.<domain>.safetensors``;
    ``model.safetensors`` is the epoch with the best mean over the two domains; stop when neither
    domain improved for ``patience`` validations. The lowest-validation-loss epoch is kept beside them as
    ``model.valid-loss.safetensors``, so one run also gives the paper's selection (``eval --weights
    model.valid-loss.safetensors``); ``best.loss_patience_exhausted`` in config.json says whether the loss
    had stopped improving for ``patience`` validations when the run ended.
A non-finite value is never an improvement; a non-finite training loss stops the run (exit 2).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from temacli import artifacts
from temacli.errors import Interrupted, TemacliError
from temacli.model import folder as mfolder
from temacli.model import registry
from temacli.model.api import Trained, build_model, resolve_device
from temacli.progress import SILENT, Progress

EARLY_STOP_HELP = "loss | mrr | hr@K | ndcg@K"
SOFTMAXES = ("full", "sampled")
LOGS = ("none", "tensorboard")
TAG_WEIGHTS = ("file", "weighted", "multihot", "onehot")
MAX_K = 1000
LOSS_WEIGHTS = "model.valid-loss.safetensors"  # the lowest validation loss, kept beside a per-domain selection
# options whose change makes --resume a different run
_RESUME_KEYS = ("model", "batch_size", "lr", "weight_decay", "seed", "softmax", "negatives", "train_positions", "max_len", "early_stop")
# allowed ranges of the numeric options (name shown, low, high); the CLI's --help shows the same
RANGES: dict[str, tuple[str, float, float]] = {
    "epochs": ("--epochs", 1, 100_000),
    "batch_size": ("--batch-size", 1, 1_000_000),
    "eval_batch": ("--eval-batch", 1, 1_000_000),
    "max_len": ("--max-len", 1, 10_000),
    "patience": ("--patience", 1, 100_000),
    "eval_every": ("--eval-every", 1, 100_000),
    "threads": ("--threads", 0, 4096),
}
LR_RANGE = (0.0, 10.0)  # exclusive low, inclusive high
DIM_RANGE = (1, 16_384)
MODEL_RANGES = {"n_blocks": ("--blocks", 1, 64), "n_heads": ("--heads", 1, 256)}


def parse_early_stop(value: str) -> str:
    """``loss``, ``mrr``, ``hr@K`` or ``ndcg@K`` (K in 1..1000), as the metric key of the validation
    record: ``loss``, ``MRR``, ``HR@10``, ``NDCG@5``; anything else is one line."""
    v = str(value).strip().lower()
    if v == "loss":
        return "loss"
    if v == "mrr":
        return "MRR"
    m = re.fullmatch(r"(hr|ndcg)@(\d+)", v)
    if m and 1 <= int(m[2]) <= MAX_K:
        return f"{m[1].upper()}@{int(m[2])}"
    raise TemacliError(f"--early-stop {value}: choose {EARLY_STOP_HELP} (K in 1..{MAX_K}), e.g. --early-stop hr@10")


@dataclass
class TrainOptions:
    model: str = "tema"  # a kind of temacli.model.registry: tema | sasrec | gru4rec
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    early_stop: str = "loss"  # loss | mrr | hr@K | ndcg@K
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
    log: str = "none"  # none | tensorboard: event files in MODEL/tensorboard/ beside metrics.jsonl and .csv

    def check(self) -> None:
        """Every option in its range, before any file is written; the message gives the range."""
        registry.get(self.model)
        for name, value, allowed in (
            ("--softmax", self.softmax, SOFTMAXES),
            ("--train-positions", self.train_positions, ("all", "last")),
            ("--amp", self.amp, ("auto", "bf16", "off")),
            ("--log", self.log, LOGS),
        ):
            if value not in allowed:
                raise TemacliError(f"{name} {value}: choose one of {', '.join(allowed)}")
        if self.log == "tensorboard" and not tensorboard_available():
            raise TemacliError(
                "--log tensorboard needs the tensorboard package, which is not installed; "
                "install it with pip install 'temacli[tensorboard]' or drop --log"
            )
        parse_early_stop(self.early_stop)
        for key, (flag, lo, hi) in RANGES.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise TemacliError(f"{flag} {value}: must be an integer in {lo}..{hi}")
        lo, hi = LR_RANGE
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and lo < self.lr <= hi):
            raise TemacliError(f"--lr {self.lr}: must be a number in ({lo:g}, {hi:g}], e.g. 0.001")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= 1):
            raise TemacliError(f"--weight-decay {self.weight_decay}: must be a number in 0..1")
        if self.time_limit < 0 or math.isnan(self.time_limit):
            raise TemacliError(f"--time-limit must be 0 (no limit) or a positive number of minutes, got {self.time_limit}")
        if self.softmax == "sampled" and not 1 <= self.negatives <= 1_000_000:
            raise TemacliError(f"--negatives {self.negatives}: must be an integer in 1..1000000 with --softmax sampled")

    @property
    def selection(self) -> str:
        return parse_early_stop(self.early_stop)


@dataclass
class ModelInputs:
    """Where the frozen item-side inputs come from (models whose registry entry accepts them)."""

    features: str | None = None  # features folder
    tags: str | None = None  # item_tags.parquet (or its folder)
    streams: tuple | None = None  # None = id + every modality given
    tag_weights: str = "file"  # file | weighted | multihot | onehot  (Table V)
    params: dict = field(default_factory=dict)  # model hyper-parameters (the registry's config fields)


def check_model_params(spec, params: dict) -> None:
    """Width, blocks, heads and dropout in range, before anything is built."""
    width = params.get(spec.width)
    if width is not None:
        lo, hi = DIM_RANGE
        if isinstance(width, bool) or not isinstance(width, int) or not lo <= width <= hi:
            raise TemacliError(f"--dim {width}: must be an integer in {lo}..{hi}")
    for key, (flag, lo, hi) in MODEL_RANGES.items():
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise TemacliError(f"{flag} {v}: must be an integer in {lo}..{hi}")
    d = params.get("dropout")
    if d is not None and not (isinstance(d, (int, float)) and 0 <= d < 1):
        raise TemacliError(f"--dropout {d}: must be a number in [0, 1)")


# ----------------------------------------------------------------------------- inputs
def resolve_inputs(ds, kind: str, inp: ModelInputs) -> tuple[dict, dict, dict]:
    """(model config dict, frozen arrays, input records for the manifest)."""
    spec = registry.get(kind)
    check_model_params(spec, inp.params)
    records: dict = {"dataset": mfolder.input_record(ds.path, fingerprint=ds.fingerprint, stage=ds.manifest.get("stage"))}
    given = [flag for flag, v, need in (("--tags", inp.tags, "tags"), ("--features", inp.features, "image"),
                                        ("--streams", inp.streams, "tags")) if v and not spec.accepts(need)]
    if given:
        raise TemacliError(f"{given[0]} is a TEMA input; --arch {kind} uses item IDs only (drop {given[0]})")
    if spec.inputs == ("id",):
        cfg = spec.make_config(ds.n_x, ds.n_y, **inp.params)
        return {"kind": spec.name, "model": cfg.to_dict()}, {}, records

    from temacli.features.store import available, load_modality

    streams = inp.streams
    if inp.features and not Path(inp.features).is_dir():
        raise TemacliError(f"--features {inp.features}: folder not found; run `temacli features clip --out {inp.features}`")
    present = available(inp.features) if inp.features else []
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
        mod = load_modality(inp.features, name, ds)  # checked there: floating point, finite, fingerprints
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
        path = Path(inp.tags) / "item_tags.parquet" if Path(inp.tags).is_dir() else Path(inp.tags)
        item, tag, weight = tag_representation(it.item, it.tag, it.weight, inp.tag_weights, path)
        arrays["tags"] = (item, tag, weight)
        params["n_tags"] = it.n_tags
        tag_nnz = int(item.size)
        records["tags"] = mfolder.input_record(
            path,
            fingerprint=artifacts.fingerprint(path),
            stage=it.manifest.get("stage"),
            params=it.manifest.get("params", {}),
            weights=inp.tag_weights,
        )
    cfg = spec.make_config(ds.n_x, ds.n_y, streams=streams, **params)
    return {"kind": spec.name, "model": cfg.to_dict(), "tag_nnz": tag_nnz}, arrays, records


def tag_representation(item, tag, weight, how: str, path: Path | str = "item tags"):
    """Table V's tag vectors through the one implementation (:func:`temacli.tags.represent.represent`):
    ``file`` keeps the file's weights as ``tags match`` wrote them (checked the same way), ``weighted``,
    ``multihot`` (1/k) and ``onehot`` (the top tag) give each tagged item weights summing to 1."""
    from temacli.tags.represent import represent

    if how not in TAG_WEIGHTS:
        raise TemacliError(f"--tag-weights {how}: choose one of {', '.join(TAG_WEIGHTS)}")
    try:
        rep = represent(item, tag, weight, "weighted" if how == "file" else how)
    except TemacliError as e:
        raise TemacliError(f"{path}: {e}") from None
    if how != "file":
        return rep
    order = np.lexsort((np.asarray(tag), -np.asarray(weight, np.float64), np.asarray(item)))
    return (np.asarray(item, np.int64)[order], np.asarray(tag, np.int64)[order],
            np.asarray(weight, np.float32)[order])


# ----------------------------------------------------------------------------- early stopping
@dataclass
class EarlyStopping:
    """Which epoch is best, per domain and overall, and when to stop (saved in every checkpoint)."""

    metric: str  # "loss" or a validation metric key: "MRR", "HR@10", "NDCG@5", ...
    patience: int
    domains: tuple
    epoch: int = 0  # last epoch finished
    best_epoch: int = 0  # the epoch of model.safetensors
    best_loss: float | None = None
    best_loss_epoch: int = 0  # the epoch of the lowest validation loss (model.valid-loss.safetensors when per-domain)
    best_mean: float | None = None  # best mean over the domains of ``metric``
    best: dict = field(default_factory=dict)  # domain -> best value of ``metric``
    best_epoch_by_domain: dict = field(default_factory=dict)  # domain -> epoch of model.<domain>.safetensors
    bad: int = 0  # validations in a row without improvement
    stopped: bool = False

    def __post_init__(self):
        self.domains = tuple(self.domains)
        for d in self.domains:
            self.best.setdefault(d, None)
            self.best_epoch_by_domain.setdefault(d, 0)

    @property
    def per_domain(self) -> bool:
        return self.metric != "loss"

    def update(self, epoch: int, valid_loss: float, valid: dict) -> tuple[bool, list[str]]:
        """Account for one validation; returns (improved, weight files to save now)."""
        saves: list[str] = []
        improved = False
        if not self.per_domain:
            if _finite(valid_loss) and (self.best_loss is None or valid_loss < self.best_loss):
                self.best_loss, self.best_epoch = float(valid_loss), epoch
                self.best_loss_epoch = epoch
                saves.append(mfolder.DEFAULT_WEIGHTS)
                improved = True
        else:
            if _finite(valid_loss) and (self.best_loss is None or valid_loss < self.best_loss):
                self.best_loss, self.best_loss_epoch = float(valid_loss), epoch
                saves.append(LOSS_WEIGHTS)
            values = [valid[d][self.metric] for d in self.domains]
            for d, v in zip(self.domains, values):
                if _finite(v) and (self.best[d] is None or v > self.best[d]):
                    self.best[d], self.best_epoch_by_domain[d] = float(v), epoch
                    saves.append(f"model.{d}.safetensors")
                    improved = True
            finite = [v for v in values if _finite(v)]
            mean = float(np.mean(finite)) if finite else float("nan")
            if _finite(mean) and (self.best_mean is None or mean > self.best_mean):
                self.best_mean, self.best_epoch = mean, epoch
                saves.append(mfolder.DEFAULT_WEIGHTS)
        self.bad = 0 if improved else self.bad + 1
        if self.bad >= self.patience:
            self.stopped = True
        return improved, saves

    def to_dict(self) -> dict:
        d = asdict(self)
        d["domains"] = list(self.domains)
        return d

    @classmethod
    def from_dict(cls, d: dict, metric: str, patience: int, domains) -> "EarlyStopping":
        """From a checkpoint (also those of earlier versions, which kept a dict of MRR fields)."""
        best = d.get("best", d.get("best_mrr")) or {}
        by_dom = d.get("best_epoch_by_domain", d.get("best_mrr_epoch")) or {}
        return cls(metric=metric, patience=patience, domains=tuple(domains), epoch=int(d.get("epoch", 0)),
                   best_epoch=int(d.get("best_epoch", 0)), best_loss=d.get("best_loss"),
                   best_loss_epoch=int(d.get("best_loss_epoch", 0)),
                   best_mean=d.get("best_mean", d.get("best_mean_mrr")), best=dict(best),
                   best_epoch_by_domain=dict(by_dom), bad=int(d.get("bad", 0)), stopped=bool(d.get("stopped", False)))


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


# ----------------------------------------------------------------------------- the run
def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    opts: TrainOptions,
    inputs: ModelInputs | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Progress = SILENT,
) -> dict:
    """Train a model and write the model folder; returns the final summary (also in manifest.json).

    ``progress`` (:class:`temacli.progress.Progress`) gets a phase per epoch (batches) and per
    validation (rows), and a message per epoch; ``SILENT`` by default.
    """
    import torch

    from temacli.data.dataset import Dataset
    from temacli.training import distributed
    from temacli.training.batches import BatchStream, windows
    from temacli.training.sizing import estimate_memory

    if isinstance(progress, bool) or progress is None:  # progress=False/True of earlier versions: silent
        progress = SILENT
    opts.check()
    metric = opts.selection
    inputs = inputs or ModelInputs()
    out = Path(out)
    artifacts.check_output(out, "dir", "--out")
    dist = distributed.from_env()
    device = resolve_device(opts.device)
    ds = Dataset.open(data)
    train_split, valid_split = ds.split("train"), ds.split("valid")
    if len(train_split) == 0:
        raise TemacliError(f"{ds.path}: the training split is empty; rebuild it with `temacli data split`")
    cands = ds.candidates("valid")

    inputs.params = {**inputs.params, "max_len": opts.max_len}
    config, arrays, records = resolve_inputs(ds, opts.model, inputs)
    spec = registry.get(config["kind"])
    cfg = spec.config_from_dict(config["model"])
    _check_memory(estimate_memory(spec, cfg, config, opts, ds.n_x, ds.n_y, config.get("tag_nnz", 0)), spec, cfg,
                  device, opts)
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
            "selection_metric": metric,
            "inputs": records,
        }
    )
    resume = _prepare_out(out, config, resume, force, dist.main, progress)

    # from here on the run changes the process and the folder
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

    torch.manual_seed(opts.seed)
    model = build_model(config, image=arrays.get("image"), text=arrays.get("text"), tags=arrays.get("tags")).to(device)
    config["n_parameters"] = sum(p.numel() for p in model.parameters())
    optimizer = _adam(model, opts)
    from temacli.model.layers import runtime_info

    # which kernels and precision actually run (recorded, not compared by --resume)
    config["runtime"] = {**runtime_info(model, device, use_amp),
                         "optimizer": "Adam (fused)" if optimizer.defaults.get("fused") else "Adam"}
    gen = torch.Generator().manual_seed(opts.seed)
    tracker = EarlyStopping(metric, opts.patience, ds.domains)
    start_epoch = 0
    if resume:
        start_epoch, state = mfolder.load_checkpoint(out / mfolder.CHECKPOINT, model, optimizer, gen, device)
        tracker = EarlyStopping.from_dict(state, metric, opts.patience, ds.domains)
        if dist.main:
            _truncate_metrics(out, start_epoch, progress)
    if dist.main:
        mfolder.write_config(out, config)
    ddp_model = distributed.wrap(model, dist, device)

    win = windows(train_split, opts.max_len, ds.pad)
    stream = BatchStream(
        win, ds.n_x, ds.n_y, opts.batch_size, gen, opts.train_positions,
        opts.negatives if opts.softmax == "sampled" else 0, dist.rank, dist.world,
    )
    valid_win = windows(valid_split, opts.max_len, ds.pad)
    scorer = Trained(model, config, device=device)
    shown = progress if dist.main else SILENT
    board = _Board(out, opts.log == "tensorboard" and dist.main)
    width = int(getattr(cfg, spec.width))
    clock = _RunClock(opts.epochs - start_epoch)
    epoch = start_epoch
    started = time.perf_counter()
    timed_out = False
    try:
        for epoch in range(start_epoch + 1, opts.epochs + 1):
            if tracker.stopped:
                break
            if opts.time_limit and epoch > start_epoch + 1:
                spent = distributed.broadcast(time.perf_counter() - started, dist)
                if spent >= opts.time_limit * 60:
                    timed_out = True
                    break
            t0 = time.perf_counter()
            total, count = _train_epoch(ddp_model, model, stream, optimizer, device, use_amp, dist.world, epoch,
                                        opts, shown, clock, width, first=epoch == start_epoch + 1)
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
                    record.update(_validate(model, scorer, valid_win, valid_split, cands, ds, opts, device, metric,
                                            epoch, shown))
                    improved, saves = tracker.update(epoch, record["valid_loss"], record["valid"])
                    record["improved"] = improved
                    for name in saves:
                        mfolder.save_weights(model, out / name)
                record["seconds"] = round(time.perf_counter() - t0, 3)
                tracker.epoch = epoch
                _append_metrics(out, record)
                board.write(record)
                mfolder.save_checkpoint(out / mfolder.CHECKPOINT, model, optimizer, gen, epoch, tracker.to_dict())
                clock.done(record["seconds"])
                shown.message(_epoch_line(record, ds.domains, opts, metric, clock))
            tracker = EarlyStopping.from_dict(distributed.broadcast(tracker.to_dict(), dist), metric, opts.patience,
                                              ds.domains)
            distributed.barrier(dist)
        summary = _finish(out, config, tracker, records, len(win), dist.main,
                          status="time limit" if timed_out else "done")
        distributed.barrier(dist)  # no rank tears the group down while rank 0 still writes the final files
    except (_NonFinite, KeyboardInterrupt) as e:
        # the epochs finished so far stay a valid model folder; then one line says what happened
        shown.finish()
        nonfinite = isinstance(e, _NonFinite)
        if dist.main:
            _finish(out, config, tracker, records, len(win), True,
                    status="non-finite loss" if nonfinite else "interrupted")
        if nonfinite:
            raise TemacliError(
                f"training stopped: the training loss is {e.value} at epoch {e.epoch}, batch {e.batch}; epochs up "
                f"to {tracker.epoch} are kept in {out}. Lower --lr (now {opts.lr:g}) or check the inputs (features, tags)"
            ) from None
        raise Interrupted(
            f"training stopped during epoch {epoch}; epochs up to {tracker.epoch} are saved in {out}; "
            f"continue with --resume"
        ) from None
    finally:
        shown.finish()
        board.close()
        distributed.cleanup(dist)
    return summary


class _NonFinite(Exception):
    def __init__(self, value: float, epoch: int, batch: int):
        self.value, self.epoch, self.batch = value, epoch, batch


class _RunClock:
    """Seconds per epoch of this invocation, for the whole run's ETA."""

    def __init__(self, epochs_left: int):
        self.left = epochs_left
        self.spent: list[float] = []

    def done(self, seconds: float) -> None:
        self.spent.append(float(seconds))
        self.left -= 1

    def eta(self) -> float | None:
        return float(np.mean(self.spent)) * max(self.left, 0) if self.spent else None


def _train_epoch(ddp_model, model, stream, optimizer, device, use_amp, world, epoch, opts, progress, clock, width,
                 first: bool) -> tuple[float, int]:
    from temacli.training import sizing
    from temacli.training.step import NonFiniteLoss, train_step

    model.train()
    eta = clock.eta()
    desc = f"epoch {epoch}/{opts.epochs}" + (f" (run ETA {sizing.human_seconds(eta)})" if eta is not None else "")
    progress.start(len(stream), desc, unit="batches")
    probe = min(5, len(stream))
    check_cpu = first and device == "cpu" and sizing.paper_sized(opts, width)
    t0 = time.perf_counter()
    total, count = 0.0, 0
    for b, batch in enumerate(stream, start=1):
        try:
            loss_sum, n = train_step(ddp_model, batch, optimizer, device=device, amp=use_amp, world=world)
        except NonFiniteLoss as e:
            raise _NonFinite(e.value, epoch, b) from None
        total += loss_sum
        count += n
        progress.advance(1)
        if check_cpu and b == probe:
            progress.message(sizing.cpu_estimate_line((time.perf_counter() - t0) / probe, len(stream), opts.epochs, probe))
    progress.finish()
    return total, count


def _adam(model, opts: TrainOptions):
    """Adam with torch's fused kernel where it exists (measured 0.07 vs 0.47 CPU s per TEMA step at paper
    sizes), else the default implementation; the update rule is the same."""
    import torch

    try:
        return torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)


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


def _check_memory(est, spec, cfg, device: str, opts) -> None:
    from temacli.training.sizing import available_bytes, human_bytes

    free = available_bytes(device)
    if free is not None and est.total > free:
        raise TemacliError(
            f"the model is too large for this machine: about {human_bytes(est.total)} needed "
            f"({est.parameters:,} parameters at --dim {getattr(cfg, spec.width)}, batch {opts.batch_size}), "
            f"{human_bytes(free)} free on {device}; lower --dim, --batch-size or --max-len (or use --softmax sampled)"
        )


def validation_cutoffs(metric: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """NDCG and HR cutoffs of the validation record: 5, 10 and 1, 5, 10, plus the selection's K."""
    ndcg, hr = {5, 10}, {1, 5, 10}
    m = re.fullmatch(r"(HR|NDCG)@(\d+)", metric)
    if m:
        (hr if m[1] == "HR" else ndcg).add(int(m[2]))
    return tuple(sorted(ndcg)), tuple(sorted(hr))


def _validate(model, scorer, valid_win, valid_split, cands, ds, opts, device, metric, epoch, progress) -> dict:
    """Validation loss (last position of each row) and sampled-ranking metrics per domain."""
    import torch

    from temacli.evaluation.metrics import summarize
    from temacli.evaluation.protocols import sampled_rank_stats
    from temacli.training.batches import BatchStream

    model.eval()
    gen = torch.Generator().manual_seed(opts.seed + 1)  # same validation negatives every epoch
    stream = BatchStream(
        valid_win, ds.n_x, ds.n_y, opts.eval_batch, gen, "last",
        opts.negatives if opts.softmax == "sampled" else 0, shuffle=False,
    )
    progress.start(2 * len(valid_split), f"validate epoch {epoch}", unit="rows")
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for b in stream:
                negs = b.negatives.to(device) if b.negatives is not None else None
                loss_sum, n = model(b.seq.to(device), b.target.to(device), negs)
                total += float(loss_sum)
                count += n
                progress.advance(int(b.seq.shape[0]))
            scorer.refresh()
            ranks = sampled_rank_stats(scorer, valid_split, cands, batch_size=opts.eval_batch, progress=progress).ranks
    finally:
        progress.finish()
    ndcg_ks, hr_ks = validation_cutoffs(metric)
    dom = np.asarray(valid_split.target_domain)
    metrics = {name: summarize(ranks[dom == d], ndcg_ks, hr_ks) for d, name in enumerate(ds.domains)}
    metrics["all"] = summarize(ranks, ndcg_ks, hr_ks)
    return {"valid_loss": total / max(count, 1), "valid": metrics}


def _epoch_line(record: dict, domains, opts, metric: str, clock: _RunClock) -> str:
    from temacli.training.sizing import human_seconds

    parts = [f"epoch {record['epoch']}/{opts.epochs}", f"train loss {record['train_loss']:.4f}"]
    if "valid_loss" in record:
        parts.append(f"valid loss {record['valid_loss']:.4f}")
        shown = ["MRR", "NDCG@10"] + ([metric] if metric not in ("loss", "MRR", "NDCG@10") else [])
        for d in domains:
            v = record["valid"][d]
            parts.append(f"{d} " + " ".join(f"{k} {v[k]:.4f}" for k in shown))
        if record.get("improved"):
            parts.append("*")
    parts.append(f"{record['seconds']:.1f}s")
    eta = clock.eta()
    if eta:
        parts.append(f"run ETA {human_seconds(eta)}")
    return "  ".join(parts)


# ----------------------------------------------------------------------------- the folder
def _prepare_out(out: Path, config: dict, resume: bool, force: bool, main: bool, progress: Progress) -> bool:
    """Check the folder against ``resume``/``force``; returns whether the run resumes.

    A folder with a config.json but no checkpoint was stopped before its first epoch ended: a plain
    run and ``--resume`` both start it from scratch (with a note)."""
    existing = out / mfolder.CONFIG
    started = existing.is_file() and (out / mfolder.CHECKPOINT).is_file()
    if main and out.is_dir():
        artifacts.clean_stale_temps(out)
        artifacts.clean_stale_temps(out / "checkpoints")
    if resume:
        if not existing.is_file():
            raise TemacliError(f"--resume: {out} holds no training run (no config.json); start without --resume")
        if started:
            _check_same_run(out, config)
            return True
        progress.message(f"note: {out} has a config.json but no checkpoint (stopped before its first epoch ended); "
                         "starting from scratch")
    elif started and not force:
        raise TemacliError(f"{out} already holds a trained model; pass --resume to continue it or --force to start over")
    elif existing.is_file() and not started:
        progress.message(f"note: {out} holds a run stopped before its first epoch ended; starting it again")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for name in (mfolder.METRICS, mfolder.METRICS_CSV, mfolder.CHECKPOINT):
            (out / name).unlink(missing_ok=True)
        for p in out.glob("model*.safetensors"):
            p.unlink()
    return False


def _check_same_run(out: Path, config: dict) -> None:
    path = out / mfolder.CONFIG
    old = mfolder.check_config(artifacts.read_json(path, what="model config"), path, required=("kind", "train"))
    fix = "resume with the same options and inputs, or use a new --out"
    for key in ("kind", "model", "dataset_fingerprint"):
        if _comparable(old.get(key)) != _comparable(config.get(key)):
            raise TemacliError(f"--resume: {out} was trained with a different {key}; {fix}")
    fps_old = {k: v.get("fingerprint") if isinstance(v, dict) else v for k, v in (old.get("inputs") or {}).items()}
    fps_new = {k: v.get("fingerprint") for k, v in config["inputs"].items()}
    if fps_old != fps_new:
        diff = sorted(k for k in set(fps_old) | set(fps_new) if fps_old.get(k) != fps_new.get(k))
        raise TemacliError(f"--resume: {out} was trained on other inputs ({', '.join(diff)} differ by content); {fix}")
    for key in _RESUME_KEYS:
        before, now = old["train"].get(key), config["train"].get(key)
        if key == "early_stop" and before is not None:
            before, now = parse_early_stop(before), parse_early_stop(now)
        if before != now:
            raise TemacliError(f"--resume: {out} was trained with {key}={before!r}, now {now!r}; {fix}")


def _comparable(v):
    return json.loads(json.dumps(v, default=str))


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class _Board:
    """``--log tensorboard``: every numeric field of an epoch's record as a scalar (``valid/<domain>/MRR``,
    ``train_loss``, ...) at step = epoch, in ``MODEL/tensorboard/``. Does nothing with ``--log none``."""

    def __init__(self, out: Path, enabled: bool):
        self.dir = out / "tensorboard"
        self.enabled = enabled
        self._writer = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.dir))
        epoch = int(record["epoch"])
        for key, value in _flat(record).items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            self._writer.add_scalar(key.replace("_", "/", 2) if key.startswith("valid_") else key, value, epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _append_metrics(out: Path, record: dict) -> None:
    with open(out / mfolder.METRICS, "a") as f:
        f.write(json.dumps(record, default=_plain) + "\n")
    _write_csv(out)


def _plain(o):
    """NumPy scalars as Python numbers in metrics.jsonl."""
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _flat(record: dict) -> dict:
    row = {}
    for k, v in record.items():
        if isinstance(v, dict):
            for d, metrics in v.items():
                for m, x in (metrics.items() if isinstance(metrics, dict) else (("", metrics),)):
                    row[f"{k}_{d}_{m}" if m else f"{k}_{d}"] = x
        else:
            row[k] = v
    return row


def _write_csv(out: Path) -> None:
    """metrics.csv: metrics.jsonl flattened (valid_<domain>_<metric> columns), one row per epoch."""
    rows = [_flat(json.loads(ln)) for ln in (out / mfolder.METRICS).read_text().splitlines() if ln.strip()]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with artifacts.atomic_path(out / mfolder.METRICS_CSV) as tmp:
        tmp.write_text(buf.getvalue())


def _truncate_metrics(out: Path, epoch: int, progress: Progress) -> None:
    """Keep the lines of epochs <= ``epoch`` (those the checkpoint covers); a torn last line (a kill
    while it was written) is dropped with a note."""
    path = out / mfolder.METRICS
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = []
    for i, ln in enumerate(lines):
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                progress.message(f"note: {path}: the last line was cut off (the run was killed while writing it); dropped")
                continue
            raise TemacliError(f"{path}: line {i + 1} is not JSON; fix or remove the line, then --resume") from None
        if isinstance(rec, dict) and int(rec.get("epoch", 0)) <= epoch:
            kept.append(ln)
    with artifacts.atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in kept))
    _write_csv(out)


def _finish(out: Path, config: dict, tracker: EarlyStopping, records: dict, n_rows: int, main: bool,
            status: str) -> dict:
    summary = {
        "status": status,
        "epochs_run": tracker.epoch,
        "stopped_early": bool(tracker.stopped),
        "best_epoch": tracker.best_epoch,
        "early_stop": config["train"]["early_stop"],
        "selection_metric": tracker.metric,
        "best_valid_loss": tracker.best_loss,
        "best_loss_epoch": tracker.best_loss_epoch,
        "loss_patience_exhausted": bool(tracker.best_loss_epoch and tracker.epoch - tracker.best_loss_epoch >= tracker.patience),
        "best_mean": tracker.best_mean,
        "best_by_domain": dict(tracker.best) if tracker.per_domain else None,
        "best_epoch_by_domain": dict(tracker.best_epoch_by_domain) if tracker.per_domain else None,
    }
    if not main:
        return summary
    config["best"] = summary
    mfolder.write_config(out, config)
    mfolder.write_prepared(out, config)  # what model.prepare() computes, so eval and recommend need not
    counts = {"train_rows": n_rows, "n_parameters": config.get("n_parameters"), "epochs_run": tracker.epoch}
    mfolder.write_folder_manifest(out, config, records, summary, counts)
    return summary
