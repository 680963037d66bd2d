"""``temacli plot``: learning curves and test-metric comparisons of model folders, as PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from temacli.cli._console import console
from temacli.cli._json import print_json
from temacli.cli._options import Protocol, Split


def plot(
    models: List[Path] = typer.Argument(..., help="Model folders of `temacli train` (NAME_s1, NAME_s2, ... are seeds of NAME)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the figures (NAME.curves.png, compare.SPLIT.PROTOCOL.png, manifest.json)."),
    split: Split = typer.Option(Split.test, "--split", case_sensitive=False, help="Which split's `temacli eval` results to compare: test or valid."),
    protocol: Optional[List[Protocol]] = typer.Option(None, "--protocol", case_sensitive=False, help="sampled or full (repeat for both; default: every protocol found)."),
    metrics: str = typer.Option("MRR,NDCG@10", "--metrics", help="Metrics to compare, comma-separated (MRR, NDCG@5, NDCG@10, HR@1, HR@5, HR@10)."),
    curves: bool = typer.Option(True, "--curves/--no-curves", help="Draw each model's learning curves."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Draw the comparison of the models' results."),
    dpi: int = typer.Option(150, "--dpi", help="Pixels per inch (a learning-curve figure is 12 x 3.8 inches)."),
    force: bool = typer.Option(False, "--force", help="Replace figures already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Draw PNG figures of trained models: learning curves (loss, validation MRR/NDCG by epoch, the kept
    epoch marked) and the models' test metrics per domain, seeds as error bars. Needs matplotlib
    (pip install 'temacli[plot]').

    Example: temacli plot runs/fk/tema runs/fk/sasrec --out runs/fk/plots

    Example: temacli plot runs/grid/tema_s1 runs/grid/tema_s2 runs/grid/sasrec_s1 runs/grid/sasrec_s2 --out figs --protocol full
    """
    from temacli.plot import plot_runs

    summary = plot_runs(
        models, out_dir, split=split.value, protocols=[p.value for p in protocol] if protocol else None, metrics=metrics.split(","), dpi=dpi,
        curves=curves, compare=compare, force=force,
    )
    if as_json:
        print_json(summary)
        return
    for f in summary["figures"]:
        console.print(f["path"], highlight=False, markup=False)
    for what, why in summary["skipped"].items():
        console.print(f"skipped {what}: {why}", style="dim", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)
