"""`data split --format llmcdsr`: the published negatives, the exclude-history option, partial folders.

Tiny hand-made folders check the rules exactly; the shared copies of the published splits check the
published counts and, statistically, that history items stay among the negatives as often as a uniform
draw without replacement (excluding only the target) puts them there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from temacli.data.dataset import Dataset
from temacli.data.formats import import_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FK = SHARED / "llmcdsr-food-kitchen"
MB = SHARED / "llmcdsr-movie-book-partial"


def tiny_folder(path: Path, n_a=1002, n_b=1200, titles_b=True, drop=()):
    """An LLMCDSR-layout folder: n_a A items, n_b B items, a few users per file."""
    path.mkdir(parents=True)
    (path / "num.txt").write_text(f"{n_a}\n{n_b}\n")
    with open(path / "items_A.tsv", "w") as f:
        f.write("index\tasin\ttitle\n")
        for i in range(n_a):
            f.write(f"{i}\tA{i:05d}\tMovie {i}\n")
    with open(path / "items_B.tsv", "w") as f:
        f.write("index\tasin\ttitle\n" if titles_b else "index\tasin\n")
        for i in range(n_b):
            f.write(f"{i}\tB{i:05d}\tBook {i}\n" if titles_b else f"{i}\tB{i:05d}\n")
    b = n_a  # first B item
    files = {
        "train_A.txt": ["1\t1,2,3,4", "2\t5,6,7"],
        "train_B.txt": [f"1\t{b},{b + 1},{b + 2}"],
        "train_overlap.txt": [f"1\t1,{b + 3},2,{b + 4}"],
        # valid/test: the last id is the target; histories mix both domains
        "valid.txt": [f"1\t10,11,{b + 5},12", f"2\t{b + 6},13,{b + 7}"],
        "test.txt": [f"1\t20,21,{b + 8},22", f"2\t{b + 9},23,{b + 10},{b + 11}", f"3\t30,{b + 12},31"],
    }
    for name, lines in files.items():
        if name not in drop:
            (path / name).write_text("\n".join(lines) + "\n")
    return path


def history_in_domain(split, i, lo, hi):
    h = split.history(i)
    return set(int(x) for x in h if lo <= x < hi) - {int(split.target[i])}


# ----------------------------------------------------------------------------- the rule, exactly
def test_published_rule_keeps_history_items_excludes_only_target(tmp_path):
    folder = tiny_folder(tmp_path / "llmcdsr-movie-book")
    m = import_dataset("llmcdsr", folder, tmp_path / "d")
    ds = Dataset.open(tmp_path / "d")
    assert m["params"]["seed"] == 42 and "exclude_history" not in m["params"]
    assert "excluding only the target" in m["report"]["negatives"]
    te, c = ds.split("test"), ds.candidates("test")
    kept = total = 0
    for i in range(len(te)):
        lo, hi = ds.domain_range(int(te.target_domain[i]))
        row = set(c[i].tolist())
        assert len(row) == 999 and min(row) >= lo and max(row) < hi and int(te.target[i]) not in row
        h = history_in_domain(te, i, lo, hi)
        kept += len(h & row)
        total += len(h)
    # A has 1002 items: 999 of the 1001 non-targets are drawn, so history items are nearly always there
    assert total >= 4 and kept >= total - 1


def test_exclude_history_option_keeps_history_out(tmp_path):
    folder = tiny_folder(tmp_path / "llmcdsr-movie-book")
    m = import_dataset("llmcdsr", folder, tmp_path / "d", exclude_history=True)
    ds = Dataset.open(tmp_path / "d")
    assert m["params"]["exclude_history"] is True and "not the published protocol" in m["report"]["negatives"]
    te, c = ds.split("test"), ds.candidates("test")
    exact = 0
    for i in range(len(te)):
        lo, hi = ds.domain_range(int(te.target_domain[i]))
        row = set(c[i].tolist())
        assert len(row) == 999 and not row & history_in_domain(te, i, lo, hi)
        allowed = set(range(lo, hi)) - {int(te.target[i])} - history_in_domain(te, i, lo, hi)
        if len(allowed) == 999:  # test user 1: 1002 items - target - 2 history items
            exact += 1
            assert row == allowed
    assert exact == 1


def test_cli_flag_and_stored_once(tmp_path, run_cli):
    folder = tiny_folder(tmp_path / "llmcdsr-movie-book")
    base = ["data", "split", "--format", "llmcdsr", folder, "--quiet"]
    assert run_cli(base + ["--out", tmp_path / "a"])[0] == 0
    assert run_cli(base + ["--out", tmp_path / "b"])[0] == 0
    code, _, err = run_cli(base + ["--out", tmp_path / "x", "--negatives-exclude-history"])
    assert code == 0, err
    a, b, x = ((tmp_path / n / "candidates_test.npy").read_bytes() for n in "abx")
    assert a == b and a != x  # the same seed gives the same stored negatives; the option changes them
    mx = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert mx["params"]["exclude_history"] is True
    # the option is LLMCDSR's (and the raw log's) only
    code, _, err = run_cli(["data", "split", "--format", "c2dsr", folder, "--out", tmp_path / "c",
                            "--negatives-exclude-history"])
    assert code == 2 and "not an option of --format c2dsr" in err and not (tmp_path / "c").exists()


def test_missing_training_file_and_untitled_items(tmp_path, run_cli):
    folder = tiny_folder(tmp_path / "llmcdsr-movie-book-partial", titles_b=False, drop=("train_B.txt",))
    code, _, err = run_cli(["data", "split", "--format", "llmcdsr", folder, "--out", tmp_path / "d", "--quiet"])
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "train_B.txt" in warnings[0], err
    ds = Dataset.open(tmp_path / "d")
    assert ds.domains == ("movie", "book")  # the trailing "-partial" names the copy, not a domain
    m = ds.manifest
    assert m["counts"]["missing_files"] == ["train_B.txt"]
    assert m["counts"]["items_without_title"] == {"movie": 0, "book": 1200}
    assert m["counts"]["rows_train"] == 3  # train_A (2) + train_overlap (1)
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["missing_files"] == ["train_B.txt"]
    assert report["train_rows_by_file"] == {"train_A.txt": 2, "train_overlap.txt": 1}
    titles = ds.items.column("title").to_pylist()
    assert titles[0] == "Movie 0" and set(titles[ds.n_x:]) == {""}
    assert "book 1,200" in err  # the summary names the untitled items per domain


def test_required_file_missing_is_refused(tmp_path, run_cli):
    folder = tiny_folder(tmp_path / "llmcdsr-movie-book", drop=("test.txt",))
    code, _, err = run_cli(["data", "split", "--format", "llmcdsr", folder, "--out", tmp_path / "d"])
    assert code == 2 and "test.txt not found" in err and not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- the shared published splits
@pytest.fixture(scope="module")
def fk(tmp_path_factory):
    if not FK.is_dir():
        pytest.skip("shared data not present")
    out = tmp_path_factory.mktemp("llmcdsr") / "fk"
    import_dataset("llmcdsr", FK, out)
    return Dataset.open(out)


@pytest.mark.slow
def test_food_kitchen_keeps_published_split(fk):
    ds = fk
    assert ds.domains == ("food", "kitchen") and (ds.n_x, ds.n_y) == (8661, 27637)
    assert (len(ds.split("train")), len(ds.split("valid")), len(ds.split("test"))) == (5472 + 38191 + 7501, 960, 937)
    te = ds.split("test")
    line = (FK / "test.txt").read_text().splitlines()[0]
    seq = [int(x) for x in line.split("\t")[1].split(",")]
    assert te.sequence(0).tolist() == seq and te.user_id[0] == "test:" + line.split("\t")[0]
    assert ds.manifest["params"]["seed"] == 42 and ds.manifest["counts"]["missing_files"] == []
    assert ds.items.column("title").to_pylist()[0].startswith("Enfamil")


@pytest.mark.slow
def test_food_kitchen_history_items_among_negatives_match_expectation(fk):
    """Over all test rows, the history items found among the stored negatives agree with a uniform
    draw of 999 without replacement from the target's domain minus the target: per row the count is
    hypergeometric with mean 999·|H_d|/(N_d − 1) (H_d: the row's distinct history items in the target's
    domain, the target itself left out since it can never be drawn)."""
    ds = fk
    te, c = ds.split("test"), ds.candidates("test")
    found, mean, var = 0, 0.0, 0.0
    n = c.shape[1]
    for i in range(len(te)):
        lo, hi = ds.domain_range(int(te.target_domain[i]))
        row = c[i]
        assert len(np.unique(row)) == n and row.min() >= lo and row.max() < hi and te.target[i] not in row
        h = history_in_domain(te, i, lo, hi)
        found += len(h & set(row.tolist()))
        pop, k = (hi - lo) - 1, len(h)
        mean += n * k / pop
        var += n * (k / pop) * (1 - k / pop) * (pop - n) / (pop - 1)
    sd = math.sqrt(var)
    assert mean > 100  # the check has power: the old exclude-history rule gives 0
    assert abs(found - mean) <= 4 * sd, (found, mean, sd)


@pytest.mark.slow
def test_movie_book_partial_imports_with_warning_and_counts(tmp_path, run_cli):
    if not MB.is_dir():
        pytest.skip("shared data not present")
    code, _, err = run_cli(["data", "split", "--format", "llmcdsr", MB, "--out", tmp_path / "mb", "--quiet"])
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "train_B.txt" in warnings[0], err
    ds = Dataset.open(tmp_path / "mb")
    assert ds.domains == ("movie", "book") and (ds.n_x, ds.n_y) == (12875, 93860)
    counts = ds.manifest["counts"]
    assert counts["missing_files"] == ["train_B.txt"]
    assert counts["items_without_title"] == {"movie": 0, "book": 93860}
    assert counts["items_in_no_file"] == {"movie": 0, "book": 93860 - 27008}  # the README's 27,008 books
    assert counts["rows_train"] == 12185 + 6652
    va, te = ds.split("valid"), ds.split("test")
    assert np.bincount(va.target_domain).tolist() == [344, 485]
    assert np.bincount(te.target_domain).tolist() == [311, 525]
    c = ds.candidates("test")
    lo = np.where(te.target_domain == 0, 0, ds.n_x)[:, None]
    hi = np.where(te.target_domain == 0, ds.n_x, ds.n_items)[:, None]
    assert ((c >= lo) & (c < hi)).all() and not (c == te.target[:, None]).any()


@pytest.mark.parametrize("file,content,words", [
    ("num.txt", "ten\n1200\n", "expected two integers"),
    ("items_A.tsv", "index\tasin\ttitle\nzero\tA0\tMovie\n", "index 'zero' is not an integer"),
    ("test.txt", "1\t20,21;22\n", "is not 'user<TAB>i1,i2,...'"),
    ("valid.txt", "1\t20,99999\n", "outside 0..2201"),
])
def test_malformed_files_are_refused_in_one_line(tmp_path, run_cli, file, content, words):
    folder = tiny_folder(tmp_path / "llmcdsr-movie-book")
    (folder / file).write_text(content)
    code, _, err = run_cli(["data", "split", "--format", "llmcdsr", folder, "--out", tmp_path / "d", "-q"])
    assert code == 2 and words in err and file in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()
