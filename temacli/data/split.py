"""``data split``: from a raw interaction log to the cross-domain dataset (Sections III-A, IV-A).

Steps, all vectorised with pyarrow/numpy:

1. read the log (CSV or Parquet) and the items table; check columns, domains and timestamps;
2. drop exact duplicate rows (counted);
3. filter until stable: users with fewer than ``min_user`` interactions in total or fewer than
   ``min_per_domain`` in either domain, items with fewer than ``min_item`` interactions;
4. index items (domain X: 0..nX-1, domain Y: nX..nX+nY-1, each domain sorted by item id) and users
   (sorted by user id); padding index = nX + nY;
5. sort each user's interactions by time with a *stable* sort (ties keep input order);
6. split chronologically: ``loo`` (leave-one-out per user) or ``c2dsr`` (one evaluation instance per
   user, users partitioned between validation and test);
7. draw 999 negatives per evaluation row from the target's domain (never the target), once, from a seed;
8. write the dataset folder atomically (see :mod:`temacli.data.dataset`) with stats, report, manifest.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from temacli import artifacts
from temacli.data.dataset import ITEMS, N_NEGATIVES, SPLIT, SPLITS, STAGE
from temacli.errors import TemacliError

SPLIT_MODES = ("loo", "c2dsr")


@dataclass
class SplitOptions:
    domains: tuple[str, str]
    split: str = "loo"
    min_user: int = 10
    min_per_domain: int = 3
    min_item: int = 1
    seed: int = 42
    negatives: int = N_NEGATIVES
    negatives_replace: bool = True
    negatives_exclude_history: bool = False
    valid_frac: float = 0.5  # c2dsr: share of evaluation users that go to validation
    eval_users_frac: float = 1.0  # c2dsr: share of users that get an evaluation instance
    min_eval_history: int = 1  # c2dsr: an evaluation user needs at least this many items before the target
    user_col: str = "user_id"
    item_col: str = "item_id"
    domain_col: str = "domain"
    time_col: str = "timestamp"
    item_id_col: str = "item_id"
    title_col: str = "title"
    description_col: str = "description"
    image_col: str = "image"

    def params(self) -> dict:
        d = asdict(self)
        d["domains"] = list(self.domains)
        return d


# ----------------------------------------------------------------------------- reading
def _read_any(path: Path, what: str, string_cols: list[str] | None = None) -> pa.Table:
    if not path.exists():
        raise TemacliError(f"{path}: {what} file not found; check the path")
    if path.is_dir():
        raise TemacliError(f"{path}: is a folder, expected a {what} file (CSV or Parquet)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pacsv

        conv = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in (string_cols or [])},
            strings_can_be_null=False,
        )
        delim = "\t" if suffix in (".tsv", ".tab") else ","
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim), convert_options=conv)
    except pa.ArrowInvalid as e:
        msg = str(e).splitlines()[0]
        raise TemacliError(f"{path}: cannot read the {what} file ({msg})") from None


def _require_columns(table: pa.Table, path: Path, cols: dict[str, str]) -> None:
    """``cols`` maps a column name to the flag that overrides it."""
    for name, flag in cols.items():
        if name not in table.column_names:
            raise TemacliError(
                f"{path}: column '{name}' not found (columns: {', '.join(table.column_names)}); "
                f"name the right one with {flag}"
            )


def _as_string(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    return pc.cast(arr, pa.string())


def _timestamps(arr: pa.ChunkedArray, path: Path, col: str) -> np.ndarray:
    """Timestamps as float64 seconds; non-numeric or missing values are named by row."""
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
        s = _as_string(arr)
        parsed = pc.cast(pc.if_else(pc.match_substring_regex(s, r"^\s*[-+]?\d+(\.\d+)?\s*$"), s, None), pa.float64())
        values = parsed.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(pc.is_null(parsed).to_numpy(zero_copy_only=False))
    if bad.size:
        rows = ", ".join(str(int(r) + 2) for r in bad[:5]) + (" …" if bad.size > 5 else "")
        raise TemacliError(
            f"{path}: column '{col}' has {bad.size} missing or non-numeric timestamps "
            f"(file lines {rows}); timestamps must be Unix seconds (or a Parquet timestamp column)"
        )
    return values


def _sorted_codes(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of each value in the sorted list of distinct values: (codes int64, uniques object)."""
    enc = pc.dictionary_encode(arr).combine_chunks()
    dictionary = enc.dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[enc.indices.to_numpy(zero_copy_only=False)]
    uniques = np.asarray(dictionary.take(pa.array(order)).to_pylist(), dtype=object)
    return codes.astype(np.int64), uniques


