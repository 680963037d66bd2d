"""``temacli data``: build a dataset (``split``) and show its Table I (``stats``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from temacli.cli._console import console, err, info
from temacli.cli._json import print_json
from temacli.cli._options import DataFormat, SplitMode

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


@contextlib.contextmanager
def _shown(progress):
    """Close the progress display; after a failure only a terminal's bar is stopped (no '(done)' line)."""
    try:
        yield
    except BaseException:
        if getattr(progress, "tty", False):
            progress.finish()
        raise
    progress.finish()


# ranges quoted in --help; the library checks the same ranges (temacli.data.build.RANGES) before any work
_R = {
    "--min-user-interactions": "integer >= 1",
    "--min-domain-interactions": "integer >= 0",
    "--min-item-interactions": "integer >= 1",
    "--seed": "integer >= 0",
    "--valid-frac": "number in (0, 1)",
    "--eval-users-frac": "number in (0, 1]",
}


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
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset folder (created; its parent must be writable)."),
    fmt: DataFormat = typer.Option(DataFormat.log, "--format", case_sensitive=False, help="log (a raw interaction log), llmcdsr or c2dsr (published splits)."),
    split_mode: SplitMode = typer.Option(SplitMode.loo, "--split", case_sensitive=False, help="loo: leave-one-out per user; c2dsr: one evaluation instance per user, users split between valid and test."),
    min_user: int = typer.Option(10, "--min-user-interactions", help=f"Drop users with fewer interactions in total ({_R['--min-user-interactions']})."),
    min_domain: int = typer.Option(3, "--min-domain-interactions", help=f"Drop users with fewer interactions in either domain ({_R['--min-domain-interactions']})."),
    min_item: int = typer.Option(1, "--min-item-interactions", help=f"Drop items with fewer interactions; 1 keeps all ({_R['--min-item-interactions']})."),
    seed: int = typer.Option(42, "--seed", help=f"Seed of the candidate draw and of the c2dsr user partition ({_R['--seed']})."),
    replace: bool = typer.Option(True, "--negatives-replace/--negatives-no-replace", help="Raw log: draw negatives with replacement (C2DSR) or without (LLMCDSR). Importers follow their publisher."),
    exclude_history: bool = typer.Option(False, "--negatives-exclude-history", help="Never draw an item of the user's history as a negative (raw log, or --format llmcdsr; not the published LLMCDSR protocol, which excludes only the target)."),
    valid_frac: float = typer.Option(0.5, "--valid-frac", help=f"c2dsr split: share of evaluation users put in validation ({_R['--valid-frac']})."),
    eval_frac: float = typer.Option(1.0, "--eval-users-frac", help=f"c2dsr split: share of users with an evaluation instance, the rest only train ({_R['--eval-users-frac']})."),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Split a raw interaction log (or import a published split) into the dataset folder.

    Example: temacli data split --interactions interactions.csv --items items.csv --domains food,kitchen --out runs/fk/data

    Example: temacli data split --format llmcdsr ../shared/data/llmcdsr-food-kitchen --out runs/llmcdsr/data
    """
    from temacli.cli._console import RichProgress
    from temacli.data import split as lib
    from temacli.errors import TemacliError

    doms = _domains(domains)
    fmt, split_mode = fmt.value, split_mode.value
    progress = RichProgress(enabled=not (quiet or as_json))
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
        with _shown(progress):
            m = lib.split_dataset(interactions, items, out, opts, force=force, progress=progress)
    else:
        from temacli.data import formats

        if fmt not in formats.IMPORT_FORMATS:
            raise TemacliError(f"unknown --format '{fmt}'; choose log, {', '.join(formats.IMPORT_FORMATS)}")
        if source is None:
            raise TemacliError(f"--format {fmt} needs the benchmark folder as argument")
        if interactions is not None or items is not None:
            raise TemacliError(f"--format {fmt} reads its own files from the folder; drop --interactions/--items")
        with _shown(progress):
            m = formats.import_dataset(
                fmt, source, out, domains=doms, seed=seed, force=force,
                exclude_history=True if exclude_history else None, progress=progress,
            )
    r = m["report"]
    for name in r.get("missing_files") or []:
        err(f"warning: {Path(source) / name} is missing: imported without it (see report.json)")
    if as_json:
        print_json({"out": str(out), "counts": m["counts"], "report": r})
        return
    c = m["counts"]
    info(
        f"[green]wrote[/] {out}: {c['n_items_x']:,} {c['domains'][0]} + {c['n_items_y']:,} {c['domains'][1]} items, "
        f"{c['n_users']:,} users; rows train {c['rows_train']:,} / valid {c['rows_valid']:,} / test {c['rows_test']:,}"
    )
    notes = []
    if r.get("duplicate_rows_dropped"):
        notes.append(f"{r['duplicate_rows_dropped']:,} duplicate rows dropped")
    if r.get("filter_rounds"):
        dropped = sum(x["interactions_dropped"] for x in r["filter_rounds"])
        notes.append(f"filtering dropped {dropped:,} interactions in {len(r['filter_rounds'])} rounds")
    if r.get("items_missing_from_items_table"):
        notes.append(f"{r['items_missing_from_items_table']:,} items not in the items table (empty text)")
    by_dom = r.get("items_without_title_by_domain")
    if by_dom and any(by_dom.values()):
        notes.append("items without a title: " + ", ".join(f"{d} {n:,}" for d, n in by_dom.items()))
    elif r.get("items_without_title"):
        notes.append(f"{r['items_without_title']:,} items without a title")
    unseen = r.get("items_in_no_file_by_domain")
    if unseen and any(unseen.values()):
        notes.append("items in no sequence file: " + ", ".join(f"{d} {n:,}" for d, n in unseen.items()))
    if r.get("negatives"):
        notes.append(f"negatives: {r['negatives']}")
    for n in notes:
        err(f"  {n}")
    err(f"  details: {Path(out) / 'report.json'}; Table I: temacli data stats {out}")


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
        print_json(st)
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
