"""``temacli data``: build a dataset (``split``) and show its Table I (``stats``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from temacli.cli._console import console, info

data_app = typer.Typer(
    help=(
        "Build the cross-domain dataset: filter, index, split, draw evaluation candidates.\n\n"
        "Example: temacli data split --interactions log.csv --items items.csv --domains food,kitchen --out runs/fk/data"
    ),
    no_args_is_help=True,
)


def _domains(value: Optional[str]) -> Optional[tuple[str, str]]:
    if value is None:
        return None
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    if len(parts) != 2:
        raise typer.BadParameter("give two domain names separated by a comma, X first: e.g. food,kitchen")
    return parts  # type: ignore[return-value]


@data_app.command("split")
def split(
    source: Optional[Path] = typer.Argument(
        None, help="With --format llmcdsr|c2dsr: the published benchmark folder to import."
    ),
    interactions: Optional[Path] = typer.Option(
        None, "--interactions", "-i", help="Interaction log (CSV, TSV or Parquet): user, item, domain, timestamp."
    ),
    items: Optional[Path] = typer.Option(None, "--items", help="Items table (CSV or Parquet): item id, title, ..."),
    domains: Optional[str] = typer.Option(
        None, "--domains", help="The two domain labels, X first (e.g. food,kitchen). Importers default to the folder name."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset folder."),
    fmt: str = typer.Option("log", "--format", help="log (a raw interaction log), llmcdsr or c2dsr (published splits)."),
    split_mode: str = typer.Option("loo", "--split", help="loo: leave-one-out per user; c2dsr: one evaluation instance per user, users split between valid and test."),
    min_user: int = typer.Option(10, "--min-user-interactions", help="Drop users with fewer interactions in total."),
    min_domain: int = typer.Option(3, "--min-domain-interactions", help="Drop users with fewer interactions in either domain."),
    min_item: int = typer.Option(1, "--min-item-interactions", help="Drop items with fewer interactions (1 keeps all)."),
    seed: int = typer.Option(42, "--seed", help="Seed of the candidate draw (and of the c2dsr user partition)."),
    replace: bool = typer.Option(True, "--negatives-replace/--negatives-no-replace", help="Draw negatives with replacement (C2DSR) or without (LLMCDSR)."),
    exclude_history: bool = typer.Option(False, "--negatives-exclude-history", help="Never draw an item from the user's history as a negative."),
    valid_frac: float = typer.Option(0.5, "--valid-frac", help="c2dsr split: share of evaluation users put in validation."),
    eval_frac: float = typer.Option(1.0, "--eval-users-frac", help="c2dsr split: share of users with an evaluation instance (the rest only train)."),
    user_col: str = typer.Option("user_id", "--user-col"),
    item_col: str = typer.Option("item_id", "--item-col"),
    domain_col: str = typer.Option("domain", "--domain-col"),
    time_col: str = typer.Option("timestamp", "--time-col"),
    item_id_col: str = typer.Option("item_id", "--item-id-col", help="Item id column of the items table."),
    title_col: str = typer.Option("title", "--title-col"),
    description_col: str = typer.Option("description", "--description-col"),
    image_col: str = typer.Option("image", "--image-col"),
    force: bool = typer.Option(False, "--force", help="Replace an output folder that holds a different dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest's counts and report as JSON."),
) -> None:
    """Split a raw interaction log (or import a published split) into the dataset folder.

    Example: temacli data split --interactions interactions.csv --items items.csv --domains food,kitchen --out runs/fk/data

    Example: temacli data split --format llmcdsr ../shared/data/llmcdsr-food-kitchen --out runs/llmcdsr/data
    """
    from temacli.data import split as lib
    from temacli.errors import TemacliError

    doms = _domains(domains)
    if fmt == "log":
        if interactions is None:
            raise TemacliError("--interactions is required (or --format llmcdsr|c2dsr FOLDER to import a published split)")
        if source is not None:
            raise TemacliError(f"unexpected argument {source}: a raw log is given with --interactions")
        if doms is None:
            raise TemacliError("--domains is required with a raw log: the two domain labels, X first (e.g. food,kitchen)")
        opts = lib.SplitOptions(
            domains=doms, split=split_mode, min_user=min_user, min_per_domain=min_domain, min_item=min_item,
            seed=seed, negatives_replace=replace, negatives_exclude_history=exclude_history,
            valid_frac=valid_frac, eval_users_frac=eval_frac, user_col=user_col, item_col=item_col,
            domain_col=domain_col, time_col=time_col, item_id_col=item_id_col, title_col=title_col,
            description_col=description_col, image_col=image_col,
        )
        with console.status("splitting", spinner="dots") as status:
            m = lib.split_dataset(interactions, items, out, opts, force=force, progress=lambda s: status.update(s))
    elif fmt in lib.IMPORT_FORMATS:
        if source is None:
            raise TemacliError(f"--format {fmt} needs the benchmark folder as argument")
        with console.status(f"importing {fmt}", spinner="dots"):
            m = lib.import_dataset(fmt, source, out, domains=doms, seed=seed, force=force)
    else:
        raise TemacliError(f"unknown --format '{fmt}'; choose log, llmcdsr or c2dsr")
    if as_json:
        console.print_json(json.dumps({"out": str(out), "counts": m["counts"], "report": m["report"]}))
        return
    c = m["counts"]
    info(
        f"[green]wrote[/] {out}: {c['n_items_x']:,} {c['domains'][0]} + {c['n_items_y']:,} {c['domains'][1]} items, "
        f"{c['n_users']:,} users; rows train {c['rows_train']:,} / valid {c['rows_valid']:,} / test {c['rows_test']:,}"
    )
    r = m["report"]
    notes = []
    if r.get("duplicate_rows_dropped"):
        notes.append(f"{r['duplicate_rows_dropped']:,} duplicate rows dropped")
    if r.get("filter_rounds"):
        dropped = sum(x["interactions_dropped"] for x in r["filter_rounds"])
        notes.append(f"filtering dropped {dropped:,} interactions in {len(r['filter_rounds'])} rounds")
    if r.get("items_missing_from_items_table"):
        notes.append(f"{r['items_missing_from_items_table']:,} items not in the items table (empty text)")
    if r.get("items_without_title"):
        notes.append(f"{r['items_without_title']:,} items without a title")
    if r.get("missing_files"):
        notes.append("missing files: " + ", ".join(r["missing_files"]))
    for n in notes:
        info(f"  {n}")
    info(f"  details: {Path(out) / 'report.json'}; Table I: temacli data stats {out}")


@data_app.command("stats")
def stats(
    data: Path = typer.Argument(..., help="Dataset folder written by `temacli data split`."),
    as_json: bool = typer.Option(False, "--json", help="Print stats.json."),
) -> None:
    """Show the dataset's Table I: items, train/valid/test targets and average length per domain.

    Example: temacli data stats runs/fk/data
    """
    from rich.table import Table

    from temacli import artifacts
    from temacli.data.dataset import Dataset

    ds = Dataset.open(data)
    st = artifacts.read_json(ds.path / "stats.json", what="stats.json", fix="rerun `temacli data split`")
    if as_json:
        console.print_json(json.dumps(st))
        return
    t = Table(title=f"{data} ({st['users']:,} users)")
    for col in ("domain", "#items", "#train targets", "#valid", "#test"):
        t.add_column(col, justify="right" if col != "domain" else "left")
    for dn, d in st["domains"].items():
        t.add_row(dn, f"{d['items']:,}", f"{d.get('train_targets', 0):,}", f"{d.get('valid_targets', 0):,}", f"{d.get('test_targets', 0):,}")
    console.print(t)
    console.print(
        f"training sequences {st.get('train_sequences', 0):,} ({st.get('train_interactions', 0):,} interactions, "
        f"avg length {st.get('avg_train_sequence_length', 0)}); avg evaluation sequence length "
        f"{st.get('avg_eval_sequence_length', 0)}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