# ----------------------------------------------------------------------------- core
@dataclass
class NegativeSpec:
    """How to draw one split's negatives; drawn while writing, streamed to disk in chunks."""

    target: np.ndarray
    lo: np.ndarray
    size: np.ndarray
    n: int = N_NEGATIVES
    replace: bool = True
    history: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def for_targets(
        cls, target: np.ndarray, n_x: int, n_y: int, n: int = N_NEGATIVES, replace: bool = True,
        history: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> "NegativeSpec":
        """Negatives from each target's own domain (X: ``[0, n_x)``, Y: ``[n_x, n_x + n_y)``)."""
        target = np.asarray(target, dtype=np.int64)
        in_y = target >= n_x
        return cls(target, np.where(in_y, n_x, 0), np.where(in_y, n_y, n_x), n, replace=replace, history=history)

    @classmethod
    def for_split(cls, table: pa.Table, n_x: int, n_y: int, n: int = N_NEGATIVES, replace: bool = True,
                  exclude_history: bool = False) -> "NegativeSpec":
        """The same for a split table (its ``target`` and, to exclude them, ``history`` columns)."""
        history = None
        if exclude_history:
            hist = table.column("history").combine_chunks()
            history = (np.asarray(hist.offsets, dtype=np.int64), np.asarray(hist.values, dtype=np.int64))
        return cls.for_targets(table.column("target").to_numpy(), n_x, n_y, n, replace, history)

    def draw(self, rng: np.random.Generator, sink=None):
        return sample_negatives(
            self.target, self.lo, self.size, self.n, rng, replace=self.replace, history=self.history, sink=sink
        )


@dataclass
class Built:
    """A dataset in memory, before writing: what both ``data split`` and the importers produce."""

    domains: tuple[str, str]
    items: pa.Table
    n_x: int
    n_y: int
    splits: dict[str, pa.Table]
    candidates: dict[str, NegativeSpec]  # drawn in the order valid, test from one Generator(seed)
    seed: int
    report: dict = field(default_factory=dict)


def filter_log(
    user: np.ndarray, item: np.ndarray, dom: np.ndarray, n_users: int, n_items: int, opts: SplitOptions
) -> tuple[np.ndarray, list[dict]]:
    """Repeat the user and item filters until nothing changes. Returns the kept mask and a log."""
    keep = np.ones(user.shape[0], dtype=bool)
    rounds = []
    while True:
        u, i, d = user[keep], item[keep], dom[keep]
        total = np.bincount(u, minlength=n_users)
        per_x = np.bincount(u[d == 0], minlength=n_users)
        per_y = np.bincount(u[d == 1], minlength=n_users)
        icount = np.bincount(i, minlength=n_items)
        bad_user = (total < opts.min_user) | (per_x < opts.min_per_domain) | (per_y < opts.min_per_domain)
        bad_item = icount < opts.min_item
        bad_user &= total > 0
        bad_item &= icount > 0
        drop = bad_user[user] | bad_item[item]
        new_keep = keep & ~drop
        removed = int(keep.sum() - new_keep.sum())
        if removed == 0:
            break
        rounds.append(
            {
                "users_dropped": int(bad_user.sum()),
                "items_dropped": int(bad_item.sum()),
                "interactions_dropped": removed,
            }
        )
        keep = new_keep
    return keep, rounds


def _filter_reason(user, item, dom, n_users, n_items, opts) -> str:
    total = np.bincount(user, minlength=n_users)
    per_x = np.bincount(user[dom == 0], minlength=n_users)
    per_y = np.bincount(user[dom == 1], minlength=n_users)
    present = total > 0
    if not (present & (total >= opts.min_user)).any():
        return f"no user has at least {opts.min_user} interactions (--min-user-interactions)"
    if not (present & (per_x >= opts.min_per_domain) & (per_y >= opts.min_per_domain)).any():
        return (
            f"no user has at least {opts.min_per_domain} interactions in both domains "
            "(--min-domain-interactions)"
        )
    return (
        f"the filters together (users >= {opts.min_user} in total and >= {opts.min_per_domain} per domain, "
        f"items >= {opts.min_item}) remove every interaction"
    )


def sample_negatives(
    target: np.ndarray,
    lo: np.ndarray,
    size: np.ndarray,
    n: int,
    rng: np.random.Generator,
    replace: bool = True,
    history: tuple[np.ndarray, np.ndarray] | None = None,
    chunk: int = 8192,
    sink: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray | None:
    """``n`` negatives per row, uniform over ``[lo, lo+size)`` minus the target (and history if given).

    Vectorised: draws are re-drawn where they hit an excluded item (or repeat one, without
    replacement) until every row is valid. ``history`` is (offsets, values) of each row's history.
    """
    rows = target.shape[0]
    out = np.empty((rows, n), dtype=np.int32) if sink is None else None
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        t = target[start:stop].astype(np.int64)
        l = lo[start:stop].astype(np.int64)
        s = size[start:stop].astype(np.int64)
        free = s - 1
        if history is not None:
            off, vals = history
            hist_keys = _history_keys(off, vals, start, stop, l, s)
        else:
            hist_keys = None
        if (free < n).any() and not replace:
            raise TemacliError(
                f"a domain has only {int(free.min())} items besides the target; "
                f"cannot draw {n} negatives without replacement"
            )
        if (free < 1).any():
            raise TemacliError("a domain has a single item; no negatives can be drawn")
        draw = _draw(rng, t, l, free, (stop - start, n))
        for _ in range(50):
            bad = _invalid(draw, hist_keys, replace)
            if not bad.any():
                break
            r, c = np.nonzero(bad)
            draw[r, c] = _draw(rng, t[r], l[r], free[r], (r.size,))
        else:
            # crowded rows (history covers most of a domain): draw them exactly from what is allowed
            for r in np.flatnonzero(_invalid(draw, hist_keys, replace).any(axis=1)):
                allowed = np.arange(l[r], l[r] + s[r], dtype=np.int64)
                allowed = allowed[allowed != t[r]]
                if hist_keys is not None:
                    allowed = allowed[~np.isin((np.int64(r) << 32) | allowed, hist_keys)]
                if allowed.size == 0 or (not replace and allowed.size < n):
                    raise TemacliError(
                        f"cannot draw {n} negatives for evaluation row {start + r}: its history covers "
                        "almost all of its domain; drop --negatives-exclude-history or allow replacement"
                    )
                draw[r] = rng.choice(allowed, size=n, replace=replace)
        if sink is None:
            out[start:stop] = draw
        else:
            sink(draw.astype(np.int32))
    return out


def _invalid(draw, hist_keys, replace):
    bad = np.zeros(draw.shape, dtype=bool)
    if hist_keys is not None:
        keys = (np.arange(draw.shape[0], dtype=np.int64)[:, None] << 32) | draw
        bad |= np.isin(keys, hist_keys)
    if not replace:
        bad |= _duplicates(draw)
    return bad


def _draw(rng, t, l, free, shape):
    """Uniform over the domain minus the target: draw from free = size-1 slots, skip the target."""
    if len(shape) == 2:
        u = rng.random(shape)
        x = l[:, None] + np.floor(u * free[:, None]).astype(np.int64)
        return x + (x >= t[:, None])
    u = rng.random(shape)
    x = l + np.floor(u * free).astype(np.int64)
    return x + (x >= t)


def _duplicates(draw: np.ndarray) -> np.ndarray:
    order = np.argsort(draw, axis=1, kind="stable")
    s = np.take_along_axis(draw, order, axis=1)
    dup_sorted = np.zeros_like(s, dtype=bool)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    out = np.zeros_like(dup_sorted)
    np.put_along_axis(out, order, dup_sorted, axis=1)
    return out


def _history_keys(off, vals, start, stop, lo, size) -> np.ndarray:
    seg = vals[off[start] : off[stop]].astype(np.int64)
    lens = np.diff(off[start : stop + 1])
    row = np.repeat(np.arange(stop - start, dtype=np.int64), lens)
    in_dom = (seg >= np.repeat(lo, lens)) & (seg < np.repeat(lo + size, lens))
    return np.unique((row[in_dom] << 32) | seg[in_dom])


def _split_table(user, user_ids, offsets, values, target, target_domain) -> pa.Table:
    hist = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values.astype(np.int32)))
    return pa.table(
        {
            "user": pa.array(user.astype(np.int32)),
            "user_id": pa.array(user_ids, type=pa.string()),
            "history": hist,
            "target": pa.array(target.astype(np.int32)),
            "target_domain": pa.array(target_domain.astype(np.int8)),
        }
    )


