"""``temacli recommend``: top-k items for one user (screen or JSON) or many (Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from temacli.cli._console import console, err
from temacli.cli._json import print_json
from temacli.cli._options import DEVICE_HELP


def _short(fp: str | None) -> str:
    return "none" if fp is None else fp.split(":", 1)[-1][:12]


def _title(t: str) -> str:
    """Titles as people read them: HTML entities of the raw data (&amp;) decoded."""
    import html

    return html.unescape(t) if t else "(no title)"


def _print_user(res: dict, ident: dict, explain: bool, k: int) -> None:
    from rich.table import Table
    from rich.text import Text

    from temacli.recommend import HISTORY_SHOWN

    head = (
        f"user {res['user_id']} (index {res['user']}, history from the {res['source']} split)\n"
        f"model: {ident['model']['path']} ({ident['model']['kind']})   "
        f"data: {ident['data']['path']} (dataset {_short(ident['data']['fingerprint'])})"
    )
    console.print(Text(head, style="dim"))
    hist = res["history"]
    h = Table(title=f"recent history ({min(len(hist), HISTORY_SHOWN)} of {len(hist)}, newest last; "
                    f"the model sees the last {res['history_used']})", title_justify="left")
    h.add_column("#", justify="right")
    h.add_column("domain")
    h.add_column("item")
    h.add_column("title")
    for j, it in enumerate(hist[-HISTORY_SHOWN:], start=len(hist) - min(len(hist), HISTORY_SHOWN) + 1):
        h.add_row(str(j), it["domain"], it["item_id"], _title(it["title"]))
    console.print(h)
    ho = res["held_out"]
    if ho is not None:
        rank = (f"rank {ho['rank']} of {ho['of'] + 1} {res['domain']} items" if ho.get("rank")
                else f"a {ho['domain']} item, not ranked among {res['domain']} items")
        console.print(Text(f"held-out next item: {ho['item_id']} '{_title(ho['title'])}' ({ho['domain']}): {rank}",
                           style="dim"))
    excl = ("items the user has are included" if res["include_seen"]
            else f"{res['excluded_seen']} items the user has are excluded")
    t = Table(title=f"top {k} {res['domain']} items ({excl})", title_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("item")
    t.add_column("title")
    t.add_column("score", justify="right")
    t.add_column("top tags")
    for x in res["recommendations"]:
        cells = [str(x["rank"]), x["item_id"], _title(x["title"]), f"{x['score']:.4g}",
                 ", ".join(x["tags"]) or "—"]
        t.add_row(*cells, style="bold" if ho is not None and x["item"] == ho["item"] else None)
    console.print(t)
    if explain and res["recommendations"]:
        mods = list(res["recommendations"][0]["by_modality"])
        branches = list(res["recommendations"][0]["by_branch"])
        e = Table(title="why: each modality's and each sequence branch's share of the score, in % "
                        "(--json has the raw parts)", title_justify="left")
        e.add_column("rank", justify="right")
        e.add_column("score", justify="right")
        for m in mods:
            e.add_column(m, justify="right", style="cyan")
        for b in branches:
            e.add_column(b, justify="right", style="magenta")

        def share(v: float, total: float) -> str:
            return f"{100.0 * v / total:.1f}" if total else "—"

        for x in res["recommendations"]:
            e.add_row(str(x["rank"]), f"{x['score']:.4g}", *(share(x["by_modality"][m], x["score"]) for m in mods),
                      *(share(x["by_branch"][b], x["score"]) for b in branches))
        console.print(e)
        console.print(Text(f"score = {' + '.join(mods)} = {' + '.join(branches)}  (each group sums to 100%)",
                           style="dim"))


def recommend_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder written by `temacli train`."),
    data: Optional[Path] = typer.Option(
        None, "--data", "-d", help="Dataset folder; default: the one recorded in the model's manifest."
    ),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="A user: the raw user id; when no raw id matches and it is an integer, the dataset's user index. The first output line says which."),
    users_file: Optional[Path] = typer.Option(None, "--users-file", help="Batch: one user id per line."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Batch: Parquet file to write (with a manifest); an existing file needs --force."),
    force: bool = typer.Option(False, "--force", help="Batch: replace the file already at --out."),
    k: int = typer.Option(10, "--k", "-k", help="Number of items to recommend."),
    domain: Optional[str] = typer.Option(
        None, "--domain", help="Domain to recommend from (name, X or Y); default: the domain of the next expected item."
    ),
    include_seen: bool = typer.Option(False, "--include-seen", help="Also recommend items the user already has."),
    all_history: bool = typer.Option(
        False, "--all-history", help="Use every known interaction, the held-out next item included."
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Show each modality's and each branch's (X, Y, X+Y) share of every score."
    ),
    tags: Optional[Path] = typer.Option(
        None, "--tags", help="item_tags.parquet for the top tags; default: the one recorded by the model."
    ),
    skip_unknown: bool = typer.Option(
        False, "--skip-unknown", help="Batch: skip unknown user ids (counted and named in the manifest)."
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Recommend items: a user's recent history, then the top-k items of the target domain.

    Example: temacli recommend --model runs/fk/model --data runs/fk/data --user A2X9Q3 --k 10 --explain

    Example: temacli recommend --model runs/fk/model --users-file users.txt --out recs.parquet
    """
    from temacli.errors import TemacliError
    from temacli.recommend import Recommender, read_users_file, recommend_batch

    if (user is None) == (users_file is None):
        raise TemacliError("pass exactly one of --user ID and --users-file FILE")
    if users_file is not None and out is None:
        raise TemacliError("--users-file needs --out recs.parquet")
    if user is not None and out is not None:
        raise TemacliError("--out is for --users-file; for one user use --json")
    if out is not None and out.exists() and not force:
        raise TemacliError(f"{out} exists; pass --force to replace it, or choose another --out")
    users = read_users_file(users_file) if users_file is not None else None  # fail fast, before loading
    rec = Recommender.open(model, data, device=device, tags=tags)
    for note in rec.notes:
        err(f"note: {note}")
    kw = dict(k=k, domain=domain, include_seen=include_seen, explain=explain, all_history=all_history)
    if users is not None:
        m = recommend_batch(rec, users, out, skip_unknown=skip_unknown, **kw)
        summary = {"out": str(out), **m["counts"], "unknown_user_ids": m["unknown_users"]}
        if json_out:
            print_json(summary)
        else:
            err(f"wrote {m['counts']['rows']} rows for {m['counts']['users']} users to {out}"
                + (f"; skipped {len(m['unknown_users'])} unknown: {', '.join(m['unknown_users'][:5])}"
                   if m["unknown_users"] else ""))
        return
    user_id, how = rec.lookup(user)
    res = rec.recommend([user_id], **kw)[0]
    res["user_lookup"] = {"given": user, "as": "raw id" if user_id == user.strip() else "user index", "line": how}
    ident = rec.identity()
    if json_out:
        err(how)
        print_json({**ident, **res})
    else:
        console.print(how, highlight=False, markup=False)
        _print_user(res, ident, explain, k)


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend_cmd)
