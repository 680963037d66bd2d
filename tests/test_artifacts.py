"""The artifact contracts: validation, atomic writes, manifests, fingerprints."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

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
