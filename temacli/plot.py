"""Figures of training runs: learning curves of one model, test metrics of several side by side.

Reads only files: a model folder's ``metrics.jsonl`` (one line per epoch, ``temacli train``) and
``config.json`` (its ``best`` block names the kept epoch), and the result JSONs of ``temacli eval``
(``"kind": "temacli.eval"``) found in the folder, in its ``eval/`` sub-folder, or beside it as
``FOLDER.*.json`` (what ``eval --out runs/fk/tema.test.full.json`` writes). Models named ``NAME_s1``,
``NAME_s2``, ... are seeds of one model ``NAME``: the comparison shows their mean with the standard
deviation over seeds as error bars and each seed as a dot.

matplotlib is an optional extra (``pip install 'temacli[plot]'``): it is imported inside the
functions, figures are drawn on matplotlib's Agg canvas (no display needed) and written atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temacli.errors import TemacliError

CURVE_SIZE = (12.0, 3.8)  # inches: loss | validation MRR | validation NDCG@10
COMPARE_PANEL = (4.6, 4.2)  # inches per metric panel
DEFAULT_METRICS = ("MRR", "NDCG@10")
SEED_NAME = re.compile(r"(?P<name>.+?)_s(?P<seed>\d+)")
_MISSING = "temacli plot needs matplotlib, an optional extra: pip install 'temacli[plot]' (or pip install matplotlib)"


@dataclass
class Run:
    """One model folder as the figures see it."""

    path: Path
    name: str
    kind: str
    epochs: list[dict]
    best: dict
    results: dict[tuple[str, str], dict] = field(default_factory=dict)  # (split, protocol) -> eval JSON

    @property
    def group(self) -> str:
        m = SEED_NAME.fullmatch(self.name)
        return m["name"] if m else self.name

    @property
    def seed(self) -> int | None:
        m = SEED_NAME.fullmatch(self.name)
        return int(m["seed"]) if m else None

    @property
    def kept_epoch(self) -> int | None:
        """The epoch whose weights are ``model.safetensors``."""
        best = self.best.get("best_epoch")
        if isinstance(best, int) and best > 0:
            return best
        rows = [r for r in self.epochs if r.get("valid_loss") is not None]
        if not rows:
            return None
        improved = [r["epoch"] for r in rows if r.get("improved")]
        if improved:
            return improved[-1]
        return min(rows, key=lambda r: r["valid_loss"])["epoch"]


# ----------------------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_metrics(path: Path) -> list[dict]:
    """The epochs of ``metrics.jsonl``; a line cut short by a killed run (the last) is skipped."""
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                continue
            raise TemacliError(f"{path}: line {i} is not JSON; the file is damaged (rerun the training)") from None
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def eval_results(folder: Path) -> dict[tuple[str, str], dict]:
    """The newest ``temacli eval`` result per (split, protocol) in, under or beside a model folder."""
    candidates: list[Path] = []
    for where in (folder, folder / "eval"):
        if where.is_dir():
            candidates += sorted(where.glob("*.json"))
    candidates += sorted(folder.parent.glob(glob_escape(folder.name) + ".*.json"))
    found: dict[tuple[str, str], tuple[float, dict]] = {}
    for p in candidates:
        if p.name.endswith(".manifest.json") or p.name in ("config.json", "manifest.json"):
            continue
        r = _read_json(p)
        if not isinstance(r, dict) or r.get("kind") != "temacli.eval" or not isinstance(r.get("metrics"), dict):
            continue
        key = (str(r.get("split")), str(r.get("protocol")))
        mtime = p.stat().st_mtime
        if key not in found or mtime > found[key][0]:
            r = dict(r, _file=str(p))
            found[key] = (mtime, r)
    return {k: v[1] for k, v in found.items()}


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def read_run(folder: str | os.PathLike) -> Run:
    """A model folder of ``temacli train``: its epochs, kept epoch and saved evaluations."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TemacliError(f"{folder}: not a folder; give model folders written by `temacli train`")
    metrics = folder / "metrics.jsonl"
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    if not metrics.is_file() and config is None:
        raise TemacliError(f"{folder}: no metrics.jsonl or config.json; give model folders written by `temacli train`")
    config = config if isinstance(config, dict) else {}
    epochs = read_metrics(metrics) if metrics.is_file() else []
    return Run(
        path=folder, name=folder.resolve().name, kind=str(config.get("kind", "?")), epochs=epochs,
        best=config.get("best") or {}, results=eval_results(folder),
    )