def build_from_log(
    interactions: Path,
    items_path: Path | None,
    opts: SplitOptions,
    progress: Callable[[str], None] | None = None,
) -> Built:
    say = progress or (lambda s: None)
    if opts.split not in SPLIT_MODES:
        raise TemacliError(f"unknown split '{opts.split}'; choose one of {', '.join(SPLIT_MODES)}")
    if len(opts.domains) != 2 or opts.domains[0] == opts.domains[1]:
        raise TemacliError(f"--domains needs two different names (got {','.join(opts.domains)}), e.g. food,kitchen")
    say("reading the interaction log")
    log = _read_any(interactions, "interactions", [opts.user_col, opts.item_col, opts.domain_col])
    _require_columns(
        log,
        interactions,
        {opts.user_col: "--user-col", opts.item_col: "--item-col", opts.domain_col: "--domain-col", opts.time_col: "--time-col"},
    )
    n_raw = log.num_rows
    if n_raw == 0:
        raise TemacliError(f"{interactions}: the interaction log is empty")
    for c in (opts.user_col, opts.item_col, opts.domain_col):
        if log.column(c).null_count:
            bad = np.flatnonzero(pc.is_null(log.column(c)).to_numpy(zero_copy_only=False))
            raise TemacliError(
                f"{interactions}: column '{c}' is empty on {bad.size} rows (file lines "
                f"{', '.join(str(int(r) + 2) for r in bad[:5])}); fill or remove them"
            )
    users_s = _as_string(log.column(opts.user_col))
    items_s = _as_string(log.column(opts.item_col))
    doms_s = _as_string(log.column(opts.domain_col))
    ts = _timestamps(log.column(opts.time_col), interactions, opts.time_col)

    # domains ---------------------------------------------------------------------------
    dom_enc = pc.dictionary_encode(doms_s).combine_chunks()
    labels = dom_enc.dictionary.to_pylist()
    unknown = [lab for lab in labels if lab not in opts.domains]
    if unknown:
        lab = unknown[0]
        first = int(np.flatnonzero(pc.equal(doms_s, lab).to_numpy(zero_copy_only=False))[0]) + 2
        raise TemacliError(
            f"{interactions}: domain label '{lab}' (first at file line {first}) is not one of --domains "
            f"{','.join(opts.domains)}; pass the labels used in column '{opts.domain_col}'"
        )
    lab_to_d = np.array([opts.domains.index(lab) for lab in labels], dtype=np.int8)
    dom = lab_to_d[dom_enc.indices.to_numpy(zero_copy_only=False)]

    # duplicates (exact rows) ----------------------------------------------------------------
    say("dropping duplicates")
    user_code, user_uni = _sorted_codes(users_s)
    # items are keyed by (domain, id): the same id in two domains is two items
    item_key = pc.binary_join_element_wise(pa.array(np.asarray(opts.domains, dtype=object)[dom]), items_s, "\x1f")
    item_code, item_uni = _sorted_codes(item_key)
    n = n_raw
    order = np.lexsort((ts, item_code, user_code))
    u_o, i_o, t_o = user_code[order], item_code[order], ts[order]
    dup_sorted = np.zeros(n, dtype=bool)
    dup_sorted[1:] = (u_o[1:] == u_o[:-1]) & (i_o[1:] == i_o[:-1]) & (t_o[1:] == t_o[:-1])
    dup = np.zeros(n, dtype=bool)
    dup[order] = dup_sorted  # the later copy (in file order: lexsort is stable) is the duplicate
    n_dup = int(dup.sum())
    rows = np.flatnonzero(~dup)
    user_code, item_code, dom, ts = user_code[rows], item_code[rows], dom[rows], ts[rows]

    # filter -----------------------------------------------------------------------------
    say("filtering users and items")
    keep, rounds = filter_log(user_code, item_code, dom, len(user_uni), len(item_uni), opts)
    if not keep.any():
        raise TemacliError(
            f"{interactions}: filtering leaves no data: "
            + _filter_reason(user_code, item_code, dom, len(user_uni), len(item_uni), opts)
        )
    user_code, item_code, dom, ts = user_code[keep], item_code[keep], dom[keep], ts[keep]

    # index items: X first then Y, each sorted by id ---------------------------------------
    item_dom = np.zeros(len(item_uni), dtype=np.int8)
    item_dom[item_code] = dom
    present = np.zeros(len(item_uni), dtype=bool)
    present[item_code] = True
    x_codes = np.flatnonzero(present & (item_dom == 0))
    y_codes = np.flatnonzero(present & (item_dom == 1))
    n_x, n_y = len(x_codes), len(y_codes)
    new_index = np.full(len(item_uni), -1, dtype=np.int64)
    new_index[x_codes] = np.arange(n_x)
    new_index[y_codes] = n_x + np.arange(n_y)
    item_idx = new_index[item_code]
    kept_keys = np.concatenate([item_uni[x_codes], item_uni[y_codes]])
    kept_ids = np.array([k.split("\x1f", 1)[1] for k in kept_keys], dtype=object)

    # index users (sorted by id) -----------------------------------------------------------
    u_present = np.unique(user_code)
    u_new = np.full(len(user_uni), -1, dtype=np.int64)
    u_new[u_present] = np.arange(len(u_present))
    user_idx = u_new[user_code]
    user_ids = user_uni[u_present]

    # stable time order per user ------------------------------------------------------------
    say("ordering sequences")
    order = np.lexsort((ts, user_idx))  # stable: equal timestamps keep input order
    seq_items = item_idx[order].astype(np.int32)
    seq_users = user_idx[order]
    counts = np.bincount(seq_users, minlength=len(user_ids))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    # items table ---------------------------------------------------------------------------
    say("joining item titles")
    items_table, item_report = _items_table(items_path, kept_ids, n_x, n_y, opts)

    # split ---------------------------------------------------------------------------------
    say("splitting")
    rng = np.random.default_rng([opts.seed, 1])  # the c2dsr user partition (negatives use opts.seed)
    dom_of = np.concatenate([np.zeros(n_x, np.int8), np.ones(n_y, np.int8)])
    users_all = np.arange(len(user_ids))
    if opts.split == "loo":
        parts = {
            "test": _rows(starts, counts, seq_items, users_all, cut=1),
            "valid": _rows(starts, counts, seq_items, users_all, cut=2),
            "train": _rows(starts, counts, seq_items, users_all, cut=3),
        }
    else:
        eval_mask = rng.random(len(user_ids)) < opts.eval_users_frac
        eval_mask &= counts >= opts.min_eval_history + 1
        to_valid = rng.random(len(user_ids)) < opts.valid_frac
        valid_users = users_all[eval_mask & to_valid]
        test_users = users_all[eval_mask & ~to_valid]
        train_users_eval = users_all[eval_mask]
        train_users_only = users_all[~eval_mask]
        # evaluation users train on everything before their target; training-only users on all
        tr_a = _rows(starts, counts, seq_items, train_users_eval, cut=2)
        tr_b = _rows(starts, counts, seq_items, train_users_only, cut=1)
        parts = {
            "test": _rows(starts, counts, seq_items, test_users, cut=1),
            "valid": _rows(starts, counts, seq_items, valid_users, cut=1),
            "train": _concat_rows(tr_a, tr_b),
        }
    splits = {}
    for name in SPLITS:
        u, off, vals, tgt = parts[name]
        splits[name] = _split_table(u, user_ids[u], off, vals, tgt, dom_of[tgt])

    # candidates ----------------------------------------------------------------------------
    say("drawing negatives")
    candidates = {}
    for name in ("valid", "test"):
        u, off, vals, tgt = parts[name]
        candidates[name] = NegativeSpec.for_targets(
            tgt, n_x, n_y, opts.negatives, replace=opts.negatives_replace,
            history=(off, vals) if opts.negatives_exclude_history else None,
        )

    report = {
        "raw_interactions": n_raw,
        "duplicate_rows_dropped": n_dup,
        "filter_rounds": rounds,
        "interactions_kept": int(seq_items.size),
        "users_kept": int(len(user_ids)),
        "users_raw": int(len(user_uni)),
        "items_raw": int(len(item_uni)),
        **item_report,
    }
    return Built(
        domains=tuple(opts.domains), items=items_table, n_x=n_x, n_y=n_y, splits=splits,
        candidates=candidates, seed=opts.seed, report=report,
    )


