"""Importer for the C2DSR text format (cjx96/C2DSR).

Files: ``Alist.txt``/``Blist.txt`` (``orig_id<TAB>asin<TAB>index``; the index is within the domain,
or global for B in some mirrors: both are accepted), ``userlist.txt`` (``orig_user<TAB>index``),
``traindata_new.txt``, ``validdata_new.txt``, ``testdata_new.txt`` with lines
``user<TAB>seq_id<TAB>item|unix_ts|datetime|<TAB>...`` (B items offset by nA), and optionally
``titles_a.tsv``/``titles_b.tsv`` (``index<TAB>asin<TAB>title``).

Each line is sorted by timestamp with a *stable* sort (ties keep file order) and the chronologically
last item is the target; the file's own last field is not the target. A folder without some of the
files (this repository's copy has no training file) imports what is there and names what is missing.
Negatives follow C2DSR: 999 per row from the target's domain, with replacement, excluding only the
target, drawn once from ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from temacli.data.formats.common import check_range, default_domains, finish, sequences_table
from temacli.data.build import Built
from temacli.errors import TemacliError

SEQ_FILES = (("train", "traindata_new.txt"), ("valid", "validdata_new.txt"), ("test", "testdata_new.txt"))


def _tab_rows(path: Path, min_fields: int, short: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each line with at least ``min_fields`` tab-separated fields.

    Blank lines are skipped; any other shorter line is refused: "line N ``short``".
    """
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= min_fields:
                yield ln, fields
            elif line.strip():
                raise TemacliError(f"{path}: line {ln} {short}")


def _int(text: str, path: Path, ln: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TemacliError(f"{path}: line {ln}: {what} '{text}' is not an integer") from None


def _read_list(path: Path) -> list[str]:
    rows = [(_int(parts[2], path, ln, "index"), parts[1]) for ln, parts in _tab_rows(path, 3, "is not 'orig_id<TAB>asin<TAB>index'")]
    n = len(rows)
    base = min(i for i, _ in rows) if rows else 0
    ids = [""] * n
    for i, asin in rows:
        j = i - base
        if not 0 <= j < n:
            raise TemacliError(f"{path}: index {i} outside {base}..{base + n - 1}")
        ids[j] = asin
    return ids


def _read_titles(path: Path, n: int) -> list[str]:
    titles = [""] * n
    if not path.is_file():
        return titles
    with open(path) as f:
        f.readline()
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3 and parts[0].isdigit() and int(parts[0]) < n:
                titles[int(parts[0])] = parts[2].strip()
    return titles


def _read_sequences(path: Path, users_by_index: dict[int, str]) -> tuple[list[str], list[np.ndarray]]:
    users, seqs = [], []
    for ln, fields in _tab_rows(path, 3, "has no interactions"):
        items, times = [], []
        for fld in fields[2:]:
            if not fld:
                continue
            parts = fld.split("|")
            try:
                items.append(int(parts[0]))
                times.append(int(parts[1]))
            except (ValueError, IndexError):
                raise TemacliError(f"{path}: line {ln}: field '{fld}' is not 'item|unix_ts|datetime|'") from None
        order = np.argsort(np.asarray(times), kind="stable")  # ties keep file order
        seqs.append(np.asarray(items, dtype=np.int64)[order])
        u = _int(fields[0], path, ln, "user")
        users.append(users_by_index.get(u, f"user#{u}"))
    return users, seqs


def build(folder: Path, domains: tuple[str, str] | None, seed: int = 42, negatives: int = 999) -> Built:
    folder = Path(folder)
    if not folder.is_dir():
        raise TemacliError(f"{folder}: folder not found; give the C2DSR data folder (with Alist.txt)")
    for name in ("Alist.txt", "Blist.txt"):
        if not (folder / name).is_file():
            raise TemacliError(f"{folder}: {name} not found; is this a C2DSR data folder?")
    domains = default_domains(folder, domains)
    ids_x = _read_list(folder / "Alist.txt")
    ids_y = _read_list(folder / "Blist.txt")
    n_x, n_y = len(ids_x), len(ids_y)
    users_by_index: dict[int, str] = {}
    if (folder / "userlist.txt").is_file():
        path = folder / "userlist.txt"
        for ln, parts in _tab_rows(path, 2, "is not 'orig_user<TAB>index'"):
            users_by_index[_int(parts[1], path, ln, "index")] = parts[0]
    missing = [fname for _, fname in SEQ_FILES if not (folder / fname).is_file()]
    if all(f in missing for f in ("validdata_new.txt", "testdata_new.txt")):
        raise TemacliError(f"{folder}: neither validdata_new.txt nor testdata_new.txt found; nothing to import")
    splits = {}
    offset = 0
    for name, fname in SEQ_FILES:
        p = folder / fname
        us, ss = _read_sequences(p, users_by_index) if p.is_file() else ([], [])
        check_range(ss, n_x + n_y, p)
        splits[name] = sequences_table(us, ss, n_x, p, user_offset=offset)
        offset += len(us)
    titles_x = _read_titles(folder / "titles_a.tsv", n_x)
    titles_y = _read_titles(folder / "titles_b.tsv", n_y)
    return finish(
        "c2dsr", folder, domains, (ids_x, ids_y), (titles_x, titles_y), splits, seed, negatives,
        replace=True, exclude_history=False, missing=missing, rule="with replacement, excluding only the target",
    )