# ----------------------------------------------------------------------------- drawing helpers
def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TemacliError(_MISSING) from None
    return Figure, FigureCanvasAgg


def require_matplotlib() -> None:
    """Raise the one-line install hint when matplotlib is missing."""
    _matplotlib()


def _new_figure(size: tuple[float, float], dpi: int):
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    Canvas(fig)
    return fig


def _save(fig, path: Path, dpi: int) -> Path:
    from temacli.artifacts import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)  # no bbox_inches="tight": the size stays as asked
    return path


def _pct(v: Any) -> float:
    return 100.0 * v if isinstance(v, (int, float)) and v is not None and not math.isnan(v) else math.nan


def _domains(run: Run) -> list[str]:
    for r in run.epochs:
        valid = r.get("valid")
        if isinstance(valid, dict):
            return [d for d in valid if d != "all"]
    return []


# ----------------------------------------------------------------------------- figures
def learning_curves(run: Run, path: str | os.PathLike, dpi: int = 150, metric: str = "NDCG@10") -> Path:
    """Loss, validation MRR and validation ``metric`` by epoch; the kept epoch marked on each panel."""
    if not run.epochs:
        raise TemacliError(f"{run.path}: metrics.jsonl holds no epoch; nothing to plot")
    fig = _new_figure(CURVE_SIZE, dpi)
    ax_loss, ax_mrr, ax_ndcg = fig.subplots(1, 3)
    ep = [r["epoch"] for r in run.epochs]
    kept = run.kept_epoch

    ax_loss.plot(ep, [r.get("train_loss", math.nan) for r in run.epochs], color="tab:gray", label="train")
    vrows = [r for r in run.epochs if r.get("valid_loss") is not None]
    ax_loss.plot([r["epoch"] for r in vrows], [r["valid_loss"] for r in vrows], color="tab:blue", label="validation")
    ax_loss.set_title("loss")

    domains = _domains(run)
    colours = ["tab:orange", "tab:green", "tab:purple", "tab:red"]
    for ax, m in ((ax_mrr, "MRR"), (ax_ndcg, metric)):
        for d, c in zip(domains, colours):
            pts = [(r["epoch"], _pct(r["valid"][d].get(m))) for r in run.epochs
                   if isinstance(r.get("valid"), dict) and isinstance(r["valid"].get(d), dict)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, marker="." if len(pts) < 30 else None,
                        label=d)
        ax.set_title(f"validation {m} (%)")
    # the kept epoch: model.safetensors (and, with --early-stop mrr, each domain's own kept epoch)
    if kept is not None:
        for ax in (ax_loss, ax_mrr, ax_ndcg):
            ax.axvline(kept, color="black", linestyle=":", linewidth=1.2, label=f"kept: epoch {kept}")
        row = next((r for r in vrows if r["epoch"] == kept), None)
        if row is not None:
            ax_loss.plot([kept], [row["valid_loss"]], marker="*", markersize=12, color="tab:blue", zorder=5)
    per_domain = run.best.get("best_mrr_epoch") or {}
    for d, c in zip(domains, colours):
        e = per_domain.get(d)
        if isinstance(e, int) and e > 0 and e != kept:
            row = next((r for r in run.epochs if r["epoch"] == e and isinstance(r.get("valid"), dict)), None)
            if row is not None and isinstance(row["valid"].get(d), dict):
                ax_mrr.plot([e], [_pct(row["valid"][d].get("MRR"))], marker="*", markersize=12, color=c, zorder=5)
    for ax in (ax_loss, ax_mrr, ax_ndcg):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    status = run.best.get("status")
    ending = {"time limit": ", time limit reached"}.get(status, ", stopped early" if run.best.get("stopped_early") else "")
    fig.suptitle(f"{run.name} ({run.kind}): {len(run.epochs)} epochs{ending}"
                 + (f"; kept epoch {kept}" if kept is not None else ""), fontsize=11)
    return _save(fig, Path(path), dpi)


