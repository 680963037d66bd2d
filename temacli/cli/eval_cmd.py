"""``temacli eval``: metrics of a trained model under the sampled or full protocol; ``--compare``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from temacli.cli._console import console
from temacli.cli._options import DEVICE_HELP, Layout, Protocol, Split
from temacli.evaluation.checks import BATCH_RANGE, CHUNK_RANGE, COLD_RANGE, MAX_K


def eval_cmd(
    runs: Optional[List[Path]] = typer.Argument(
        None, help="With --compare: model folders and/or result JSON files (from --json or --out)."
    ),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder written by `temacli train`."),
    data: Optional[Path] = typer.Option(
        None, "--data", "-d", help="Dataset folder; default: the one recorded in the model's manifest."
    ),
    split: Split = typer.Option(Split.test, "--split", case_sensitive=False, help="The split to evaluate: test or valid."),
    protocol: Protocol = typer.Option(
        Protocol.sampled, "--protocol", "-p", case_sensitive=False,
        help="sampled: the target among the split's stored 999 negatives (C2DSR); "
        "full: the target among all items of its domain.",
    ),
    keep_history: bool = typer.Option(
        False, "--keep-history",
        help="Full protocol: keep the user's own history items as candidates (default: they are excluded).",
    ),
    ks: Optional[str] = typer.Option(
        None, "--ks",
        help=f"Cutoffs: NDCG@k and HR@k for each k, comma-separated integers from 1 to {MAX_K}, e.g. 1,3,5,10 "
        "(default: NDCG@5,10 and HR@1,5,10; with --layout llmcdsr: 1,3,5,10). MRR is always reported.",
    ),
    layout: Layout = typer.Option(
        Layout.paper, "--layout", case_sensitive=False,
        help="Table layout: paper (MRR, NDCG@k, HR@k per target domain) or llmcdsr (NDCG@k and HR@k for "
        "k in 1,3,5,10 per domain, as LLMCDSR reports them).",
    ),
    compare: bool = typer.Option(
        False, "--compare", help="Compare several runs in one table (rows = models, best in bold)."
    ),
    recompute: bool = typer.Option(
        False, "--recompute",
        help="--compare: evaluate every model folder again instead of reusing the result saved in it.",
    ),
    metrics: Optional[str] = typer.Option(
        None, "--metrics",
        help="--compare: metric columns per domain, e.g. MRR,NDCG@10,HR@10 (MRR, NDCG@k, HR@k; default "
        "MRR,NDCG@5,NDCG@10; with --layout llmcdsr NDCG@k and HR@k for k in 1,3,5,10).",
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", help=f"Instances encoded per forward pass ({BATCH_RANGE[0]} to {BATCH_RANGE[1]})."
    ),
    chunk_size: int = typer.Option(
        32768, "--chunk-size", help=f"Full protocol: items scored per chunk ({CHUNK_RANGE[0]} to {CHUNK_RANGE[1]})."
    ),
    cold_threshold: int = typer.Option(
        5, "--cold-threshold",
        help=f"A target is cold when it occurs at most this often in train ({COLD_RANGE[0]} to {COLD_RANGE[1]}).",
    ),
    weights: str = typer.Option(
        "model.safetensors", "--weights", metavar="FILE|per-domain",
        help="Weight file in the model folder (default model.safetensors), or per-domain: each domain's targets ranked by that domain's "
        "best-validation weights model.<domain>.safetensors (C2DSR's and LLMCDSR's selection; written by "
        "`train --early-stop mrr|hr@K|ndcg@K`).",
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON (fractions, not %)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print Markdown tables (for docs)."),
    no_slices: bool = typer.Option(False, "--no-slices", help="Leave the slice table out of the printout."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also save the result JSON here (with a manifest); an existing file needs --force."),
    force: bool = typer.Option(False, "--force", help="Replace the file already at --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or notes on stderr (warnings stay)."),
) -> None:
    """Evaluate a trained model: MRR, NDCG@k and HR@k per target domain, with diagnostics and slices.

    Every table and JSON names the protocol, split, candidate-set fingerprint and model; instances that cannot be scored are counted and named, never dropped silently; ties and NaN scores are counted. The result is also saved in the model folder (MODEL/eval/), where --compare finds it.

    Example: temacli eval --model runs/fk/model --data runs/fk/data --split test

    Example: temacli eval --model runs/fk/model --protocol full --json > m.json

    Example: temacli eval --model runs/fk/model --weights per-domain --layout llmcdsr

    Example: temacli eval --compare runs/fk/model runs/fk/sasrec runs/fk/gru4rec
    """
    from temacli.cli._console import RichProgress, err
    from temacli.cli._json import print_json
    from temacli.errors import TemacliError
    from temacli.evaluation import cache
    from temacli.evaluation import compare as cmp_mod
    from temacli.evaluation import evaluate as ev
    from temacli.evaluation import report
    from temacli.artifacts import check_output
    from temacli.evaluation.checks import check_device, check_eval_options
    from temacli.evaluation.metrics import LLMCDSR_KS, metric_names

    # every option value and output path is checked before any model is loaded
    split, protocol, layout = split.value, protocol.value, layout.value
    if json_out and markdown:
        raise TemacliError("choose one of --json and --markdown")
    if layout not in report.LAYOUTS:
        raise TemacliError(f"--layout {layout}: choose one of {', '.join(report.LAYOUTS)}")
    if ks is None and layout == "llmcdsr":
        ks = ",".join(map(str, LLMCDSR_KS))
    ks_t = check_eval_options(split, protocol, batch_size, chunk_size, cold_threshold, ks)
    check_device(device)
    if layout == "llmcdsr":
        missing = [k for k in LLMCDSR_KS if k not in ks_t]
        if missing:
            raise TemacliError(f"--layout llmcdsr needs k = {','.join(map(str, LLMCDSR_KS))}; add "
                               f"{','.join(map(str, missing))} to --ks")
    if out is not None:
        check_output(out, "file", "--out")
        if out.exists() and not force:
            raise TemacliError(f"{out} exists; pass --force to replace it, or choose another --out")
    if recompute and not compare:
        raise TemacliError("--recompute goes with --compare (a plain eval always evaluates)")
    opts = dict(split=split, protocol=protocol, exclude_history=not keep_history, batch_size=batch_size,
                chunk_size=chunk_size, cold_threshold=cold_threshold, device=device, weights=weights, ks=ks_t)

    def warn(result: dict) -> None:
        for w in result.get("warnings") or []:
            err(f"{(result.get('model') or {}).get('name', '')}: {w}" if compare else w)

    if compare:
        if metrics is not None:
            metric_cols = cmp_mod.parse_metrics(metrics)  # fail before any evaluation runs
        elif layout == "llmcdsr":
            metric_cols = report.LLMCDSR_COLUMNS
        elif ks_t is not None:
            metric_cols = ("MRR", *(f"NDCG@{k}" for k in ks_t))
        else:
            metric_cols = cmp_mod.COMPARE_METRICS
        if any(p.is_dir() for p in list(runs or []) + ([model] if model is not None else [])):
            missing = [c for c in metric_cols if c not in metric_names(ks_t)]
            if missing:  # the models evaluated now would not have these columns
                raise TemacliError(f"--metrics {','.join(metric_cols)}: {', '.join(missing)} not among the cutoffs "
                                   f"evaluated; add their k to --ks")
        paths = list(runs or []) + ([model] if model is not None else [])
        if len(paths) < 2:
            raise TemacliError("--compare needs at least two runs: model folders or result JSON files")
        for p in paths:  # check every run before evaluating any
            if not (p.is_file() or p.is_dir()):
                raise TemacliError(f"{p}: neither a model folder nor a result JSON file")
        results = [ev.read_result(p) if p.is_file() else None for p in paths]
        for i, p in enumerate(paths):
            if results[i] is None:
                results[i], note = cache.evaluate_cached(p, data, recompute=recompute,
                                                         progress=RichProgress(enabled=not quiet), **opts)
                if not quiet:
                    err(f"{p}: {note}")
        for r in results:
            warn(r)
        table = cmp_mod.comparison(results, tuple(metric_cols))
        if out is not None:
            cmp_mod.write_comparison(table, results, out)
        if json_out:
            print_json({**table, "results": results})
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
    result = ev.evaluate(model, data, progress=RichProgress(enabled=not quiet), **opts)
    saved = cache.save(result, model)
    if not quiet:
        err(f"saved in {saved}" if saved else f"note: {model} is not writable; the result was not saved there")
    warn(result)
    if out is not None:
        ev.write_result(result, out)
    if json_out:
        print_json(result)
    elif markdown:
        sys.stdout.write(report.result_markdown(result, slices=not no_slices, layout=layout))
    else:
        for r in report.result_renderables(result, slices=not no_slices, layout=layout):
            console.print(r)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
