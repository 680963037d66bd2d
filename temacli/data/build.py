"""Building the dataset in memory (Sections III-A, IV-A): filter, index, order, split.

From a raw interaction log, vectorised with pyarrow/numpy:

1. read the log (CSV, TSV or Parquet) and the items table (:mod:`temacli.data.read`);
2. drop exact duplicate rows (counted);
3. filter until stable: users with fewer than ``min_user`` interactions in total or fewer than
   ``min_per_domain`` in either domain, items with fewer than ``min_item`` interactions;
4. index items (domain X: 0..nX-1, domain Y: nX..nX+nY-1, each domain sorted by item id) and users
   (sorted by user id); padding index = nX + nY;
5. sort each user's interactions by time with a *stable* sort (ties keep input order);
6. split chronologically: ``loo`` (leave-one-out per user) or ``c2dsr`` (one evaluation instance per
   user, users partitioned between validation and test);
7. describe the 999 negatives per evaluation row (:mod:`temacli.data.negatives`; drawn while writing).

The result is a :class:`Built`, which the importers (:mod:`temacli.data.formats`) produce too and
:mod:`temacli.data.write` writes.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from temacli.data.dataset import N_NEGATIVES, SPLITS
from temacli.data.negatives import NegativeSpec
from temacli.data.read import as_string, ids, read_any, require_columns, sorted_codes, timestamps, where_rows
from temacli.errors import TemacliError
from temacli.progress import SILENT, Progress

SPLIT_MODES = ("loo", "c2dsr")
BUILD_STEPS = (
    "dropping duplicates", "filtering users and items", "ordering sequences",
    "joining item titles", "splitting", "describing the negatives",
)
SEED_MAX = 2**63 - 1

# flag -> (option attribute, low, high, low inclusive, high inclusive): the allowed ranges of SplitOptions,
# checked before any work and quoted in the CLI's --help
RANGES = {
    "--min-user-interactions": ("min_user", 1, None, True, True),
    "--min-domain-interactions": ("min_per_domain", 0, None, True, True),
    "--min-item-interactions": ("min_item", 1, None, True, True),
    "--seed": ("seed", 0, SEED_MAX, True, True),
    "--valid-frac": ("valid_frac", 0.0, 1.0, False, False),
    "--eval-users-frac": ("eval_users_frac", 0.0, 1.0, False, True),
    "negatives": ("negatives", 1, None, True, True),
    "min_eval_history": ("min_eval_history", 1, None, True, True),
}


def range_text(flag: str) -> str:
    """The allowed range of a flag in words, e.g. 'an integer >= 1' or 'a number in (0, 1]'."""
    _, lo, hi, lo_in, hi_in = RANGES[flag]
    kind = "an integer" if isinstance(lo, int) else "a number"
    if hi is None or (flag == "--seed"):
        return f"{kind} >= {lo}" if lo_in else f"{kind} > {lo}"
    return f"{kind} in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def check_value(flag: str, value) -> None:
    """Refuse a value outside its flag's range: one line naming the flag, the value and the range."""
    _, lo, hi, lo_in, hi_in = RANGES[flag]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(lo, int) and not isinstance(value, int)):
        raise TemacliError(f"{flag} {value!r}: must be {range_text(flag)}")
    ok = (value >= lo if lo_in else value > lo) and (hi is None or (value <= hi if hi_in else value < hi))
    if not ok or value != value:  # NaN
        raise TemacliError(f"{flag} {value}: out of range; must be {range_text(flag)}")


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

    def check(self) -> None:
        """Every option in its range (one line naming the flag and the range), before any work."""
        if self.split not in SPLIT_MODES:
            raise TemacliError(f"--split '{self.split}': unknown; choose one of {', '.join(SPLIT_MODES)}")
        if len(self.domains) != 2 or self.domains[0] == self.domains[1]:
            raise TemacliError(
                f"--domains needs two different names (got {','.join(self.domains)}), e.g. food,kitchen"
            )
        for flag, (attr, *_rest) in RANGES.items():
            check_value(flag, getattr(self, attr))

    def params(self) -> dict:
        d = asdict(self)
        d["domains"] = list(self.domains)
        return d


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
    extra_counts: dict = field(default_factory=dict)  # more counts for the manifest (importers: missing files)


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

