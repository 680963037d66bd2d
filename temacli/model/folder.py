"""The model folder: its contract, how it is written (``train``) and read (``eval``, ``recommend``).

    model/
      model.safetensors          weights and frozen buffers (features, tag weights): self-contained
      model.<domain>.safetensors each domain's best epoch (``--early-stop`` other than loss)
      prepared.safetensors       what ``model.prepare()`` computes from model.safetensors (TEMA's item
      prepared.<domain>.safetensors  tables), written when training ends; used only while it matches the weights
      config.json                kind, model hyper-parameters, training options, dataset fingerprint, inputs
      metrics.jsonl, metrics.csv one line per epoch
      manifest.json              stage "train"
      checkpoints/last.pt        resumable state

Paths of the inputs (dataset, features, tags) are recorded twice: absolute (``path``) and relative to
the model folder (``relative``). Reading resolves ``relative`` first, so a tree of runs moved as a
whole still works, then ``path``: ``eval`` and ``recommend`` find the dataset and the item tags from
any working directory, without ``--data``.

:class:`ModelFolder` is the typed view of a folder (``ModelFolder.open(path)``); ``load_trained``
rebuilds the model; ``open_model_and_data`` opens a model with its dataset and refuses a pair that
does not belong together. Checkpoints are read with ``torch.load(weights_only=True)`` only.

Prepared tables (:func:`write_prepared`, read by :meth:`ModelFolder.load`): TEMA scores from item
tables that ``prepare()`` computes from the item side of the weights (ID embeddings, frozen image and
text features, tags, the fusion MLP). Training stores them beside each weight file, computed on the
CPU exactly as a load would; loading on the CPU then reads only the user side of the weights plus the
tables, which gives the same scores. The file records the weights' fingerprint (and size and mtime,
so the check costs no hashing while the file is untouched); a file for other weights is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from temacli import artifacts
from temacli.errors import TemacliError

STAGE = "train"
CONFIG = "config.json"
DEFAULT_WEIGHTS = "model.safetensors"
PER_DOMAIN = "per-domain"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CHECKPOINT = "checkpoints/last.pt"
PREPARED = "prepared.safetensors"
PREPARED_FORMAT = "temacli-prepared/1"
# per model kind: the state-dict modules (first key component) that only ``prepare()`` reads; with
# prepared tables they are not loaded
PREPARED_REPLACES: dict[str, frozenset] = {
    "tema": frozenset({"E_id", "E_img", "E_tex", "P_img", "P_tex", "tag_index", "tag_weight", "tag_offsets",
                       "E_tag", "mlp"}),
}
_FIX = "pass the --out folder of `temacli train`"

# config.json fields and their JSON types; LOAD_FIELDS must be present to rebuild the model
CONFIG_TYPES: dict[str, tuple] = {
    "kind": (str,), "model": (dict,), "n_x": (int,), "n_y": (int,), "pad": (int,), "max_len": (int,),
    "domains": (list,), "dataset_fingerprint": (str,), "items_fingerprint": (str,), "train": (dict,),
    "inputs": (dict,), "tag_nnz": (int,), "n_parameters": (int,), "best": (dict,),
}
LOAD_FIELDS = ("kind", "model", "n_x", "n_y", "max_len")
_TYPE_NAMES = {str: "a string", dict: "an object", int: "an integer", list: "a list"}


def check_config(config: Any, path: Path, required: tuple = ("kind",)) -> dict:
    """config.json as written by ``train``: an object, fields of the right JSON type, ``required``
    present; anything else is one line naming the field."""
    fix = "use the config.json written by `temacli train` with these weights, or retrain"
    if not isinstance(config, dict):
        raise TemacliError(f"{path}: not a JSON object; {fix}")
    for key in required:
        if key not in config:
            raise TemacliError(f"{path}: field '{key}' is missing; {fix}")
    for key, types in CONFIG_TYPES.items():
        if key not in config or (config[key] is None and key not in required):
            continue
        v = config[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise TemacliError(
                f"{path}: field '{key}' is {type(v).__name__} {json.dumps(v)[:40]}, expected "
                f"{_TYPE_NAMES[types[0]]}; {fix}"
            )
    return config


# ----------------------------------------------------------------------------- the typed view
@dataclass
class ModelFolder:
    """A model folder as ``train`` wrote it: config, manifest, and where its inputs are."""

    path: Path
    config: dict
    manifest: dict
    kind: str
    dataset_fingerprint: str | None = None
    n_x: int | None = None
    n_y: int | None = None
    max_len: int | None = None
    domains: tuple = ()
    early_stop: str | None = None
    inputs: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ModelFolder":
        path = Path(path)
        if not path.is_dir():
            raise TemacliError(f"{path}: model folder not found; {_FIX}")
        manifest = artifacts.read_manifest(path, stage=STAGE, fix=_FIX)
        config = check_config(artifacts.read_json(path / CONFIG, what="model config", fix=_FIX), path / CONFIG)
        inputs = dict(manifest.get("inputs") or config.get("inputs") or {})
        fp = ((inputs.get("dataset") or {}).get("fingerprint")) or config.get("dataset_fingerprint")
        return cls(
            path=path, config=config, manifest=manifest, kind=str(config["kind"]), dataset_fingerprint=fp,
            n_x=config.get("n_x"), n_y=config.get("n_y"), max_len=config.get("max_len"),
            domains=tuple(config.get("domains") or ()), early_stop=(config.get("train") or {}).get("early_stop"),
            inputs=inputs,
        )

    # where the inputs are -----------------------------------------------------------------
    def input_path(self, key: str) -> Path | None:
        """The recorded input ``key`` (dataset, tags, features_image, ...), resolved: relative to the
        folder first, then the absolute path, then (folders of older versions) relative to the
        current directory. None when nothing was recorded; the recorded path when none exists."""
        rec = self.inputs.get(key)
        if not isinstance(rec, dict) or not rec.get("path"):
            return None
        tries = []
        if rec.get("relative"):
            tries.append(self.path / rec["relative"])
        p = Path(rec["path"])
        tries += [p] if p.is_absolute() else [self.path / p, p]
        for t in tries:
            if t.exists():
                return t.resolve()
        return p

    def dataset_path(self) -> Path:
        p = self.input_path("dataset")
        if p is None:
            raise TemacliError(f"{self.path}: the model's manifest names no dataset; pass --data")
        if not p.exists():
            raise TemacliError(f"{self.path}: the dataset it was trained on ({p}) is not there any more; pass --data DIR")
        return p

    def tags_path(self) -> Path | None:
        """The item_tags.parquet the model was trained with, if it used tags."""
        for key in self.inputs:
            if "tag" in key.lower():
                p = self.input_path(key)
                if p is not None:
                    return p / "item_tags.parquet" if p.suffix != ".parquet" else p
        return None

    # weights ------------------------------------------------------------------------------
    def weights_files(self, weights: str = DEFAULT_WEIGHTS, domains: tuple | None = None) -> list[str]:
        """The weight file(s) ``--weights`` names: one file, or one per domain for ``per-domain``."""
        domains = tuple(domains or self.domains)
        names = [f"model.{d}.safetensors" for d in domains] if weights == PER_DOMAIN else [weights]
        for name in names:
            if Path(name).name != name:
                raise TemacliError(f"--weights {weights}: give a file name inside {self.path}, not a path")
            if not (self.path / name).is_file():
                hint = ("train with `temacli train --early-stop mrr` (or hr@K, ndcg@K), which keeps each domain's "
                        "best epoch" if weights == PER_DOMAIN else f"choose a .safetensors file of {self.path}")
                raise TemacliError(f"{self.path / name}: weights not found; {hint}")
        return names

    def weights_fingerprint(self, name: str) -> str:
        outputs = self.manifest.get("outputs") or {}
        key = "model" if name == DEFAULT_WEIGHTS else Path(name).stem
        return (outputs.get(key) or {}).get("fingerprint") or artifacts.fingerprint(self.path / name)

    def info(self, weights: str = DEFAULT_WEIGHTS, domains=None, kind: str | None = None) -> dict:
        """How a result names this model: folder, kind, weight file(s) and their fingerprint."""
        info = {"path": str(self.path), "name": self.path.name, "kind": kind or self.kind, "weights": weights}
        if weights == DEFAULT_WEIGHTS:
            if (self.path / weights).is_file() or "model" in (self.manifest.get("outputs") or {}):
                fp = self.weights_fingerprint(weights)
            else:
                fp = artifacts.fingerprint(self.path)
        else:
            fps = [self.weights_fingerprint(n) for n in self.weights_files(weights, domains)]
            fp = fps[0] if len(fps) == 1 else artifacts.text_fingerprint("|".join(fps))
            info["name"] = f"{self.path.name}:{'per-domain' if weights == PER_DOMAIN else weights}"
        info["fingerprint"] = fp
        return info

    def check_dataset(self, dataset, n_items: tuple | None = None) -> None:
        """The model was trained on ``dataset``: same fingerprint, same item counts."""
        artifacts.check_same(
            f"dataset fingerprint (the model was trained on another dataset than {dataset.path})",
            dataset.fingerprint, self.dataset_fingerprint, str(self.path),
            "pass the --data folder the model was trained on, or retrain the model on this one",
        )
        n_x, n_y = n_items if n_items is not None else (self.n_x, self.n_y)
        if n_x is not None and (int(n_x), int(n_y)) != (dataset.n_x, dataset.n_y):
            raise TemacliError(
                f"{self.path}: the model has {n_x}+{n_y} items, the dataset {dataset.path} "
                f"{dataset.n_x}+{dataset.n_y}; pass the --data folder the model was trained on"
            )

    def build(self, empty: bool = False):
        """A fresh model of the kind and sizes config.json describes (untrained weights).

        ``empty``: its parameters are allocated but not randomly initialised, for a strict load that
        overwrites them all (see :func:`_build_empty`)."""
        from temacli.model.api import build_model

        check_config(self.config, self.path / CONFIG, required=LOAD_FIELDS)
        if empty:
            model = _build_empty(self.config)
            if model is not None:
                return model
        try:
            return build_model(self.config)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TemacliError(f"{self.path / CONFIG}: the model it describes cannot be built ({e}); retrain") from None

    def load(self, device: str = "auto", weights: str = DEFAULT_WEIGHTS, prepared: bool = True):
        """The trained model (:class:`temacli.model.api.Trained`) with the named weights.

        On the CPU, with ``prepared`` and a prepared file that matches the weights, the item side of
        the weights is not read and ``prepare()`` is not run: its stored result is used."""
        import torch

        from temacli.model.api import Trained, resolve_device

        model = self.build(empty=True)  # every tensor is loaded below, or (prepared) not used
        dev = resolve_device(device)
        replaces = PREPARED_REPLACES.get(self.kind)
        tables = None
        if prepared and replaces and torch.device(dev).type == "cpu":
            tables = read_prepared(self.path, weights, model)
        if tables is None:
            load_weights(model, self.path / weights, device="cpu")
            return Trained(model, self.config, self.manifest, dev)
        load_weights(model, self.path / weights, device="cpu", skip=replaces)
        # the stored tables stand in for prepare() (the item side was not loaded, so recomputing them
        # would be wrong)
        return Trained(model, self.config, self.manifest, dev, prepared=tables)


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


def _build_empty(config: dict):
    """The model with ``torch.nn.init`` switched off while it is built: its parameters hold whatever
    memory they got (the strict load overwrites them all; random initialisation is most of the
    build's time). None when that is not safe: the build fails there, or the model holds buffers its
    state dict does not cover (they would keep uninitialised values)."""
    import torch

    from temacli.model.api import build_model

    init = torch.nn.init
    saved_fns = {name: getattr(init, name) for name in _INIT_FUNCTIONS if hasattr(init, name)}
    try:
        for name in saved_fns:
            setattr(init, name, _no_init)
        model = build_model(config)
    except Exception:  # the ordinary build reports what is wrong
        return None
    finally:
        for name, fn in saved_fns.items():
            setattr(init, name, fn)
    named = {k for k, _ in model.named_parameters()} | {k for k, _ in model.named_buffers()}
    if named != set(model.state_dict()):
        return None
    return model


def _no_init(tensor, *args, **kwargs):
    return tensor


# ----------------------------------------------------------------------------- reading (eval, recommend)
def read_config(model_dir: str | Path) -> dict:
    return ModelFolder.open(model_dir).config


def load_trained(model_dir: str | Path, device: str = "auto", dataset=None, weights: str = DEFAULT_WEIGHTS):
    """Rebuild a trained model from its folder; refuse it for another dataset than ``dataset``."""
    folder = ModelFolder.open(model_dir)
    if dataset is not None:
        folder.check_dataset(dataset)
    return folder.load(device, weights)


@dataclass
class Opened:
    """A model folder opened with its dataset: the folder, the scorer (one model, or a
    :class:`~temacli.model.api.DomainRouter` for per-domain weights) and the dataset."""

    folder: ModelFolder
    model: Any
    dataset: Any
    weights: str = DEFAULT_WEIGHTS


def open_with_data(
    model_dir: str | Path, data_dir: str | Path | None = None, device: str = "auto",
    loader: Callable | None = None, weights: str = DEFAULT_WEIGHTS,
) -> Opened:
    """Open a model folder and its dataset; refuse a pair that does not belong together.

    ``data_dir`` defaults to the dataset recorded in the model folder (resolved as
    :meth:`ModelFolder.input_path` says). ``weights`` names the weight file in the folder, or
    ``per-domain``. ``loader(model_dir, device, dataset, weights=...)`` replaces :func:`load_trained`.
    """
    from temacli.data.dataset import Dataset
    from temacli.model.api import DomainRouter

    folder = ModelFolder.open(model_dir)
    dataset = Dataset.open(data_dir if data_dir is not None else folder.dataset_path())
    folder.check_dataset(dataset)
    load = loader or load_trained
    names = [weights] if weights == DEFAULT_WEIGHTS else folder.weights_files(weights, dataset.domains)
    models = [load(folder.path, device, dataset, weights=name) for name in names]
    for m in models:
        folder.check_dataset(dataset, (m.n_x, m.n_y))
    if len(models) == 1:
        return Opened(folder, models[0], dataset, weights)
    router = DomainRouter(tuple(models), kind=folder.kind, config=folder.config, manifest=folder.manifest)
    return Opened(folder, router, dataset, weights)


def open_model_and_data(model_dir, data_dir=None, device: str = "auto", loader=None, weights: str = DEFAULT_WEIGHTS):
    """(scorer, dataset) of :func:`open_with_data`."""
    o = open_with_data(model_dir, data_dir, device, loader, weights)
    return o.model, o.dataset


def model_manifest(model_dir: str | Path) -> dict:
    return ModelFolder.open(model_dir).manifest


def model_dataset_path(manifest: dict) -> str | None:
    return ((manifest.get("inputs") or {}).get("dataset") or {}).get("path")


def model_dataset_fingerprint(trained) -> str | None:
    found = (((trained.manifest or {}).get("inputs") or {}).get("dataset") or {}).get("fingerprint")
    return found or (trained.config or {}).get("dataset_fingerprint")


def weights_files(model_dir: Path, weights: str, domains: tuple[str, str]) -> list[str]:
    return ModelFolder.open(model_dir).weights_files(weights, domains)


def check_pair(trained, dataset, model_dir: str | Path) -> None:
    """The model in ``model_dir`` (loaded as ``trained``) was trained on ``dataset``."""
    ModelFolder.open(model_dir).check_dataset(dataset, (trained.n_x, trained.n_y))


def model_kind(trained) -> str:
    """The kind of a loaded model (``Trained`` and ``DomainRouter`` carry it; other scorers in
    their ``config``)."""
    kind = getattr(trained, "kind", None) or (getattr(trained, "config", None) or {}).get("kind")
    return str(kind or type(trained).__name__)


def model_info(trained, model_dir: str | Path, weights: str = DEFAULT_WEIGHTS, domains=None) -> dict:
    return ModelFolder.open(model_dir).info(weights, domains, kind=model_kind(trained))


# ----------------------------------------------------------------------------- writing (train)
def input_record(path: str | os.PathLike, **fields) -> dict:
    """How a model folder records an input: its absolute path (``relative`` is added by
    :func:`with_relative_paths` once the folder is known) plus ``fields`` (fingerprint, stage, ...)."""
    return {"path": str(Path(path).resolve()), **fields}


def with_relative_paths(records: dict, out: Path) -> dict:
    """``records`` with each path also relative to the model folder ``out``."""
    base = Path(out).resolve()
    done = {}
    for key, rec in records.items():
        rec = dict(rec)
        if rec.get("path"):
            try:
                rec["relative"] = os.path.relpath(Path(rec["path"]).resolve(), base)
            except ValueError:  # another drive (Windows)
                rec.pop("relative", None)
        done[key] = rec
    return done


def write_config(out: Path, config: dict) -> Path:
    return artifacts.write_json(config, Path(out) / CONFIG)


def write_folder_manifest(out: Path, config: dict, records: dict, summary: dict, counts: dict) -> dict:
    """manifest.json of the model folder: parameters, inputs, every weight file's fingerprint."""
    out = Path(out)
    outputs = {"config": {"path": CONFIG, "fingerprint": artifacts.fingerprint(out / CONFIG)}}
    if (out / DEFAULT_WEIGHTS).is_file():
        outputs["model"] = {"path": DEFAULT_WEIGHTS, "fingerprint": artifacts.fingerprint(out / DEFAULT_WEIGHTS)}
    for p in sorted(out.glob("model.*.safetensors")) + sorted(out.glob("prepared*.safetensors")):
        outputs[p.stem] = {"path": p.name, "fingerprint": artifacts.fingerprint(p)}
    for name in (METRICS, METRICS_CSV):
        if (out / name).is_file():
            outputs[Path(name).stem + "_" + Path(name).suffix[1:]] = {"path": name}
    m = artifacts.build_manifest(
        STAGE,
        {"kind": config["kind"], "model": config["model"], "train": config["train"],
         "early_stop": (config.get("train") or {}).get("early_stop")},
        inputs=with_relative_paths(records, out),
        outputs=outputs,
        counts=counts,
        dataset_fingerprint=config.get("dataset_fingerprint"),
        summary=summary,
    )
    artifacts.write_manifest(out, m)
    return m


def save_weights(model, path: str | Path) -> Path:
    """The model's state dict (parameters and buffers) as safetensors, written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with artifacts.atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp))
    return Path(path)


def load_weights(model, path: str | Path, device: str = "cpu", skip: frozenset | None = None) -> None:
    """Load a weights file into ``model`` (strict); ``skip``: modules (first key component) neither
    read nor required."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise TemacliError(f"{path}: model weights not found; train a model with `temacli train --out {path.parent}`")
    skip = skip or frozenset()
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            state = {k: f.get_tensor(k) for k in f.keys() if k.split(".", 1)[0] not in skip}
    except Exception as e:  # safetensors raises its own error types
        raise TemacliError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        if not skip:
            model.load_state_dict(state, strict=True)
        else:
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [k for k in missing if k.split(".", 1)[0] not in skip]
            if missing or unexpected:
                raise RuntimeError(f"Error(s) in loading state_dict:\n  missing {missing[:3]}, unexpected {unexpected[:3]}")
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise TemacliError(
            f"{path}: weights do not fit the model in config.json ({first[1].strip() if len(first) > 1 else first[0]}); "
            "retrain or use the config.json written with these weights"
        ) from None


def save_checkpoint(path: str | Path, model, optimizer, generator, epoch: int, tracker: dict) -> Path:
    """Everything that decides the rest of the run: model and optimizer states, the global torch
    RNG (dropout), the data generator (shuffling, sampled negatives), the epoch just finished and
    the early-stopping state (a plain dict). Resuming replays the same remaining epochs."""
    import torch

    state = {
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
        "tracker": tracker,
    }
    with artifacts.atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, model, optimizer, generator, device: str = "cpu") -> tuple[int, dict]:
    """Restore a checkpoint in place; returns (epoch finished, tracker dict). Never unpickles."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TemacliError(f"{path}: no checkpoint to resume from; start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise TemacliError(f"{path}: checkpoint cannot be read ({type(e).__name__}); start again without --resume") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    generator.set_state(state["generator"].cpu())
    return int(state["epoch"]), state["tracker"]


# ----------------------------------------------------------------------------- prepared tables

def prepared_name(weights: str = DEFAULT_WEIGHTS) -> str:
    """The prepared file of a weight file: prepared.safetensors, prepared.<domain>.safetensors, ..."""
    if weights == DEFAULT_WEIGHTS:
        return PREPARED
    stem = Path(weights).name.removesuffix(".safetensors")
    return f"prepared.{stem.removeprefix('model.')}.safetensors"


def _weights_stamp(path: Path) -> dict:
    st = path.stat()
    return {"weights_size": str(st.st_size), "weights_mtime_ns": str(st.st_mtime_ns)}


def write_prepared(out: str | Path, config: dict) -> list[str]:
    """Beside each weight file of the folder ``out`` (trained as ``config`` says), what ``prepare()``
    computes from it, on the CPU as a load would; nothing for kinds without item tables. Returns
    the files written. Training calls it when it ends."""
    from safetensors.torch import save_file

    out = Path(out)
    folder = ModelFolder(path=out, config=config, manifest={}, kind=str(config.get("kind")))
    if folder.kind not in PREPARED_REPLACES:
        return []
    written = []
    for w in [DEFAULT_WEIGHTS] + sorted(p.name for p in out.glob("model.*.safetensors")):
        path = out / w
        if not path.is_file():
            continue
        model = folder.build()
        load_weights(model, path, device="cpu")
        model.eval()
        model.prepare()
        flat = {f"{group}/{m}": t.detach().float().contiguous().clone()
                for group, per in model._tables.items() for m, t in per.items()}
        meta = {"format": PREPARED_FORMAT, "kind": folder.kind, "weights": w, "device": "cpu",
                "weights_fingerprint": artifacts.fingerprint(path), **_weights_stamp(path)}
        with artifacts.atomic_path(out / prepared_name(w), suffix=".safetensors") as tmp:
            save_file(flat, str(tmp), metadata=meta)
        written.append(prepared_name(w))
    return written


def read_prepared(folder_path: str | Path, weights: str, model) -> dict | None:
    """The prepared tables of ``weights`` as ``model._tables``, or None when there is no file, or it
    does not match the weights (fingerprint), the model kind or the model's table shapes."""
    from safetensors import safe_open

    folder_path = Path(folder_path)
    path, wpath = folder_path / prepared_name(weights), folder_path / weights
    if not path.is_file() or not wpath.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != PREPARED_FORMAT or meta.get("weights") != weights \
                    or meta.get("kind") != getattr(model, "kind", None):
                return None
            stamp = _weights_stamp(wpath)
            if any(meta.get(k) != v for k, v in stamp.items()) \
                    and meta.get("weights_fingerprint") != artifacts.fingerprint(wpath):
                return None  # other weights than the tables were computed from: stale
            tables: dict = {}
            for key in f.keys():
                group, _, m = key.partition("/")
                tables.setdefault(group, {})[m] = f.get_tensor(key)
    except Exception:  # an unreadable prepared file is only a missed shortcut
        return None
    n, q = model.n_items + 1, getattr(getattr(model, "cfg", None), "q", None)
    streams = tuple(getattr(model, "streams", ()))
    if set(tables) != {"R", "F"}:
        return None
    for group, per in tables.items():
        if set(per) != set(streams) or any(tuple(t.shape) != (n, q) for t in per.values()):
            return None
        tables[group] = {m: per[m] for m in streams}  # the model's stream order (the file sorts its keys)
    return tables
