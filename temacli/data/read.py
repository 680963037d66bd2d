"""Reading raw inputs of ``data split``: CSV/TSV/Parquet tables, column checks, ids and timestamps.

Errors name the file, the line (CSV lines are counted as a text editor counts them, so a quoted field
that spans lines is accounted for) and what to do.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from temacli.errors import TemacliError

PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_any(path: Path, what: str, string_cols: list[str] | None = None) -> pa.Table:
    """A CSV, TSV or Parquet table; ``string_cols`` are read as strings (ids like ``007`` stay ids).

    Quoted CSV fields may contain newlines (a title written over two lines is one field).
    """
    if not path.exists():
        raise TemacliError(f"{path}: {what} file not found; check the path")
    if path.is_dir():
        raise TemacliError(f"{path}: is a folder, expected a {what} file (CSV or Parquet)")
    try:
        if is_parquet(path):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pacsv

        conv = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in (string_cols or [])},
            strings_can_be_null=False,
        )
        parse = pacsv.ParseOptions(delimiter=_delimiter(path), newlines_in_values=True)
        return pacsv.read_csv(path, parse_options=parse, convert_options=conv)
    except (pa.ArrowInvalid, OSError) as e:
        msg = str(e).splitlines()[0]
        raise TemacliError(f"{path}: cannot read the {what} file ({msg})") from None


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def where_rows(path: Path, rows: np.ndarray, limit: int = 5) -> str:
    """'file lines 4, 9' for a CSV (header = line 1), 'rows 3, 8' (1-based) for Parquet."""
    total = np.asarray(rows).size
    rows = [int(r) for r in np.asarray(rows)[:limit]]
    more = " …" if len(rows) < total else ""
    if is_parquet(path):
        return ("row " if len(rows) == 1 else "rows ") + ", ".join(str(r + 1) for r in rows) + more
    lines = file_lines(path, rows)
    return ("file line " if len(lines) == 1 else "file lines ") + ", ".join(str(x) for x in lines) + more


def file_lines(path: Path, rows: list[int]) -> list[int]:
    """The file line where each data row (0-based, after the header) starts.

    Only called on the error path: it re-reads the file with the csv module, which counts the lines
    a quoted field spans, up to the last row asked for.
    """
    want = set(rows)
    found: dict[int, int] = {}
    if not want:
        return []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=_delimiter(path))
        start = 1
        k = -1  # the header is record -1
        for record in reader:
            if not record:  # a blank line: pyarrow skips it too
                start = reader.line_num + 1
                continue
            if k in want:
                found[k] = start
                if len(found) == len(want):
                    break
            start = reader.line_num + 1
            k += 1
    return [found.get(r, r + 2) for r in rows]


def require_columns(table: pa.Table, path: Path, cols: dict[str, str]) -> None:
    """``cols`` maps a column name to the flag that overrides it."""
    for name, flag in cols.items():
        if name not in table.column_names:
            raise TemacliError(
                f"{path}: column '{name}' not found (columns: {', '.join(table.column_names)}); "
                f"name the right one with {flag}"
            )


def as_string(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    return pc.cast(arr, pa.string())


def ids(arr: pa.ChunkedArray, path: Path, col: str, flag: str) -> pa.ChunkedArray:
    """An id column as strings; a missing or blank (only spaces) id is refused with its first line."""
    s = as_string(arr)
    blank = pc.or_kleene(pc.is_null(s), pc.equal(pc.utf8_trim_whitespace(s), ""))
    blank = pc.fill_null(blank, True).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(blank)
    if bad.size:
        raise TemacliError(
            f"{path}: column '{col}' ({flag}) has {bad.size} missing or blank ids, the first at "
            f"{where_rows(path, bad[:1])}; fill or remove those rows"
        )
    return s


def timestamps(arr: pa.ChunkedArray, path: Path, col: str) -> np.ndarray:
    """Timestamps as float64 seconds; non-numeric or missing values are named by line."""
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        arr = pc.cast(pc.cast(arr, pa.timestamp("s")), pa.int64())
        t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(np.isnan(values)) if arr.null_count == 0 else np.flatnonzero(
            pc.is_null(arr, nan_is_null=True).to_numpy(zero_copy_only=False)
        )
    else:
        s = as_string(arr)
        parsed = pc.cast(pc.if_else(pc.match_substring_regex(s, r"^\s*[-+]?\d+(\.\d+)?\s*$"), s, None), pa.float64())
        values = parsed.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(pc.is_null(parsed).to_numpy(zero_copy_only=False))
    if bad.size:
        raise TemacliError(
            f"{path}: column '{col}' has {bad.size} missing or non-numeric timestamps "
            f"({where_rows(path, bad)}); timestamps must be Unix seconds (or a Parquet timestamp column)"
        )
    return values


def sorted_codes(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of each value in the sorted list of distinct values: (codes int64, uniques object)."""
    enc = pc.dictionary_encode(arr).combine_chunks()
    dictionary = enc.dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[enc.indices.to_numpy(zero_copy_only=False)]
    uniques = np.asarray(dictionary.take(pa.array(order)).to_pylist(), dtype=object)
    return codes.astype(np.int64), uniques
