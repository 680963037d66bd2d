"""`data split`: filtering, ordering, indexing, splitting, candidates, bad input, importers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from temacli import artifacts
from temacli.data.dataset import Dataset
from temacli.data.split import SplitOptions, split_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_log(path: Path, rows, header=("user_id", "item_id", "domain", "timestamp")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def user_rows(user, n_x, n_y, t0=100, prefix=""):
    """A user with n_x food and n_y kitchen interactions at increasing times."""
    rows = []
    t = t0
    for k in range(n_x):
        rows.append((user, f"{prefix}f{k % 7}", "food", t))
        t += 1
    for k in range(n_y):
        rows.append((user, f"{prefix}k{k % 9}", "kitchen", t))
        t += 1
    return rows


@pytest.fixture
def small_log(tmp_path):
    rows = []
    for u in range(12):
        rows += user_rows(f"u{u:02d}", 7, 9, t0=1000 + u)
    rows += user_rows("short", 4, 5)  # 9 in total: dropped
    rows += user_rows("onesided", 10, 2)  # 2 kitchen: dropped
    log = write_log(tmp_path / "log.csv", rows)
    items = tmp_path / "items.csv"
    with open(items, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("item_id", "domain", "title"))
        for k in range(7):
            w.writerow((f"f{k}", "food", f"Food item {k}"))
        for k in range(8):  # k8 is missing from the items table
            w.writerow((f"k{k}", "kitchen", f"Kitchen item {k}"))
    return log, items


def opts(**kw):
    return SplitOptions(domains=("food", "kitchen"), **kw)


def test_filtering_indexing_and_report(small_log, tmp_path):
    log, items = small_log
    m = split_dataset(log, items, tmp_path / "d", opts())
    ds = Dataset.open(tmp_path / "d")
    assert m["counts"]["n_users"] == 12
    uid = set(ds.split("test").user_id.tolist())
    assert "short" not in uid and "onesided" not in uid
    # contiguous indices, X first
    t = ds.items
    assert t.column("item").to_pylist() == list(range(ds.n_items))
    dom = np.asarray(t.column("domain_idx").to_pylist())
    assert (dom[: ds.n_x] == 0).all() and (dom[ds.n_x :] == 1).all()
    assert ds.n_x == 7 and ds.n_y == 9 and ds.pad == 16
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["items_missing_from_items_table"] == 1
    assert report["items_missing_examples"] == ["k8"]
    titles = dict(zip(t.column("item_id").to_pylist(), t.column("title").to_pylist()))
    assert titles["k8"] == "" and titles["f3"] == "Food item 3"
    assert report["filter_rounds"][0]["users_dropped"] == 2


def test_item_filter_repeats_until_stable(tmp_path):
    rows = []
    for u in range(5):
        rows += user_rows(f"u{u}", 5, 5)
    # user "x" is held above the user thresholds only by rare items: dropping them drops the user,
    # which makes item "rare_shared" (also used by "y") rare, which then drops "y" too
    rows += [("x", f"xr{k}", "food", 10 + k) for k in range(3)] + [("x", "rare_shared", "kitchen", 20)]
    rows += [("x", f"k{k}", "kitchen", 30 + k) for k in range(2)] + [("x", f"f{k}", "food", 40 + k) for k in range(4)]
    rows += [("y", "rare_shared", "kitchen", 5)] + [("y", f"f{k}", "food", 6 + k) for k in range(5)]
    rows += [("y", f"k{k}", "kitchen", 20 + k) for k in range(2)] + [("y", "yr", "kitchen", 30), ("y", "yr2", "kitchen", 31)]
    log = write_log(tmp_path / "log.csv", rows)
    m = split_dataset(log, None, tmp_path / "d", opts(min_item=2))
    ds = Dataset.open(tmp_path / "d")
    ids = set(ds.items.column("item_id").to_pylist())
    assert not any(i.startswith("xr") for i in ids) and "rare_shared" not in ids
    users = set(ds.split("test").user_id.tolist())
    assert users == {f"u{u}" for u in range(5)}
    assert len(m["report"]["filter_rounds"]) >= 2


def test_duplicates_dropped_and_counted(small_log, tmp_path):
    log, items = small_log
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines + lines[1:4]) + "\n")
    m = split_dataset(log, items, tmp_path / "d", opts())
    assert m["report"]["duplicate_rows_dropped"] == 3


def test_stable_tie_order(tmp_path):
    rows = []
    for u in range(3):
        # all at the same timestamp: the file order must be kept
        seq = [(f"u{u}", f"f{k}", "food", 500) for k in (3, 1, 2, 0, 4)]
        seq += [(f"u{u}", f"k{k}", "kitchen", 500) for k in (2, 0, 1, 4, 3)]
        rows += seq
    log = write_log(tmp_path / "log.csv", rows)
    split_dataset(log, None, tmp_path / "d", opts())
    ds = Dataset.open(tmp_path / "d")
    ids = ds.items.column("item_id").to_pylist()
    test = ds.split("test")
    seq = [ids[i] for i in test.sequence(0)]
    assert seq == ["f3", "f1", "f2", "f0", "f4", "k2", "k0", "k1", "k4", "k3"]


def test_loo_split_has_no_leakage(small_log, tmp_path):
    log, items = small_log
    split_dataset(log, items, tmp_path / "d", opts())
    ds = Dataset.open(tmp_path / "d")
    tr, va, te = ds.split("train"), ds.split("valid"), ds.split("test")
    by_user = {s.name: {int(u): i for i, u in enumerate(s.user)} for s in (tr, va, te)}
    for u, i in by_user["test"].items():
        full = te.sequence(i)
        v = va.sequence(by_user["valid"][u])
        t = tr.sequence(by_user["train"][u])
        assert np.array_equal(v, full[:-1]) and np.array_equal(t, full[:-2])
        assert te.target[i] not in te.history(i)[-0:] or True  # repeats are allowed; positions matter:
        assert len(te.history(i)) == len(full) - 1
        # the domain of each target is the domain of its item
        assert te.target_domain[i] == int(te.target[i] >= ds.n_x)


def test_c2dsr_split_partitions_users(small_log, tmp_path):
    log, items = small_log
    split_dataset(log, items, tmp_path / "d", opts(split="c2dsr"))
    ds = Dataset.open(tmp_path / "d")
    va, te, tr = ds.split("valid"), ds.split("test"), ds.split("train")
    assert not set(va.user.tolist()) & set(te.user.tolist())
    assert len(va) + len(te) == 12
    ev = {int(u): (s, i) for s in (va, te) for i, u in enumerate(s.user)}
    for i, u in enumerate(tr.user):
        s, j = ev[int(u)]
        # training stops before the evaluation target
        assert np.array_equal(tr.sequence(i), s.history(j))


def test_candidates_domain_and_target(small_log, tmp_path):
    log, items = small_log
    split_dataset(log, items, tmp_path / "d", opts())
    ds = Dataset.open(tmp_path / "d")
    for name in ("valid", "test"):
        s, c = ds.split(name), ds.candidates(name)
        assert c.shape == (len(s), 999) and c.dtype == np.int32
        for i in range(len(s)):
            lo, hi = ds.domain_range(int(s.target_domain[i]))
            assert c[i].min() >= lo and c[i].max() < hi
            assert s.target[i] not in c[i]


def test_candidates_exclude_history_without_replacement():
    from temacli.data.split import sample_negatives

    rng = np.random.default_rng(0)
    target = np.array([3, 1200])
    lo, size = np.array([0, 1000]), np.array([1000, 1500])
    hist_vals = np.arange(0, 500)  # row 0's history covers half of domain X
    off = np.array([0, 500, 500])
    c = sample_negatives(target, lo, size, 499, rng, replace=False, history=(off, hist_vals))
    assert len(set(c[0].tolist())) == 499 and c[0].min() >= 500 and 3 not in c[0]
    assert c[1].min() >= 1000 and c[1].max() < 2500 and 1200 not in c[1]


def test_same_seed_same_bytes_other_seed_other_candidates(small_log, tmp_path):
    log, items = small_log
    split_dataset(log, items, tmp_path / "a", opts())
    split_dataset(log, items, tmp_path / "b", opts())
    split_dataset(log, items, tmp_path / "c", opts(seed=7))
    for f in ("items.parquet", "train.parquet", "valid.parquet", "test.parquet", "candidates_valid.npy", "candidates_test.npy"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "candidates_test.npy").read_bytes() != (tmp_path / "c" / "candidates_test.npy").read_bytes()
    ma, mb = (json.loads((tmp_path / x / "manifest.json").read_text()) for x in "ab")
    assert ma["dataset_fingerprint"] == mb["dataset_fingerprint"]


def test_manifest_records_inputs_and_parameters(small_log, tmp_path):
    log, items = small_log
    split_dataset(log, items, tmp_path / "d", opts())
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert m["stage"] == "data split"
    assert m["inputs"]["interactions"]["fingerprint"].startswith("sha256:")
    assert m["params"]["min_user"] == 10 and m["params"]["domains"] == ["food", "kitchen"]
    assert m["outputs"]["candidates_test"]["shape"][1] == 999
    assert "numpy" in m["versions"]


# ----------------------------------------------------------------------------- the CLI and bad input
def test_cli_split_and_stats(small_log, tmp_path, run_cli):
    log, items = small_log
    code, _, err = run_cli(["data", "split", "--interactions", log, "--items", items, "--domains", "food,kitchen", "--out", tmp_path / "d"])
    assert code == 0, err
    code, out, _ = run_cli(["data", "stats", tmp_path / "d", "--json"])
    assert code == 0
    st = json.loads(out)
    assert st["domains"]["food"]["items"] == 7
    assert st["domains"]["food"]["test_targets"] + st["domains"]["kitchen"]["test_targets"] == 12


def _assert_bad(args, run_cli, needle, out_dir):
    code, _, err = run_cli(args)
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert needle in " ".join(lines), err
    assert "Traceback" not in err
    assert not out_dir.exists()
    # no temporary leftovers beside it
    assert not [p for p in out_dir.parent.glob(f".{out_dir.name}.*")]


def test_bad_missing_file(tmp_path, run_cli):
    out = tmp_path / "out"
    _assert_bad(["data", "split", "--interactions", tmp_path / "none.csv", "--domains", "a,b", "--out", out], run_cli, "file not found", out)


def test_bad_missing_column(tmp_path, run_cli):
    log = write_log(tmp_path / "log.csv", [("u", "i", "food", 1)], header=("user", "item_id", "domain", "timestamp"))
    out = tmp_path / "out"
    _assert_bad(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out], run_cli, "column 'user_id' not found", out)
    _assert_bad(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out], run_cli, "--user-col", out)


def test_bad_timestamps_named_by_row(small_log, tmp_path, run_cli):
    log, _ = small_log
    lines = log.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",yesterday"
    lines[5] = lines[5].rsplit(",", 1)[0] + ","
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    _assert_bad(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out], run_cli, "file lines 4, 6", out)


def test_bad_domain_label(small_log, tmp_path, run_cli):
    log, _ = small_log
    out = tmp_path / "out"
    _assert_bad(["data", "split", "--interactions", log, "--domains", "food,garden", "--out", out], run_cli, "domain label 'kitchen'", out)


def test_bad_filter_empties(small_log, tmp_path, run_cli):
    log, _ = small_log
    out = tmp_path / "out"
    _assert_bad(
        ["data", "split", "--interactions", log, "--domains", "food,kitchen", "--min-user-interactions", "100", "--out", out],
        run_cli, "--min-user-interactions", out,
    )
    _assert_bad(
        ["data", "split", "--interactions", log, "--domains", "food,kitchen", "--min-domain-interactions", "11", "--out", out],
        run_cli, "--min-domain-interactions", out,
    )


def test_bad_output_holds_other_dataset(small_log, tmp_path, run_cli):
    log, items = small_log
    out = tmp_path / "out"
    base = ["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out]
    assert run_cli(base)[0] == 0
    before = (out / "candidates_test.npy").read_bytes()
    code, _, err = run_cli(base + ["--seed", "3"])
    assert code == 2 and "already holds a different dataset" in err and "--force" in err
    assert (out / "candidates_test.npy").read_bytes() == before
    assert run_cli(base)[0] == 0  # the same dataset again is fine
    assert run_cli(base + ["--seed", "3", "--force"])[0] == 0
    assert (out / "candidates_test.npy").read_bytes() != before


def test_reader_names_file_column_and_fix(small_log, tmp_path):
    import pyarrow.parquet as pq

    from temacli.errors import TemacliError

    log, items = small_log
    split_dataset(log, items, tmp_path / "d", opts())
    t = pq.read_table(tmp_path / "d" / "test.parquet").drop(["target"])
    pq.write_table(t, tmp_path / "d" / "test.parquet")
    # a manifest that agrees with the broken file (a buggy writer): the contract check still names it
    mp = tmp_path / "d" / "manifest.json"
    m = json.loads(mp.read_text())
    m["outputs"]["test"]["fingerprint"] = artifacts.fingerprint(tmp_path / "d" / "test.parquet")
    mp.write_text(json.dumps(m))
    with pytest.raises(TemacliError) as e:
        Dataset.open(tmp_path / "d").split("test")
    msg = str(e.value)
    assert "test.parquet" in msg and "'target'" in msg and "temacli data split" in msg


# ----------------------------------------------------------------------------- importers on real data
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "c2dsr-food-kitchen").is_dir(), reason="shared data not present")
def test_c2dsr_import_matches_published_counts(tmp_path, run_cli):
    code, _, err = run_cli(["data", "split", "--format", "c2dsr", SHARED / "c2dsr-food-kitchen", "--out", tmp_path / "c"])
    assert code == 0, err
    assert "traindata_new.txt" in err  # says what is missing
    ds = Dataset.open(tmp_path / "c")
    assert ds.domains == ("food", "kitchen") and ds.n_x == 29207 and ds.n_y == 34886
    te, va = ds.split("test"), ds.split("valid")
    assert (len(te), len(va)) == (8406, 8173)
    assert np.bincount(te.target_domain).tolist() == [2747, 5659]
    assert np.bincount(va.target_domain).tolist() == [2722, 5451]
    c = ds.candidates("test")
    lo = np.where(te.target_domain == 0, 0, ds.n_x)[:, None]
    hi = np.where(te.target_domain == 0, ds.n_x, ds.n_items)[:, None]
    assert ((c >= lo) & (c < hi)).all() and not (c == te.target[:, None]).any()
    # the target is the chronologically last item, not the file's last field
    first = (SHARED / "c2dsr-food-kitchen" / "testdata_new.txt").read_text().splitlines()[0].split("\t")[2:]
    last_field_item = int(first[-1].split("|")[0])
    ts = [int(f.split("|")[1]) for f in first if f]
    items = [int(f.split("|")[0]) for f in first if f]
    order = np.argsort(ts, kind="stable")
    assert te.target[0] == items[order[-1]]
    assert last_field_item >= ds.n_x  # the file's last field is a kitchen item


@pytest.mark.skipif(not (SHARED / "amazon-food-kitchen").is_dir(), reason="shared data not present")
def test_real_log_slice(tmp_path):
    src = SHARED / "amazon-food-kitchen" / "interactions.csv"
    lines = src.read_text().splitlines()[:6001]
    log = tmp_path / "slice.csv"
    log.write_text("\n".join(lines) + "\n")
    m = split_dataset(log, SHARED / "amazon-food-kitchen" / "items.csv", tmp_path / "d", opts())
    ds = Dataset.open(tmp_path / "d")
    assert m["counts"]["n_users"] > 100
    te = ds.split("test")
    assert len(te) == m["counts"]["n_users"]
    assert ds.items.num_rows == ds.n_items


def test_parquet_log_with_renamed_columns(small_log, tmp_path, run_cli):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    log, items = small_log
    t = pacsv.read_csv(log).rename_columns(["who", "what", "where", "when"])
    pq.write_table(t, tmp_path / "log.parquet")
    args = ["data", "split", "--interactions", tmp_path / "log.parquet", "--domains", "food,kitchen",
            "--user-col", "who", "--item-col", "what", "--domain-col", "where", "--time-col", "when", "--out", tmp_path / "p"]
    code, _, err = run_cli(args)
    assert code == 0, err
    split_dataset(log, None, tmp_path / "c", opts())
    for f in ("train.parquet", "test.parquet", "candidates_test.npy"):
        assert (tmp_path / "p" / f).read_bytes() == (tmp_path / "c" / f).read_bytes()


def test_titles_have_html_entities_decoded(small_log, tmp_path):
    log, items = small_log
    items.write_text(items.read_text().replace("Food item 3", "Salt &amp; Pepper"))
    split_dataset(log, items, tmp_path / "d", opts())
    titles = Dataset.open(tmp_path / "d").items.column("title").to_pylist()
    assert "Salt & Pepper" in titles


def test_items_file_descriptions_and_images_kept(tmp_path, make_dataset):
    rows = [("food", "Green Tea &amp; Honey ", "a hot drink", "img/tea.png"), ("food", "Rice", None, None),
            ("food", "", "untitled", None), ("kitchen", "Pan", None, "img/pan.jpg"), ("kitchen", "Pot")]
    ds = Dataset.open(make_dataset(tmp_path, items=rows, n_users=6, length=8))
    t = ds.items
    assert (ds.n_x, ds.n_y) == (3, 2) and t.column("item_id").to_pylist() == [f"I{i:04d}" for i in range(5)]
    assert t.column("title").to_pylist() == ["Green Tea & Honey", "Rice", "", "Pan", "Pot"]
    assert t.column("description").to_pylist() == ["a hot drink", None, "untitled", None, None]
    assert t.column("image").to_pylist() == ["img/tea.png", None, None, "img/pan.jpg", None]
    report = json.loads((ds.path / "report.json").read_text())
    assert report["items_without_title"] == 1 and report["items_missing_from_items_table"] == 0