def _rows(starts, counts, flat, users, cut):
    """For each user: target at position len-cut, history before it (users too short are skipped)."""
    users = np.asarray(users, dtype=np.int64)
    lens = counts[users] - cut  # history length
    ok = lens >= 1
    users, lens = users[ok], lens[ok]
    st = starts[users]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.repeat(st - offsets[:-1], lens) + np.arange(offsets[-1])
    values = flat[idx]
    target = flat[st + lens]
    return users, offsets, values, target


def _concat_rows(a, b):
    ua, oa, va, ta = a
    ub, ob, vb, tb = b
    order = np.argsort(np.concatenate([ua, ub]), kind="stable")
    users = np.concatenate([ua, ub])
    lens = np.concatenate([np.diff(oa), np.diff(ob)])
    offs_src = np.concatenate([oa[:-1], ob[:-1] + va.size])
    vals = np.concatenate([va, vb])
    tg = np.concatenate([ta, tb])
    users, lens, offs_src, tg = users[order], lens[order], offs_src[order], tg[order]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.repeat(offs_src - offsets[:-1], lens) + np.arange(offsets[-1])
    return users, offsets, vals[idx], tg


def _items_table(items_path, kept_ids, n_x, n_y, opts) -> tuple[pa.Table, dict]:
    n = n_x + n_y
    dom_names = np.asarray(opts.domains, dtype=object)
    domain_idx = np.concatenate([np.zeros(n_x, np.int8), np.ones(n_y, np.int8)])
    title = np.full(n, "", dtype=object)
    description = image = None
    found = np.zeros(n, dtype=bool)
    if items_path is not None:
        tab = _read_any(items_path, "items", [opts.item_id_col])
        _require_columns(tab, items_path, {opts.item_id_col: "--item-id-col", opts.title_col: "--title-col"})
        ids = _as_string(tab.column(opts.item_id_col)).to_pylist()
        tdom = tab.column(opts.domain_col).to_pylist() if opts.domain_col in tab.column_names else None
        titles = tab.column(opts.title_col).to_pylist()
        descs = tab.column(opts.description_col).to_pylist() if opts.description_col in tab.column_names else None
        imgs = tab.column(opts.image_col).to_pylist() if opts.image_col in tab.column_names else None
        key_to_row = {}
        for r, iid in enumerate(ids):
            key_to_row[(tdom[r] if tdom is not None else None, iid)] = r
        if descs is not None:
            description = np.full(n, None, dtype=object)
        if imgs is not None:
            image = np.full(n, None, dtype=object)
        for j in range(n):
            d = dom_names[domain_idx[j]]
            r = key_to_row.get((d, kept_ids[j]) if tdom is not None else (None, kept_ids[j]))
            if r is None:
                continue
            found[j] = True
            title[j] = html.unescape(titles[r] or "").strip()  # raw Amazon titles carry "&amp;" etc.
            if descs is not None:
                description[j] = descs[r]
            if imgs is not None:
                image[j] = imgs[r]
    cols = {
        "item": pa.array(np.arange(n, dtype=np.int32)),
        "item_id": pa.array(kept_ids, type=pa.string()),
        "domain": pa.array(dom_names[domain_idx], type=pa.string()),
        "domain_idx": pa.array(domain_idx),
        "title": pa.array(title, type=pa.string()),
    }
    if description is not None:
        cols["description"] = pa.array(description, type=pa.string())
    if image is not None:
        cols["image"] = pa.array(image, type=pa.string())
    no_title = np.array([not t for t in title])
    missing_ids = np.asarray(kept_ids)[~found] if items_path is not None else np.asarray(kept_ids)
    report = {
        "items_missing_from_items_table": int((~found).sum()) if items_path is not None else n,
        "items_missing_examples": [str(x) for x in missing_ids[:20]],
        "items_without_title": int(no_title.sum()),
    }
    return pa.table(cols), report


