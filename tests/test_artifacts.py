"""The artifact contracts: validation, atomic writes, manifests, fingerprints."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from conftest import unwritable_dir
from temacli import artifacts
from temacli.artifacts import Column, Contract
from temacli.errors import TemacliError

C = Contract("thing", (Column("a", "int", pa.int32()), Column("b", "string")), fix="run `temacli thing`",
             optional=(Column("c", "float", nullable=True),))


def test_roundtrip_casts_to_contract_types(tmp_path):
    t = pa.table({"a": pa.array([1, 2], pa.int64()), "b": ["x", "y"], "extra": [1.0, 2.0]})
    artifacts.write_table(t, tmp_path / "t.parquet", C)
    r = artifacts.read_table(tmp_path / "t.parquet", C)
    assert r.schema.field("a").type == pa.int32()
    assert r.column_names == ["a", "b", "extra"]


@pytest.mark.parametrize(
    "table, needle",
    [
        (pa.table({"b": ["x"]}), "column 'a' is missing"),
        (pa.table({"a": ["1"], "b": ["x"]}), "column 'a' has type string, expected int"),
        (pa.table({"a": pa.array([1, None]), "b": ["x", "y"]}), "column 'a' has 1 missing values"),
    ],
)
def test_reader_errors_name_file_column_and_fix(tmp_path, table, needle):
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(TemacliError) as e:
        artifacts.read_table(tmp_path / "bad.parquet", C)
    msg = str(e.value)
    assert needle in msg and "bad.parquet" in msg and "temacli thing" in msg


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(TemacliError, match=r"file not found; run `temacli thing`"):
        artifacts.read_table(tmp_path / "none.parquet", C)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_npy_writer_is_memmapped_and_atomic(tmp_path):
    target = tmp_path / "x.npy"
    with artifacts.npy_writer(target, (5, 3), np.float16) as mm:
        assert isinstance(mm, np.memmap)
        assert not target.exists()
        mm[:] = 1.5
    arr = artifacts.read_npy(target, shape0=5, ndim=2)
    assert isinstance(arr, np.memmap) and arr.dtype == np.float16 and float(arr.sum()) == 22.5
    with pytest.raises(TemacliError, match="has 5 rows, expected 6"):
        artifacts.read_npy(target, shape0=6)


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    out = tmp_path / "ds"
    with artifacts.atomic_dir(out) as d:
        (d / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with artifacts.atomic_dir(out, replace=True) as d:
            (d / "a").write_text("2")
            raise RuntimeError
    assert (out / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    with pytest.raises(TemacliError, match="--force"):
        with artifacts.atomic_dir(out) as d:
            pass


def test_manifest_and_fingerprints(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("hello")
    rec = artifacts.input_record(f)
    assert rec["fingerprint"] == artifacts.text_fingerprint("hello")
    m = artifacts.build_manifest("demo", {"k": 1}, inputs={"in": rec}, counts={"n": 3})
    out = tmp_path / "out.parquet"
    out.write_bytes(b"x")
    p = artifacts.write_manifest(out, m)
    assert p.name == "out.parquet.manifest.json"
    back = artifacts.read_manifest(out, stage="demo")
    assert back["params"] == {"k": 1} and back["versions"]["numpy"] == np.__version__
    with pytest.raises(TemacliError, match="written by stage 'demo', expected 'other'"):
        artifacts.read_manifest(out, stage="other")
    d = tmp_path / "folder"
    d.mkdir()
    assert artifacts.manifest_path(d) == d / "manifest.json"
    (d / "a").write_text("1")
    fp1 = artifacts.fingerprint(d)
    artifacts.write_json({"x": 1}, d / "manifest.json")
    assert artifacts.fingerprint(d) == fp1  # manifests don't change a folder's fingerprint
    (d / "a").write_text("2")
    assert artifacts.fingerprint(d) != fp1


def test_check_same_says_both_sides():
    with pytest.raises(TemacliError, match=r"expected aaaaaaaaaaaa, found bbbbbbbbbbbb\); rerun"):
        artifacts.check_same("items fingerprint", "sha256:" + "a" * 64, "sha256:" + "b" * 64, "x.npy", "rerun")


# ----------------------------------------------------------------------------- modes, leftovers, output paths
import os
import signal
import subprocess
import sys

from temacli.errors import TemacliError as _TE  # noqa: E402  (same class, local name for the tests below)


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p) -> int:
    return os.stat(p).st_mode & 0o777


def test_current_umask_reads_without_changing(umask027):
    assert artifacts.current_umask() == 0o027
    assert artifacts.current_umask() == 0o027  # reading left it as it was
    assert artifacts.file_mode() == 0o640 and artifacts.dir_mode() == 0o750


def test_outputs_honour_the_umask(tmp_path, umask027):
    artifacts.write_table(pa.table({"a": pa.array([1], pa.int32()), "b": ["x"]}), tmp_path / "t.parquet", C)
    artifacts.write_npy(np.zeros(3), tmp_path / "z.npy")
    with artifacts.npy_writer(tmp_path / "m.npy", (2, 2), np.float32) as mm:
        mm[:] = 1
    artifacts.write_json({"k": 1}, tmp_path / "j.json")
    with artifacts.atomic_dir(tmp_path / "ds") as d:
        (d / "inner").write_text("x")
    for f in ("t.parquet", "z.npy", "m.npy", "j.json"):
        assert _mode(tmp_path / f) == 0o640, f
    assert _mode(tmp_path / "ds") == 0o750
    os.umask(0o022)
    artifacts.write_npy(np.zeros(3), tmp_path / "z.npy")  # a rewrite takes the umask of its own run
    with artifacts.atomic_dir(tmp_path / "ds", replace=True):
        pass
    assert _mode(tmp_path / "z.npy") == 0o644 and _mode(tmp_path / "ds") == 0o755


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_clean_stale_temps_removes_only_abandoned_leftovers(tmp_path):
    host = artifacts._host_tag()
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "dead": f".x.npy.{dead}-{host}.abc123.temacli-tmp.npy",
        "dead_dir": f".ds.{dead}-{host}.abc123.temacli-tmp",
        "dead_old": f".ds.{dead}-{host}.zzz.temacli-old",
        "alive": f".x.npy.{alive}-{host}.abc124.temacli-tmp.npy",
        "mine": f".x.npy.{os.getpid()}-{host}.abc125.temacli-tmp.npy",
        "other_host_new": f".x.npy.{dead}-000000.abc126.temacli-tmp.npy",
        "other_host_old": f".x.npy.{dead}-000001.abc127.temacli-tmp.npy",
        "legacy_old": ".y.parquet.k2j4h5g6.tmp",
        "legacy_new": ".y.parquet.a1b2c3d4.tmp",
        "user_file": ".hidden",
        "plain": "x.npy",
    }
    for k, n in names.items():
        if k == "dead_dir" or k == "dead_old":
            (tmp_path / n).mkdir()
            (tmp_path / n / "big").write_bytes(b"0" * 100)
        else:
            (tmp_path / n).write_bytes(b"half")
    for k in ("other_host_old", "legacy_old"):
        os.utime(tmp_path / names[k], (0, 0))
    removed = artifacts.clean_stale_temps(tmp_path, name="x.npy")
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["other_host_old"]])
    removed = artifacts.clean_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names["dead_dir"], names["dead_old"], names["legacy_old"]])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(names[k] for k in ("alive", "mine", "other_host_new", "legacy_new", "user_file", "plain"))
    assert artifacts.clean_stale_temps(tmp_path / "missing") == []


def test_a_killed_write_leaves_a_temp_that_the_next_write_removes(tmp_path):
    target = tmp_path / "ckpt.npy"
    code = (
        "import os, signal, sys\n"
        "from temacli import artifacts\n"
        "with artifacts.atomic_path(sys.argv[1], suffix='.npy') as tmp:\n"
        "    tmp.write_bytes(b'0' * 100000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(target)])
    assert res.returncode == -signal.SIGKILL
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and artifacts.TEMP_MARK in left[0].name and left[0].name.startswith(".ckpt.npy.")
    artifacts.write_npy(np.ones(2), target)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npy"]




def test_check_output_refuses_what_cannot_be_written(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    d = tmp_path / "folder"
    d.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (f, "dir", "--out {}: is an existing file, expected a folder"),
        (d, "file", "--out {}: is an existing folder, expected a file"),
        (f / "sub" / "x.parquet", "file", "--out {}: cannot be created because " + str(f) + " is a file"),
        (f / "sub", "dir", "--out {}: cannot be created because " + str(f) + " is a file"),
    ]
    for path, kind, msg in cases:
        with pytest.raises(_TE) as e:
            artifacts.check_output(path, kind)
        assert str(e.value).startswith(msg.format(path)) and "\n" not in str(e.value), (path, kind)
    ro = unwritable_dir(tmp_path)
    for path, kind in ((ro / "x.parquet", "file"), (ro / "new" / "deeper", "dir"), (ro, "dir")):
        with pytest.raises(_TE, match="is not writable"):
            artifacts.check_output(path, kind, flag="--out")
    with pytest.raises(_TE, match=r"^--model-out "):
        artifacts.check_output(d, "file", flag="--model-out")
    # what can be written passes and nothing is created
    assert artifacts.check_output(tmp_path / "new" / "deeper" / "x.json", "file") == tmp_path / "new" / "deeper" / "x.json"
    artifacts.check_output(d, "dir", renamed=True)
    artifacts.check_output(f, "file")
    artifacts.check_output(tmp_path / "a" / "b", "dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