@dataclass
class Group:
    name: str
    runs: list[Run]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Seeds of one model (``NAME_s1``, ``NAME_s2``) together, in the order first met."""
    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(r.group, Group(r.group, [])).runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: (r.seed is None, r.seed or 0))
    return list(groups.values())


def _check_comparable(pairs: Sequence[tuple[Run, dict]], split: str, protocol: str) -> None:
    first_run, first = pairs[0]
    for run, res in pairs[1:]:
        for what, a, b in (
            ("dataset", first.get("data", {}).get("fingerprint"), res.get("data", {}).get("fingerprint")),
            ("candidates", first.get("candidates", {}).get("fingerprint"), res.get("candidates", {}).get("fingerprint")),
        ):
            if a != b:
                raise TemacliError(
                    f"{first_run.path} and {run.path}: their {split}/{protocol} results were computed on different "
                    f"{what}; plot models evaluated on the same data together"
                )


def seed_stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one seed) of the finite values."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def comparison_inputs(runs: Sequence[Run], split: str, protocol: str, metrics: Sequence[str]):
    """(run, result) pairs, seed groups and domains of one comparison, checked before anything is drawn."""
    pairs = [(r, r.results[(split, protocol)]) for r in runs if (split, protocol) in r.results]
    if not pairs:
        raise TemacliError(f"no {split}/{protocol} results among these models; run `temacli eval` on them first")
    _check_comparable(pairs, split, protocol)
    have = {id(r) for r, _ in pairs}
    groups = [Group(g.name, [r for r in g.runs if id(r) in have]) for g in group_runs(runs)]
    groups = [g for g in groups if g.runs]
    domains = list(pairs[0][1].get("data", {}).get("domains") or [d for d in pairs[0][1]["metrics"] if d != "all"])
    for m in metrics:
        if not any(isinstance(res["metrics"].get(d), dict) and m in res["metrics"][d] for _, res in pairs for d in domains):
            known = sorted({k for _, res in pairs for d in domains for k in (res["metrics"].get(d) or {}) if k != "n"})
            raise TemacliError(f"metric {m} is not in the {split} results; choose from {', '.join(known)}")
    return pairs, groups, domains


def comparison(
    runs: Sequence[Run], path: str | os.PathLike, split: str = "test", protocol: str = "sampled",
    metrics: Sequence[str] = DEFAULT_METRICS, dpi: int = 150,
) -> Path:
    """One panel per metric: per-domain bars of each model (mean over seeds, error bar = sd over seeds)."""
    pairs, groups, domains = comparison_inputs(runs, split, protocol, metrics)
    fig = _new_figure((COMPARE_PANEL[0] * len(metrics), COMPARE_PANEL[1]), dpi)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    width = 0.8 / max(len(groups), 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    for ax, m in zip(axes, metrics):
        top = 0.0
        for gi, g in enumerate(groups):
            c = colours[gi % len(colours)]
            xs, means, sds = [], [], []
            for di, d in enumerate(domains):
                vals = [_pct((r.results[(split, protocol)]["metrics"].get(d) or {}).get(m)) for r in g.runs]
                mean, sd = seed_stats(vals)
                x = di + (gi - (len(groups) - 1) / 2) * width
                xs.append(x)
                means.append(mean)
                sds.append(sd)
                finite = [v for v in vals if not math.isnan(v)]
                if len(finite) > 1:
                    ax.scatter([x] * len(finite), finite, s=10, color="black", zorder=4)
                top = max([top, *finite, mean + sd if not math.isnan(mean) else 0.0])
            n = len(g.runs)
            label = f"{g.name} ({n} seed{'s' if n != 1 else ''})" if n > 1 or g.runs[0].seed is not None else g.name
            ax.bar(xs, means, width * 0.92, yerr=sds if any(s > 0 for s in sds) else None, capsize=3,
                   color=c, alpha=0.85, label=label, error_kw={"elinewidth": 1})
            for di, (x, mean, sd) in enumerate(zip(xs, means, sds)):
                if not math.isnan(mean):
                    seeds = [_pct((r.results[(split, protocol)]["metrics"].get(domains[di]) or {}).get(m)) for r in g.runs]
                    y = max([mean + sd, *[v for v in seeds if not math.isnan(v)]])
                    ax.annotate(f"{mean:.1f}", (x, y), xytext=(0, 3), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(domains)), domains)
        ax.set_title(f"{m} (%)")
        ax.set_ylim(0, top * 1.12 if top > 0 else 1)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(groups), 5), fontsize=8, frameon=False)
    data = pairs[0][1].get("data", {}).get("path")
    fig.suptitle(f"{split} split, {protocol} protocol" + (f" ({data})" if data else "")
                 + ": mean over seeds, error bars = sd over seeds, dots = seeds", fontsize=10)
    return _save(fig, Path(path), dpi)


# ----------------------------------------------------------------------------- the command
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def plot_runs(
    folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, split: str = "test",
    protocols: Sequence[str] | None = None, metrics: Sequence[str] = DEFAULT_METRICS, dpi: int = 150,
    curves: bool = True, compare: bool = True, force: bool = False,
) -> dict:
    """Learning curves of every model and one comparison per protocol found; returns what was written.

    ``out`` is a folder: ``NAME.curves.png`` per model, ``compare.SPLIT.PROTOCOL.png`` per protocol and a
    ``manifest.json``. Existing figures are replaced only with ``force``.
    """
    from temacli import artifacts

    require_matplotlib()
    if not folders:
        raise TemacliError("give at least one model folder")
    if dpi < 20 or dpi > 600:
        raise TemacliError(f"--dpi {dpi}: give a value between 20 and 600")
    metrics = [m.strip() for m in metrics if m.strip()]
    if not metrics:
        raise TemacliError("--metrics: give at least one metric, e.g. MRR,NDCG@10")
    runs = [read_run(f) for f in folders]
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TemacliError(f"two model folders are both named {dupes[0]}; their figures would overwrite each other")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TemacliError(f"--out {out}: a file is there; give a folder for the figures")

    plan: list[tuple[str, Path, Any]] = []
    skipped: dict[str, str] = {}
    if curves:
        for r in runs:
            if r.epochs:
                plan.append(("curves", out / f"{_safe(r.name)}.curves.png", r))
            else:
                skipped[str(r.path)] = "no epochs in metrics.jsonl"
    if compare:
        found = sorted({p for r in runs for (s, p) in r.results if s == split})
        wanted = list(protocols) if protocols else found
        for p in wanted:
            if p not in found:
                raise TemacliError(f"no {split}/{p} results among these models; run `temacli eval --split {split} --protocol {p}` first")
            plan.append(("compare", out / f"compare.{split}.{p}.png", p))
        if not wanted:
            skipped["comparison"] = f"no {split} results (run `temacli eval --split {split}` on the models)"
    if not plan:
        raise TemacliError("nothing to plot: the folders hold no epochs and no evaluation results")
    for what, _, arg in plan:
        if what == "compare":
            comparison_inputs(runs, split, arg, metrics)  # refuse before drawing anything
    existing = [p for _, p, _ in plan if p.exists()]
    if existing and not force:
        raise TemacliError(f"{existing[0]} already exists; pass --force to replace the figures")

    written = []
    for what, path, arg in plan:
        if what == "curves":
            learning_curves(arg, path, dpi=dpi, metric=next((m for m in metrics if m != "MRR"), "NDCG@10"))
        else:
            comparison(runs, path, split=split, protocol=arg, metrics=metrics, dpi=dpi)
        written.append({"figure": what, "path": str(path), "model": arg.name if what == "curves" else None,
                        "protocol": arg if what == "compare" else None})
    inputs = {}
    for r in runs:
        if (r.path / "metrics.jsonl").is_file():
            inputs[f"{r.name}/metrics.jsonl"] = artifacts.input_record(r.path / "metrics.jsonl")
        for (s, p), res in r.results.items():
            if s == split:
                inputs[f"{r.name}/{s}.{p}"] = artifacts.input_record(res["_file"])
    manifest = artifacts.build_manifest(
        "plot", {"split": split, "protocols": list(protocols or []), "metrics": list(metrics), "dpi": dpi},
        inputs=inputs,
        outputs={Path(w["path"]).name: {"path": Path(w["path"]).name, "fingerprint": artifacts.fingerprint(w["path"])}
                 for w in written},
        counts={"models": len(runs), "figures": len(written)},
    )
    artifacts.write_json(manifest, out / "manifest.json")
    return {"out": str(out), "figures": written, "skipped": skipped,
            "groups": {g.name: [r.name for r in g.runs] for g in group_runs(runs)}}
