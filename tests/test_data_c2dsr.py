"""`data split --format c2dsr` on a tiny hand-made folder: the reading rules and the one-line refusals.

The shared copy of the published data (checked in test_data_split.py, slow) has no malformed line, so
every refusal of the importer's readers (item lists, user list, sequence files) is checked here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from temacli.data.dataset import Dataset


def tiny_c2dsr(path: Path, n_a: int = 5, n_b: int = 4) -> Path:
    """A C2DSR folder: A items 0..n_a-1, B items n_a.. (global in the sequence files), two users."""
    path.mkdir(parents=True)
    (path / "Alist.txt").write_text("".join(f"o{i}\tA{i:03d}\t{i}\n" for i in range(n_a)))
    (path / "Blist.txt").write_text("".join(f"p{i}\tB{i:03d}\t{i}\n" for i in range(n_b)) + "\n")  # trailing blank
    (path / "userlist.txt").write_text("alice\t0\nbob\t1\n")
    b = n_a
    # user 0: times out of file order; the chronologically last item (not the last field) is the target
    (path / "testdata_new.txt").write_text(
        f"0\t0\t1|30|x|\t{b + 1}|10|x|\t2|40|x|\t{b}|20|x|\n"
        f"1\t1\t3|5|x|\t{b + 2}|5|x|\t{b + 3}|6|x|\n"
    )
    (path / "validdata_new.txt").write_text(f"0\t0\t1|30|x|\t{b + 1}|10|x|\t{b}|20|x|\n7\t1\t3|5|x|\t4|6|x|\n")
    return path


def test_tiny_folder_imports_in_time_order(tmp_path, run_cli):
    folder = tiny_c2dsr(tmp_path / "c2dsr-movie-book")
    code, _, err = run_cli(["data", "split", "--format", "c2dsr", folder, "--out", tmp_path / "d", "-q"])
    assert code == 0, err
    assert "traindata_new.txt" in err  # the missing training file is named
    ds = Dataset.open(tmp_path / "d")
    assert ds.domains == ("movie", "book") and (ds.n_x, ds.n_y) == (5, 4)
    te, va = ds.split("test"), ds.split("valid")
    assert te.sequence(0).tolist() == [6, 5, 1, 2]  # sorted by timestamp; target item 2 (t=40)
    assert te.sequence(1).tolist() == [3, 7, 8]  # a tie at t=5 keeps the file order
    assert te.user_id.tolist() == ["alice", "bob"]
    assert va.user_id.tolist() == ["alice", "user#7"]  # an index the user list lacks
    assert te.target_domain.tolist() == [0, 1]
    c = ds.candidates("test")
    assert c.shape == (2, 999) and c[0].max() < 5 and c[1].min() >= 5
    assert not (c == te.target[:, None]).any()
    ids = ds.items.column("item_id").to_pylist()
    assert ids[:2] == ["A000", "A001"] and ids[5:] == ["B000", "B001", "B002", "B003"]
    assert np.array_equal(ds.items.column("item").to_numpy(), np.arange(9))


@pytest.mark.parametrize("file,content,words", [
    ("Alist.txt", "o0\tA0\n", "line 1 is not 'orig_id<TAB>asin<TAB>index'"),
    ("Blist.txt", "p0\tB0\t0\np1\tB1\tone\n", "line 2: index 'one' is not an integer"),
    ("userlist.txt", "alice\t0\nbob\n", "line 2 is not 'orig_user<TAB>index'"),
    ("userlist.txt", "alice\tzero\n", "line 1: index 'zero' is not an integer"),
    ("testdata_new.txt", "0\t0\t1|30|x|\n\n1\t1\n", "line 3 has no interactions"),
    ("testdata_new.txt", "u0\t0\t1|30|x|\t2|31|x|\n", "line 1: user 'u0' is not an integer"),
    ("validdata_new.txt", "0\t0\t1|30|x|\t2;31\n", "line 1: field '2;31' is not 'item|unix_ts|datetime|'"),
])
def test_malformed_lines_are_refused_in_one_line(tmp_path, run_cli, file, content, words):
    folder = tiny_c2dsr(tmp_path / "c2dsr-movie-book")
    (folder / file).write_text(content)
    code, _, err = run_cli(["data", "split", "--format", "c2dsr", folder, "--out", tmp_path / "d", "-q"])
    assert code == 2 and words in err and file in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()
