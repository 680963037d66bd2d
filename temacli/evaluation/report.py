"""Render evaluation results and comparisons as rich tables (terminal) or Markdown (docs).

Every rendering starts with the lines that say what the numbers mean: model, data, split,
protocol and candidate set (with fingerprints), and ends with what was skipped, if anything.
Metric values are shown in percent, as in the paper's tables; JSON keeps fractions.
"""

from __future__ import annotations

from typing import Any

from temacli.errors import TemacliError
from temacli.evaluation.metrics import LLMCDSR_KS

METRIC_COLUMNS = ("MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10")
LAYOUTS = ("paper", "llmcdsr")
LLMCDSR_COLUMNS = tuple(f"NDCG@{k}" for k in LLMCDSR_KS) + tuple(f"HR@{k}" for k in LLMCDSR_KS)
DIAG_COLUMNS = ("tied %", "NaN cand.")


def metric_columns(result: dict, layout: str = "paper") -> tuple[str, ...]:
    """The metric columns of a result's table: all its metrics (``paper``), or LLMCDSR's
    NDCG@k and HR@k for k in 1, 3, 5, 10 (``llmcdsr``; no MRR, as that paper reports none)."""
    if layout not in LAYOUTS:
        raise TemacliError(f"--layout {layout}: choose one of {', '.join(LAYOUTS)}")
    have = tuple(result.get("metric_names") or METRIC_COLUMNS)
    if layout == "paper":
        return have
    missing = [c for c in LLMCDSR_COLUMNS if c not in have]
    if missing:
        raise TemacliError(
            f"the LLMCDSR layout needs {', '.join(missing)}, which this result lacks; "
            f"evaluate with --ks {','.join(map(str, LLMCDSR_KS))}"
        )
    return LLMCDSR_COLUMNS


def _diag_cells(result: dict, name: str) -> list[str]:
    g = (result.get("diagnostics") or {}).get(name)
    if not g:
        return ["—", "—"]
    return [pct(g.get("tied_share")), str(g.get("nan_candidate_scores", 0))]


def _slice_columns(result: dict) -> tuple[str, ...]:
    have = tuple(result.get("metric_names") or METRIC_COLUMNS)
    ndcg = [c for c in have if c.startswith("NDCG@")][-2:]
    hr = [c for c in have if c.startswith("HR@")][-1:]
    return ("MRR", *ndcg, *hr)


def short_fp(fp: str | None) -> str:
    """A fingerprint as tables show it: its first 12 hex digits (``none`` when absent)."""
    return "none" if fp is None else fp.split(":", 1)[-1][:12]


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100.0 * v:.2f}"


def header_lines(result: dict) -> list[str]:
    m = result["model"]
    lines = [
        f"model: {m.get('path') or m.get('name')} ({m.get('kind')}, weights {short_fp(m.get('fingerprint'))})",
        f"data: {result['data']['path']} (dataset {short_fp(result['data']['fingerprint'])})",
        f"split: {result['split']}   protocol: {result['protocol']}"
        + (f" ({'history excluded' if result['exclude_history'] else 'history included'})"
           if result["protocol"] == "full" else ""),
        f"candidates: {short_fp(result['candidates']['fingerprint'])}: {result['candidates']['description']}",
    ]
    return lines


def footer_lines(result: dict) -> list[str]:
    inst = result["instances"]
    lines = [f"instances: {inst['evaluated']} of {inst['total']} evaluated"]
    for reason, info in inst["skipped"].items():
        shown = ", ".join(info["user_ids"][:5]) + (f" … {info['n'] - 5} more (see --json)" if info["n"] > 5 else "")
        lines.append(f"skipped ({reason}): {info['n']}: users {shown}")
    nan = inst["nan_score"]
    if nan["n"]:
        lines.append(f"target scored NaN (ranked last, not skipped): {nan['n']}: users {', '.join(nan['user_ids'][:5])}")
    if inst.get("history_truncated"):
        lines.append(f"histories longer than the model's max_len {inst['max_len']} (oldest items cut): "
                     f"{inst['history_truncated']}")
    for w in result.get("warnings") or []:
        lines.append(w)
    t = result.get("timing") or {}
    if t.get("scoring_seconds") is not None:
        lines.append(f"scored in {t['scoring_seconds']:.2f}s on {t.get('device')} "
                     f"({t.get('instances_per_second')} instances/s)")
    return lines


def _metric_rows(result: dict) -> list[tuple[str, dict]]:
    doms = list(result["data"]["domains"])
    return [(d, result["metrics"][d]) for d in doms + ["all"]]


def _slice_rows(result: dict) -> list[tuple[str, str, dict]]:
    out = []
    for group, slices in result["slices"].items():
        for label, per in slices.items():
            for d in list(result["data"]["domains"]) + ["all"]:
                out.append((f"{group}: {label}", d, per[d]))
    return out


