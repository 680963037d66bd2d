"""`data split` and the dataset reader refuse bad input before any work, in one line, writing nothing.

Classes: blank or null ids in the log; flag values out of range; unusable --out paths; a dataset
manifest without its counts; files edited after `data split` recorded their fingerprints. And a valid
CSV whose quoted fields span lines is read.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from temacli import artifacts
from temacli.data.dataset import SPLIT, Dataset
from temacli.data.split import SplitOptions, rewrite_split, split_dataset
from temacli.errors import TemacliError


def write_csv(path: Path, rows, header=("user_id", "item_id", "domain", "timestamp")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def log_rows(n_users=6):
    rows = []
    for u in range(n_users):
        t = 100 + u
        for k in range(6):
            rows.append((f"u{u}", f"f{k}", "food", t))
            t += 1
        for k in range(6):
            rows.append((f"u{u}", f"k{k}", "kitchen", t))
            t += 1
    return rows


def assert_refused(args, run_cli, *needles, out: Path):
    code, stdout, err = run_cli(args)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists() or out.is_file()
    assert not list(out.parent.glob(f".{out.name}.*"))
    return lines[0]


# ----------------------------------------------------------------------------- ids
def test_blank_user_id_names_its_line(tmp_path, run_cli):
    rows = log_rows()
    rows[6] = ("  ", *rows[6][1:])  # data row 6 = file line 8
    rows[9] = ("", *rows[9][1:])
    log = write_csv(tmp_path / "log.csv", rows)
    out = tmp_path / "out"
    assert_refused(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out], run_cli,
                   "column 'user_id'", "2 missing or blank ids", "file line 8", out=out)


def test_blank_item_id_after_a_multiline_field_names_the_right_line(tmp_path, run_cli):
    rows = [r + ("plain",) for r in log_rows()]
    rows[1] = rows[1][:4] + ("a note\nover two lines",)  # the file's line numbers shift by one after it
    rows[4] = (rows[4][0], "", *rows[4][2:])  # data row 4 starts on file line 7
    log = write_csv(tmp_path / "log.csv", rows, header=("user_id", "item_id", "domain", "timestamp", "note"))
    out = tmp_path / "out"
    assert_refused(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out], run_cli,
                   "column 'item_id'", "file line 7", out=out)


def test_null_ids_in_parquet_named_by_row(tmp_path, run_cli):
    rows = log_rows()
    table = pa.table({
        "user_id": pa.array([None if i == 3 else r[0] for i, r in enumerate(rows)], pa.string()),
        "item_id": [r[1] for r in rows], "domain": [r[2] for r in rows], "timestamp": [r[3] for r in rows],
    })
    pq.write_table(table, tmp_path / "log.parquet")
    out = tmp_path / "out"
    assert_refused(["data", "split", "--interactions", tmp_path / "log.parquet", "--domains", "food,kitchen",
                    "--out", out], run_cli, "column 'user_id'", "row 4", out=out)


def test_quoted_newlines_in_items_and_log_are_read(tmp_path):
    rows = log_rows()
    log = write_csv(tmp_path / "log.csv", rows)
    items = tmp_path / "items.csv"
    with open(items, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("item_id", "domain", "title"))
        w.writerow(("f0", "food", "Green tea,\nloose leaf"))
        for k in range(1, 6):
            w.writerow((f"f{k}", "food", f"Food {k}"))
        for k in range(6):
            w.writerow((f"k{k}", "kitchen", f"Kitchen {k}"))
    assert "\nloose leaf" in items.read_text()
    split_dataset(log, items, tmp_path / "d", SplitOptions(domains=("food", "kitchen"), min_user=5))
    titles = dict(zip(*(Dataset.open(tmp_path / "d").items.column(c).to_pylist() for c in ("item_id", "title"))))
    assert titles["f0"] == "Green tea,\nloose leaf" and titles["f1"] == "Food 1" and titles["k5"] == "Kitchen 5"


# ----------------------------------------------------------------------------- flags, before any work
@pytest.mark.parametrize(
    "flag,value,range_words",
    [
        ("--min-user-interactions", "0", "an integer >= 1"),
        ("--min-domain-interactions", "-1", "an integer >= 0"),
        ("--min-item-interactions", "0", "an integer >= 1"),
        ("--seed", "-5", "an integer >= 0"),
        ("--valid-frac", "1.5", "a number in (0, 1)"),
        ("--valid-frac", "0", "a number in (0, 1)"),
        ("--eval-users-frac", "0", "a number in (0, 1]"),
        ("--eval-users-frac", "nan", "a number in (0, 1]"),
    ],
)
def test_flag_out_of_range_refused_before_reading(tmp_path, run_cli, flag, value, range_words):
    out = tmp_path / "out"
    # the log does not exist: the flag is refused first, so nothing was read
    line = assert_refused(["data", "split", "--interactions", tmp_path / "absent.csv", "--domains", "food,kitchen",
                           "--out", out, flag, value], run_cli, flag, range_words, out=out)
    assert "absent.csv" not in line


def test_seed_checked_for_importers_too(tmp_path, run_cli):
    folder = tmp_path / "llmcdsr-a-b"
    folder.mkdir()
    out = tmp_path / "out"
    assert_refused(["data", "split", "--format", "llmcdsr", folder, "--out", out, "--seed", "-1"], run_cli,
                   "--seed", "an integer >= 0", out=out)


def test_help_states_the_ranges(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per option, so no range is wrapped
    code, out, _ = run_cli(["data", "split", "--help"])
    text = " ".join(out.split())
    assert code == 0
    for words in ("integer >= 1", "integer >= 0", "number in (0, 1)", "number in (0, 1]"):
        assert words in text, words


def test_help_ranges_are_the_library_ranges():
    from temacli.cli.data import _R
    from temacli.data.build import RANGES, range_text

    assert set(_R) == {f for f in RANGES if f.startswith("--")}
    for flag, words in _R.items():
        assert range_text(flag).split(" ", 1)[1] == words, flag


def test_split_mode_and_format_named(tmp_path, run_cli):
    out = tmp_path / "out"
    # choices are enums: a usage error naming every choice, nothing written
    code, _, err = run_cli(["data", "split", "--interactions", tmp_path / "a.csv", "--domains", "food,kitchen",
                            "--out", out, "--split", "random"])
    assert code == 2 and "'random' is not one of 'loo', 'c2dsr'" in err and not out.exists()
    code, _, err = run_cli(["data", "split", "--format", "movielens", tmp_path, "--out", out])
    assert code == 2 and "'movielens' is not one of 'log', 'llmcdsr', 'c2dsr'" in err and not out.exists()


# ----------------------------------------------------------------------------- --out
def test_out_is_an_existing_file(tmp_path, run_cli):
    log = write_csv(tmp_path / "log.csv", log_rows())
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert_refused(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out], run_cli,
                   "--out", "existing file", out=out)
    assert out.read_text() == "not a folder"


def test_out_below_a_file(tmp_path, run_cli):
    log = write_csv(tmp_path / "log.csv", log_rows())
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "data"
    code, _, err = run_cli(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is a file" in err


def test_out_in_unwritable_folder_refused_before_work(tmp_path, run_cli, monkeypatch):
    import temacli.data.build as build

    log = write_csv(tmp_path / "log.csv", log_rows())
    ro = tmp_path / "ro"
    ro.mkdir()
    out = ro / "data"
    real_access = os.access
    # root may write anywhere, so the unwritable folder is simulated where permissions are asked
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: Path(p) != ro and real_access(p, mode, *a, **k))

    def no_work(*a, **k):
        raise AssertionError("the dataset was built before --out was checked")

    monkeypatch.setattr(build, "build_from_log", no_work)
    monkeypatch.setattr("temacli.data.split.build_from_log", no_work)
    assert_refused(["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out], run_cli,
                   "--out", "not writable", out=out)


def test_other_dataset_in_out_refused_before_work(tmp_path, run_cli, monkeypatch):
    log = write_csv(tmp_path / "log.csv", log_rows())
    out = tmp_path / "d"
    base = ["data", "split", "--interactions", log, "--domains", "food,kitchen", "--out", out, "-q"]
    assert run_cli(base)[0] == 0

    def no_work(*a, **k):
        raise AssertionError("the dataset was built before --out was checked")

    monkeypatch.setattr("temacli.data.split.build_from_log", no_work)
    code, _, err = run_cli(base + ["--seed", "3"])
    assert code == 2 and "already holds a different dataset" in err


# ----------------------------------------------------------------------------- the manifest and fingerprints
@pytest.fixture
def ds(tmp_path, make_dataset):
    return Dataset.open(make_dataset(tmp_path, n_users=8, with_items=False))


@pytest.mark.parametrize("drop", ["counts", "counts.n_items_x", "counts.rows_test", "counts.domains"])
def test_manifest_without_its_counts(ds, run_cli, drop):
    mp = ds.path / "manifest.json"
    m = json.loads(mp.read_text())
    if drop == "counts":
        del m["counts"]
    else:
        del m["counts"][drop.split(".")[1]]
    mp.write_text(json.dumps(m))
    with pytest.raises(TemacliError) as e:
        Dataset.open(ds.path)
    msg = str(e.value)
    assert "manifest.json" in msg and ("has no counts" if drop == "counts" else f"lacks {drop}") in msg
    assert "\n" not in msg and "temacli data split" in msg
    code, _, err = run_cli(["data", "stats", ds.path])
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_manifest_count_of_wrong_type(ds):
    mp = ds.path / "manifest.json"
    m = json.loads(mp.read_text())
    m["counts"]["n_items_y"] = "nine"
    mp.write_text(json.dumps(m))
    with pytest.raises(TemacliError, match=r"counts.n_items_y is 'nine', expected a non-negative integer"):
        Dataset.open(ds.path)


def edit_history(path: Path):
    t = artifacts.read_table(path, SPLIT)
    hist = t.column("history").to_pylist()
    hist[0] = hist[0][1:]
    return t.set_column(t.column_names.index("history"), "history", pa.array(hist, pa.list_(pa.int32())))


def test_edited_test_split_is_refused(ds):
    t = edit_history(ds.path / "test.parquet")
    artifacts.write_table(t, ds.path / "test.parquet", SPLIT)
    for opened in (ds, Dataset.open(ds.path)):
        with pytest.raises(TemacliError) as e:
            opened.split("test")
        msg = str(e.value)
        assert "test.parquet changed after `data split` recorded it" in msg and "\n" not in msg
    # the other files are untouched and still read
    assert len(ds.split("valid")) == ds.candidates("test").shape[0] == len(ds.split("train")) == 8


def test_edited_candidates_and_items_are_refused(ds):
    c = np.load(ds.path / "candidates_test.npy")
    np.save(ds.path / "candidates_test.npy", np.roll(c, 1, axis=1))
    with pytest.raises(TemacliError, match=r"stored negatives \(candidates_test.npy\) changed"):
        Dataset.open(ds.path).candidates("test")
    t = pq.read_table(ds.path / "items.parquet")
    pq.write_table(t.set_column(t.column_names.index("title"), "title", pa.array(["x"] * t.num_rows)),
                   ds.path / "items.parquet")
    with pytest.raises(TemacliError, match=r"items.parquet changed"):
        Dataset.open(ds.path).items


def test_edit_after_a_first_read_is_caught(ds):
    assert len(ds.split("test"))
    t = edit_history(ds.path / "test.parquet")
    artifacts.write_table(t, ds.path / "test.parquet", SPLIT)
    with pytest.raises(TemacliError, match="changed after"):
        ds.split("test")


def test_fingerprint_once_per_open(ds, monkeypatch):
    calls = []
    real = artifacts.fingerprint
    monkeypatch.setattr(artifacts, "fingerprint", lambda p: calls.append(Path(p).name) or real(p))
    fresh = Dataset.open(ds.path)
    for _ in range(3):
        fresh.split("test"), fresh.candidates("test"), fresh.split("train")
    assert sorted(calls) == ["candidates_test.npy", "test.parquet", "train.parquet"]


def test_rewrite_split_records_a_deliberate_edit(ds):
    t = edit_history(ds.path / "test.parquet")
    rewrite_split(ds, "test", t)
    assert ds.split("test").history(0).tolist() == t.column("history").to_pylist()[0]
    again = Dataset.open(ds.path)
    assert again.fingerprint == ds.fingerprint and len(again.split("test")) == t.num_rows
    with pytest.raises(TemacliError, match="rows of stored negatives"):
        rewrite_split(ds, "test", t.slice(1))
