"""Importer for the LLMCDSR published split (xhran2010/LLMCDSR, ``data/food-kitchen``).

Files: ``num.txt`` (nA, nB), ``items_A.tsv``/``items_B.tsv`` (index, asin, title),
``train_A.txt``/``train_B.txt``/``train_overlap.txt`` and ``valid.txt``/``test.txt`` with lines
``user<TAB>i1,i2,...`` (B items offset by nA). The publishers' split is kept: each line's last item
is its target; training lines become training rows the same way. User ids are prefixed by their file
(``A:1``, ``overlap:1``, ``valid:1``, ...) because each file numbers its users from 1.

Negatives follow the published protocol: 999 per row, uniform from the target's domain, *without*
replacement, excluding only the target (items of the user's history may be drawn), drawn once from
``seed`` (default 42) and stored. ``exclude_history=True`` (``--negatives-exclude-history``) also keeps
the user's history out: an easier protocol than the published one, for comparisons with tools that use it.

A published folder may lack training files (``train_A.txt``, ``train_B.txt``, ``train_overlap.txt``):
what is there is imported and the missing files are named in the report and the manifest's counts.
``valid.txt``, ``test.txt``, ``num.txt`` and both item files are required. Item files may have no titles
(``index<TAB>asin`` lines, or an empty third field): those items get an empty title, counted per domain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temacli.data.formats.common import check_range, default_domains, finish, sequences_table
from temacli.data.build import Built
from temacli.errors import TemacliError

TRAIN_FILES = (("train_A.txt", "A"), ("train_B.txt", "B"), ("train_overlap.txt", "overlap"))
EXCLUDE_HISTORY_DEFAULT = False  # the published rule: only the target is excluded
RULES = {
    False: "without replacement, excluding only the target (the published protocol)",
    True: "without replacement, excluding the target and the user's history (not the published protocol)",
}


def _read_lines(path: Path) -> tuple[list[str], list[np.ndarray]]:
    users, seqs = [], []
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                u, items = line.split("\t")
                seqs.append(np.array([int(x) for x in items.split(",")], dtype=np.int64))
            except ValueError:
                raise TemacliError(f"{path}: line {ln} is not 'user<TAB>i1,i2,...'") from None
            users.append(u)
    return users, seqs


def _read_items(path: Path, n: int) -> tuple[list[str], list[str]]:
    ids, titles = [""] * n, [""] * n
    with open(path) as f:
        header = f.readline()
        if not header.startswith("index"):
            raise TemacliError(f"{path}: expected a header 'index<TAB>asin<TAB>title'")
        for ln, line in enumerate(f, 2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            try:
                i = int(parts[0])
            except ValueError:
                raise TemacliError(f"{path}: line {ln}: index '{parts[0]}' is not an integer") from None
            if not 0 <= i < n:
                raise TemacliError(f"{path}: line {ln}: index {i} outside 0..{n - 1} (num.txt says {n} items)")
            ids[i] = parts[1]
            titles[i] = parts[2].strip() if len(parts) > 2 else ""
    missing = [i for i, x in enumerate(ids) if not x]
    for i in missing:
        ids[i] = f"#{i}"
    return ids, titles


def build(
    folder: Path, domains: tuple[str, str] | None, seed: int = 42, negatives: int = 999,
    exclude_history: bool = EXCLUDE_HISTORY_DEFAULT,
) -> Built:
    folder = Path(folder)
    if not folder.is_dir():
        raise TemacliError(f"{folder}: folder not found; give the LLMCDSR data folder (with num.txt)")
    need = ["num.txt", "items_A.tsv", "items_B.tsv", "valid.txt", "test.txt"]
    for name in need:
        if not (folder / name).is_file():
            raise TemacliError(f"{folder}: {name} not found; is this an LLMCDSR data folder?")
    nums = (folder / "num.txt").read_text().split()
    if len(nums) < 2:
        raise TemacliError(f"{folder / 'num.txt'}: expected two numbers (items of A, items of B)")
    try:
        n_x, n_y = int(nums[0]), int(nums[1])
    except ValueError:
        raise TemacliError(f"{folder / 'num.txt'}: expected two integers (items of A, items of B)") from None
    domains = default_domains(folder, domains)
    ids_x, titles_x = _read_items(folder / "items_A.tsv", n_x)
    ids_y, titles_y = _read_items(folder / "items_B.tsv", n_y)

    train_users, train_seqs, missing, by_file = [], [], [], {}
    for fname, prefix in TRAIN_FILES:
        p = folder / fname
        if not p.is_file():
            missing.append(fname)
            continue
        us, ss = _read_lines(p)
        check_range(ss, n_x + n_y, p)
        train_users += [f"{prefix}:{u}" for u in us]
        train_seqs += ss
        by_file[fname] = len(us)
    splits = {}
    offset = 0
    for name, fname in (("train", None), ("valid", "valid.txt"), ("test", "test.txt")):
        if name == "train":
            us, ss, p = train_users, train_seqs, folder / "train_*.txt"
        else:
            p = folder / fname
            us, ss = _read_lines(p)
            check_range(ss, n_x + n_y, p)
            us = [f"{name}:{u}" for u in us]
        splits[name] = sequences_table(us, ss, n_x, p, user_offset=offset)
        offset += len(us)
    return finish(
        "llmcdsr", folder, domains, (ids_x, ids_y), (titles_x, titles_y), splits, seed, negatives,
        replace=False, exclude_history=bool(exclude_history), missing=missing, rule=RULES[bool(exclude_history)],
        extra_report={"train_rows_by_file": by_file},
    )