# ----------------------------------------------------------------------------- stats
def compute_stats(built_or_splits, domains, n_x, n_y) -> dict:
    """Table I per domain: items, training targets, valid/test targets, average sequence length."""
    splits = built_or_splits
    stats: dict = {"domains": {}, "users": 0}
    users = set()
    total_len = 0.0
    n_seq = 0
    for name, t in splits.items():
        td = t.column("target_domain").to_numpy()
        lens = np.diff(np.asarray(t.column("history").combine_chunks().offsets)) if t.num_rows else np.array([])
        users.update(t.column("user").to_numpy().tolist())
        if name == "train":
            hist = t.column("history").combine_chunks()
            vals = np.asarray(hist.values) if t.num_rows else np.array([], dtype=np.int32)
            # every item of a training sequence after its first is a next-item target
            seq_dom = np.concatenate([(vals >= n_x).astype(np.int8), td]) if t.num_rows else np.array([])
            stats["train_sequences"] = int(t.num_rows)
            stats["train_interactions"] = int(vals.size + t.num_rows)
            for d, dn in enumerate(domains):
                stats["domains"].setdefault(dn, {})["train_interactions"] = int((seq_dom == d).sum())
                stats["domains"][dn]["train_targets"] = int((td == d).sum())
        else:
            for d, dn in enumerate(domains):
                stats["domains"].setdefault(dn, {})[f"{name}_targets"] = int((td == d).sum())
            if t.num_rows:
                total_len += float((lens + 1).sum())
                n_seq += t.num_rows
            stats[f"{name}_rows"] = int(t.num_rows)
    for d, dn in enumerate(domains):
        stats["domains"].setdefault(dn, {})["items"] = n_x if d == 0 else n_y
    stats["users"] = len(users)
    stats["avg_eval_sequence_length"] = round(total_len / n_seq, 2) if n_seq else 0.0
    if "train_sequences" in stats and stats["train_sequences"]:
        stats["avg_train_sequence_length"] = round(stats["train_interactions"] / stats["train_sequences"], 2)
    return stats


