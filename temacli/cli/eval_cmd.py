"""``temacli eval``: metrics of a trained model under the sampled or full protocol; ``--compare``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from temacli.cli._console import console, err_console


def _progress_callbacks(label: str):
    """A rich progress bar on stderr; returns (on_start, advance, stop)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True)
    task = {"id": None}

    def on_start(n: int) -> None:
        prog.start()
        task["id"] = prog.add_task(label, total=n)

    def advance(k: int) -> None:
        prog.advance(task["id"], k)

    return on_start, advance, prog.stop


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def eval_cmd(
    runs: Optional[List[Path]] = typer.Argument(
        None, help="With --compare: model folders and/or result JSON files (from --json or --out)."
    ),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder written by `temacli train`."),
    data: Optional[Path] = typer.Option(
        None, "--data", "-d", help="Dataset folder; default: the one recorded in the model's manifest."
    ),
    split: str = typer.Option("test", "--split", help="valid or test."),
    protocol: str = typer.Option(
        "sampled", "--protocol", "-p",
        help="sampled: the target among the split's stored 999 negatives (C2DSR); "
        "full: the target among all items of its domain.",
    ),
    keep_history: bool = typer.Option(
        False, "--keep-history",
        help="Full protocol: keep the user's own history items as candidates (default: they are excluded).",
    ),
    compare: bool = typer.Option(
        False, "--compare", help="Compare several runs in one table (rows = models, best in bold)."
    ),
    metrics: str = typer.Option(
        "MRR,NDCG@5,NDCG@10", "--metrics", help="--compare: metric columns per domain (MRR, NDCG@5, NDCG@10, HR@1, HR@5, HR@10)."
    ),
    batch_size: int = typer.Option(256, "--batch-size", help="Instances encoded per forward pass."),
    chunk_size: int = typer.Option(32768, "--chunk-size", help="Full protocol: items scored per chunk."),
    cold_threshold: int = typer.Option(
        5, "--cold-threshold", help="A target is cold when it occurs at most this often in train."
    ),
    weights: str = typer.Option(
        "model.safetensors", "--weights",
        help="Weight file in the model folder, or per-domain: each domain's targets ranked by that domain's "
        "best-validation weights (C2DSR's selection; needs `train --early-stop mrr`).",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ..."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON (fractions, not %)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print Markdown tables (for docs)."),
    no_slices: bool = typer.Option(False, "--no-slices", help="Leave the slice table out of the printout."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also save the result JSON here (with a manifest)."),
) -> None:
    """Evaluate a trained model: MRR, NDCG@5/10, HR@1/5/10 per target domain, with slices.

    Every table and JSON names the protocol, split, candidate-set fingerprint and model; instances that cannot be scored are counted and named, never dropped silently.

    Example: temacli eval --model runs/fk/model --data runs/fk/data --split test

    Example: temacli eval --model runs/fk/model --protocol full --json > m.json

    Example: temacli eval --compare runs/fk/model runs/fk/sasrec runs/fk/gru4rec
    """
    from temacli.errors import TemacliError
    from temacli.evaluation import compare as cmp_mod
    from temacli.evaluation import evaluate as ev
    from temacli.evaluation import report

    if json_out and markdown:
        raise TemacliError("choose one of --json and --markdown")
    opts = dict(split=split, protocol=protocol, exclude_history=not keep_history, batch_size=batch_size,
                chunk_size=chunk_size, cold_threshold=cold_threshold, device=device, weights=weights)

    def run_one(model_dir: Path) -> dict:
        on_start, advance, stop = _progress_callbacks(f"eval {model_dir.name}")
        try:
            return ev.evaluate(model_dir, data, progress=advance, on_start=on_start, **opts)
        finally:
            stop()

    if compare:
        metric_cols = cmp_mod.parse_metrics(metrics)  # fail before any evaluation runs
        paths = list(runs or []) + ([model] if model is not None else [])
        if len(paths) < 2:
            raise TemacliError("--compare needs at least two runs: model folders or result JSON files")
        for p in paths:  # check every run before evaluating any
            if not (p.is_file() or p.is_dir()):
                raise TemacliError(f"{p}: neither a model folder nor a result JSON file")
        results = [ev.read_result(p) if p.is_file() else None for p in paths]
        results = [r if r is not None else run_one(p) for p, r in zip(paths, results)]
        table = cmp_mod.comparison(results, metric_cols)
        if out is not None:
            cmp_mod.write_comparison(table, results, out)
        if json_out:
            _print_json({**table, "results": results})
        elif markdown:
            sys.stdout.write(report.compare_markdown(table))
        else:
            for r in report.compare_renderables(table):
                console.print(r)
        return

    if runs:
        if model is not None or len(runs) > 1:
            raise TemacliError("give one model (--model DIR); several runs need --compare")
        model = runs[0]
    if model is None:
        raise TemacliError("pass --model DIR (the --out folder of `temacli train`), or --compare RUN RUN ...")
    result = run_one(model)
    if out is not None:
        ev.write_result(result, out)
    if json_out:
        _print_json(result)
    elif markdown:
        sys.stdout.write(report.result_markdown(result, slices=not no_slices))
    else:
        for r in report.result_renderables(result, slices=not no_slices):
            console.print(r)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