def split_table(user, user_ids, offsets, values, target, target_domain) -> pa.Table:
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
    progress: Progress = SILENT,
) -> Built:
    """A raw log (and optional items table) as a :class:`Built` dataset; reports its steps to ``progress``."""
    opts.check()

    def say(step: str) -> None:  # one step of BUILD_STEPS is done, the next begins
        if step != BUILD_STEPS[0]:
            progress.advance(1)

    # reading and checking the inputs comes first, so bad input is refused before any progress is shown
    log = read_any(interactions, "interactions", [opts.user_col, opts.item_col, opts.domain_col])
    require_columns(
        log,
        interactions,
        {opts.user_col: "--user-col", opts.item_col: "--item-col", opts.domain_col: "--domain-col", opts.time_col: "--time-col"},
    )
    n_raw = log.num_rows
    if n_raw == 0:
        raise TemacliError(f"{interactions}: the interaction log is empty")
    users_s = ids(log.column(opts.user_col), interactions, opts.user_col, "--user-col")
    items_s = ids(log.column(opts.item_col), interactions, opts.item_col, "--item-col")
    doms_s = ids(log.column(opts.domain_col), interactions, opts.domain_col, "--domain-col")
    ts = timestamps(log.column(opts.time_col), interactions, opts.time_col)

    # domains ---------------------------------------------------------------------------
    dom_enc = pc.dictionary_encode(doms_s).combine_chunks()
    labels = dom_enc.dictionary.to_pylist()
    unknown = [lab for lab in labels if lab not in opts.domains]
    if unknown:
        lab = unknown[0]
        first = where_rows(interactions, np.flatnonzero(pc.equal(doms_s, lab).to_numpy(zero_copy_only=False))[:1])
        raise TemacliError(
            f"{interactions}: domain label '{lab}' (first at {first}) is not one of --domains "
            f"{','.join(opts.domains)}; pass the labels used in column '{opts.domain_col}'"
        )
    lab_to_d = np.array([opts.domains.index(lab) for lab in labels], dtype=np.int8)
    dom = lab_to_d[dom_enc.indices.to_numpy(zero_copy_only=False)]

    items_tab = read_items_table(items_path, opts) if items_path is not None else None

    # duplicates (exact rows) ----------------------------------------------------------------
    progress.start(len(BUILD_STEPS), "building the dataset", unit="steps")
    say("dropping duplicates")
    user_code, user_uni = sorted_codes(users_s)
    # items are keyed by (domain, id): the same id in two domains is two items
    item_key = pc.binary_join_element_wise(pa.array(np.asarray(opts.domains, dtype=object)[dom]), items_s, "\x1f")
    item_code, item_uni = sorted_codes(item_key)
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
    items_table, item_report = _items_table(items_tab, kept_ids, n_x, n_y, opts)

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
        splits[name] = split_table(u, user_ids[u], off, vals, tgt, dom_of[tgt])

    # candidates ----------------------------------------------------------------------------
    say("describing the negatives")
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
    progress.advance(1)
    progress.finish()
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


def read_items_table(items_path: Path, opts: SplitOptions) -> pa.Table:
    """The items table, with its id and title columns present and no missing or blank item id."""
    tab = read_any(items_path, "items", [opts.item_id_col])
    require_columns(tab, items_path, {opts.item_id_col: "--item-id-col", opts.title_col: "--title-col"})
    ids(tab.column(opts.item_id_col), items_path, opts.item_id_col, "--item-id-col")
    return tab


def _items_table(tab: pa.Table | None, kept_ids, n_x, n_y, opts) -> tuple[pa.Table, dict]:
    n = n_x + n_y
    dom_names = np.asarray(opts.domains, dtype=object)
    domain_idx = np.concatenate([np.zeros(n_x, np.int8), np.ones(n_y, np.int8)])
    title = np.full(n, "", dtype=object)
    description = image = None
    found = np.zeros(n, dtype=bool)
    if tab is not None:
        table_ids = as_string(tab.column(opts.item_id_col)).to_pylist()
        tdom = tab.column(opts.domain_col).to_pylist() if opts.domain_col in tab.column_names else None
        titles = tab.column(opts.title_col).to_pylist()
        descs = tab.column(opts.description_col).to_pylist() if opts.description_col in tab.column_names else None
        imgs = tab.column(opts.image_col).to_pylist() if opts.image_col in tab.column_names else None
        key_to_row = {}
        for r, iid in enumerate(table_ids):
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
    missing_ids = np.asarray(kept_ids)[~found] if tab is not None else np.asarray(kept_ids)
    report = {
        "items_missing_from_items_table": int((~found).sum()) if tab is not None else n,
        "items_missing_examples": [str(x) for x in missing_ids[:20]],
        "items_without_title": int(no_title.sum()),
    }
    return pa.table(cols), report