# ----------------------------------------------------------------------------- writing
def write_dataset(
    built: Built,
    out: Path,
    stage: str,
    params: dict,
    inputs: dict,
    force: bool = False,
) -> dict:
    """Write the dataset folder atomically; refuse to replace a different dataset without ``force``."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise TemacliError(f"{out}: exists and is not a folder; choose another --out")
        mp = artifacts.manifest_path(out)
        if mp.is_file():
            try:
                old = artifacts.read_json(mp)
            except TemacliError:
                old = {}
            same = old.get("params") == params and {
                k: v.get("fingerprint") for k, v in old.get("inputs", {}).items()
            } == {k: v.get("fingerprint") for k, v in inputs.items()}
            if not same and not force:
                raise TemacliError(
                    f"{out}: already holds a different dataset (other inputs or parameters); "
                    "pass --force to replace it or choose another --out"
                )
        elif any(out.iterdir()) and not force:
            raise TemacliError(f"{out}: folder is not empty and holds no temacli dataset; pass --force or choose another --out")
    stats = compute_stats(built.splits, built.domains, built.n_x, built.n_y)
    with artifacts.atomic_dir(out, replace=True) as tmp:
        artifacts.write_table(built.items, tmp / "items.parquet", ITEMS)
        for name in SPLITS:
            artifacts.write_table(built.splits[name], tmp / f"{name}.parquet", SPLIT)
        rng = np.random.default_rng(built.seed)
        for name in ("valid", "test"):
            _write_negatives(built.candidates[name], rng, tmp / f"candidates_{name}.npy")
        artifacts.write_json(stats, tmp / "stats.json")
        artifacts.write_json(built.report, tmp / "report.json")
        outputs = {
            "items": {"path": "items.parquet", "fingerprint": artifacts.fingerprint(tmp / "items.parquet"),
                      "rows": built.items.num_rows},
        }
        for name in SPLITS:
            outputs[name] = {"path": f"{name}.parquet", "fingerprint": artifacts.fingerprint(tmp / f"{name}.parquet"),
                             "rows": built.splits[name].num_rows}
        for name in ("valid", "test"):
            p = tmp / f"candidates_{name}.npy"
            outputs[f"candidates_{name}"] = {"path": p.name, "fingerprint": artifacts.fingerprint(p),
                                             "shape": [len(built.candidates[name].target), built.candidates[name].n]}
        counts = {
            "domains": list(built.domains),
            "n_items_x": built.n_x,
            "n_items_y": built.n_y,
            "n_users": stats["users"],
            **{f"rows_{s}": built.splits[s].num_rows for s in SPLITS},
        }
        manifest = artifacts.build_manifest(
            stage, params, inputs=inputs, outputs=outputs, counts=counts,
            dataset_fingerprint=artifacts.fingerprint(tmp),
            padding_index=built.n_x + built.n_y,
        )
        artifacts.write_manifest(tmp, manifest)
    return manifest


def _write_negatives(spec: NegativeSpec, rng: np.random.Generator, path: Path) -> None:
    """Stream the draw into an NPY file chunk by chunk (memory stays bounded for big logs)."""
    shape = (len(spec.target), spec.n)
    with artifacts.atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int32)), "fortran_order": False, "shape": shape}
        )
        spec.draw(rng, sink=lambda chunk: f.write(np.ascontiguousarray(chunk, dtype=np.int32).tobytes()))


def split_dataset(
    interactions: str | os.PathLike,
    items: str | os.PathLike | None,
    out: str | os.PathLike,
    opts: SplitOptions,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """``temacli data split`` as a library call. Returns the written manifest."""
    interactions = Path(interactions)
    items_path = Path(items) if items is not None else None
    built = build_from_log(interactions, items_path, opts, progress)
    inputs = {"interactions": artifacts.input_record(interactions)}
    if items_path is not None:
        inputs["items"] = artifacts.input_record(items_path)
    m = write_dataset(built, Path(out), STAGE, {"format": "log", **opts.params()}, inputs, force=force)
    m["report"] = built.report
    return m


IMPORT_FORMATS = ("llmcdsr", "c2dsr")


def import_dataset(
    fmt: str,
    folder: str | os.PathLike,
    out: str | os.PathLike,
    domains: tuple[str, str] | None = None,
    seed: int = 42,
    force: bool = False,
) -> dict:
    """``temacli data split --format llmcdsr|c2dsr FOLDER``: import a published split."""
    folder = Path(folder)
    if fmt == "llmcdsr":
        from temacli.data.formats import llmcdsr as mod
    elif fmt == "c2dsr":
        from temacli.data.formats import c2dsr as mod
    else:
        raise TemacliError(f"unknown --format '{fmt}'; choose log, {', '.join(IMPORT_FORMATS)}")
    built = mod.build(folder, domains, seed=seed)
    inputs = {}
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f.is_file():
            inputs[f.name] = artifacts.input_record(f)
    params = {"format": fmt, "domains": list(built.domains), "seed": seed, "negatives": N_NEGATIVES}
    m = write_dataset(built, Path(out), STAGE, params, inputs, force=force)
    m["report"] = built.report
    return m
