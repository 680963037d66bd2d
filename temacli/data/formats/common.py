"""Shared pieces of the importers: turning parsed sequences into the dataset's tables."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow as pa

from temacli.data.build import Built, split_table
from temacli.data.negatives import NegativeSpec
from temacli.errors import TemacliError


def default_domains(folder: Path, given: tuple[str, str] | None) -> tuple[str, str]:
    """``--domains`` if given, else the last two dash-separated words of the folder name, else A,B.

    A trailing word that names the copy rather than a domain (``-partial``, ``-full``) is skipped.
    """
    if given:
        return given
    parts = folder.resolve().name.split("-")
    while len(parts) >= 3 and parts[-1] in ("partial", "full", "sample", "small"):
        parts = parts[:-1]
    if len(parts) >= 3 and parts[-1] != parts[-2]:
        return (parts[-2], parts[-1])
    return ("A", "B")


def sequences_table(
    user_ids: list[str], seqs: list[np.ndarray], n_x: int, path: Path, user_offset: int = 0
) -> pa.Table:
    """Rows whose target is each sequence's last item and history all items before it."""
    users = np.arange(user_offset, user_offset + len(seqs), dtype=np.int64)
    lens = np.array([len(s) - 1 for s in seqs], dtype=np.int64)
    if (lens < 1).any():
        bad = int(np.flatnonzero(lens < 1)[0])
        raise TemacliError(f"{path}: line {bad + 1} has fewer than 2 items (no history before its target)")
    flat = np.concatenate(seqs) if seqs else np.array([], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]) if seqs else np.array([], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1])
    values = flat[idx]
    target = flat[starts + lens]
    return split_table(users, np.asarray(user_ids, dtype=object), offsets, values, target, (target >= n_x).astype(np.int8))


def items_table(domains, ids_x, ids_y, titles_x, titles_y) -> pa.Table:
    n_x, n_y = len(ids_x), len(ids_y)
    dom_idx = np.concatenate([np.zeros(n_x, np.int8), np.ones(n_y, np.int8)])
    return pa.table(
        {
            "item": pa.array(np.arange(n_x + n_y, dtype=np.int32)),
            "item_id": pa.array(list(ids_x) + list(ids_y), type=pa.string()),
            "domain": pa.array([domains[d] for d in dom_idx], type=pa.string()),
            "domain_idx": pa.array(dom_idx),
            "title": pa.array([html.unescape(t) for t in list(titles_x) + list(titles_y)], type=pa.string()),
        }
    )


def check_range(seqs: list[np.ndarray], n_items: int, path: Path) -> None:
    for i, s in enumerate(seqs):
        if s.size and (s.min() < 0 or s.max() >= n_items):
            raise TemacliError(f"{path}: line {i + 1} has item index {int(s.max())} outside 0..{n_items - 1}")


def finish(
    fmt: str, folder: Path, domains: tuple[str, str], ids: tuple[list, list], titles: tuple[list, list],
    splits: dict, seed: int, negatives: int, replace: bool, exclude_history: bool, missing: list[str], rule: str,
    extra_report: dict | None = None,
) -> Built:
    """Candidates, report and the Built dataset of an importer (negatives as the publisher's protocol).

    The report and the manifest's counts both name the missing files, the items without a title per
    domain and the items that occur in no file.
    """
    n_x, n_y = len(ids[0]), len(ids[1])
    candidates = {
        name: NegativeSpec.for_split(splits[name], n_x, n_y, negatives, replace, exclude_history)
        for name in ("valid", "test")
    }
    seen = np.zeros(n_x + n_y, dtype=bool)
    for t in splits.values():
        if t.num_rows:
            seen[np.asarray(t.column("history").combine_chunks().values)] = True
            seen[t.column("target").to_numpy()] = True
    untitled = [int(sum(1 for t in titles[d] if not t)) for d in (0, 1)]
    unseen = [int((~seen[:n_x]).sum()), int((~seen[n_x:]).sum())]
    report = {
        "format": fmt,
        "source": str(folder),
        "missing_files": missing,
        "items_without_title": untitled[0] + untitled[1],
        "items_without_title_by_domain": dict(zip(domains, untitled)),
        "items_in_no_file_by_domain": dict(zip(domains, unseen)),
        "rows": {k: v.num_rows for k, v in splits.items()},
        **(extra_report or {}),
        "negatives": f"{negatives} per row, target's domain, {rule}",
    }
    extra_counts = {
        "missing_files": list(missing),
        "items_without_title": report["items_without_title_by_domain"],
        "items_in_no_file": report["items_in_no_file_by_domain"],
    }
    return Built(
        domains=domains, items=items_table(domains, ids[0], ids[1], titles[0], titles[1]), n_x=n_x, n_y=n_y,
        splits=splits, candidates=candidates, seed=seed, report=report, extra_counts=extra_counts,
    )