# ----------------------------------------------------------------------------- rich
def result_renderables(result: dict, slices: bool = True, layout: str = "paper") -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    cols = metric_columns(result, layout)
    out: list[Any] = [Text("\n".join(header_lines(result)), style="dim")]
    title = f"{result['protocol']} protocol, {result['split']} split (metrics in %"
    title += ", LLMCDSR's layout)" if layout == "llmcdsr" else ")"
    # at most 6 metric columns per table, so the table fits an 80-column terminal
    groups = [cols] if len(cols) <= 6 else [
        tuple(c for c in cols if not c.startswith("HR@")), tuple(c for c in cols if c.startswith("HR@"))]
    out.append(Text(title, style="italic"))  # a line of its own: a table title wraps at the table's width
    for group in groups:
        t = Table()
        t.add_column("target domain")
        t.add_column("n", justify="right")
        for c in group:
            t.add_column(c, justify="right")
        for name, m in _metric_rows(result):
            t.add_row(name, str(m["n"]), *(pct(m[c]) for c in group), style="bold" if name == "all" else None)
        out.append(t)
    if result.get("diagnostics"):
        dg = Table(title="diagnostics (tied: the target ties with at least one candidate)", title_justify="left")
        for c in ("target domain", "n", "tied %", "tied", "NaN cand.", "NaN target"):
            dg.add_column(c, justify="left" if c == "target domain" else "right")
        for name, _ in _metric_rows(result):
            g = result["diagnostics"][name]
            dg.add_row(name, str(g["n"]), pct(g["tied_share"]), str(g["tied_targets"]),
                       str(g["nan_candidate_scores"]), str(g["nan_target_scores"]))
        out.append(dg)
    if slices:
        s = Table(title="slices (metrics in %)", title_justify="left")
        scols = _slice_columns(result)
        for c in ("slice", "domain", "n", *scols):
            s.add_column(c, justify="right" if c not in ("slice", "domain") else "left")
        for label, d, m in _slice_rows(result):
            s.add_row(label, d, str(m["n"]), *(pct(m[c]) for c in scols))
        out.append(s)
    out.append(Text("\n".join(footer_lines(result)), style="dim"))
    return out


def compare_renderables(cmp: dict) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    doms = list(cmp["data"]["domains"])
    head = [
        f"data: dataset {short_fp(cmp['data']['fingerprint'])}   split: {cmp['split']}   protocol: {cmp['protocol']}"
        + (f" ({'history excluded' if cmp['exclude_history'] else 'history included'})"
           if cmp["protocol"] == "full" else ""),
        f"candidates: {short_fp(cmp['candidates']['fingerprint'])}: {cmp['candidates']['description']}",
        "n per domain: " + ", ".join(f"{d} {cmp['rows'][0]['n'][d]}" for d in doms),
    ]
    # one table for all domains when it fits 80 columns, else one table per domain
    groups = [doms] if len(doms) * len(cmp["metrics"]) <= 6 else [[d] for d in doms]
    tables: list[Any] = [Text("comparison (metrics in %, best in bold)", style="italic")]
    for group in groups:
        t = Table(title=None if len(groups) == 1 else f"target domain {group[0]}", title_justify="left")
        t.add_column("model")
        t.add_column("kind")
        for d in group:
            for k in cmp["metrics"]:
                t.add_column(f"{d}\n{k}" if len(groups) == 1 else k, justify="right")
        for i, row in enumerate(cmp["rows"]):
            cells = []
            for d in group:
                for k in cmp["metrics"]:
                    v = pct(row["values"][d][k])
                    cells.append(Text(v, style="bold") if i in cmp["best"][d][k] else Text(v))
            t.add_row(row["model"], str(row["kind"]), *cells)
        tables.append(t)
    models = [f"{r['model']}: {r['path']} (weights {short_fp(r['fingerprint'])})" for r in cmp["rows"]]
    models += list(cmp.get("warnings") or [])
    return [Text("\n".join(head), style="dim"), *tables, Text("\n".join(models), style="dim")]


# ----------------------------------------------------------------------------- markdown
def _md_table(header: list[str], rows: list[list[str]], align_right_from: int = 1) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i < align_right_from else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def result_markdown(result: dict, slices: bool = True, layout: str = "paper") -> str:
    cols = metric_columns(result, layout)
    parts = ["\n".join(f"- {line}" for line in header_lines(result)), ""]
    rows = [[name, str(m["n"]), *(pct(m[c]) for c in cols), *_diag_cells(result, name)]
            for name, m in _metric_rows(result)]
    parts.append(_md_table(["target domain", "n", *(f"{c} %" for c in cols), *DIAG_COLUMNS], rows))
    if slices:
        scols = _slice_columns(result)
        srows = [[label, d, str(m["n"]), *(pct(m[c]) for c in scols)] for label, d, m in _slice_rows(result)]
        parts += ["", _md_table(["slice", "domain", "n", *(f"{c} %" for c in scols)], srows, 2)]
    parts += ["", "\n".join(f"- {line}" for line in footer_lines(result))]
    return "\n".join(parts) + "\n"


def compare_markdown(cmp: dict) -> str:
    doms = list(cmp["data"]["domains"])
    header = ["model", "kind"] + [f"{d} {k} %" for d in doms for k in cmp["metrics"]]
    rows = []
    for i, row in enumerate(cmp["rows"]):
        cells = []
        for d in doms:
            for k in cmp["metrics"]:
                v = pct(row["values"][d][k])
                cells.append(f"**{v}**" if i in cmp["best"][d][k] else v)
        rows.append([row["model"], str(row["kind"]), *cells])
    head = [
        f"- split: {cmp['split']}, protocol: {cmp['protocol']}"
        + (f" ({'history excluded' if cmp['exclude_history'] else 'history included'})"
           if cmp["protocol"] == "full" else ""),
        f"- dataset {short_fp(cmp['data']['fingerprint'])}, candidates {short_fp(cmp['candidates']['fingerprint'])}: "
        f"{cmp['candidates']['description']}",
        "- n per domain: " + ", ".join(f"{d} {cmp['rows'][0]['n'][d]}" for d in doms),
    ]
    models = "\n".join([f"- {r['model']}: {r['path']} (weights {short_fp(r['fingerprint'])})" for r in cmp["rows"]]
                       + [f"- {w}" for w in cmp.get("warnings") or []])
    return "\n".join(head) + "\n\n" + _md_table(header, rows, 2) + "\n\n" + models + "\n"
