"""What the features readers and stages refuse: bad matrices, masks and manifests; bad flags and outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from temacli import artifacts
from temacli.data.dataset import Dataset
from temacli.errors import TemacliError
from temacli.features import store


@pytest.fixture
def data(tmp_path, make_dataset):
    return make_dataset(tmp_path, "data", items=[("food", "Green tea"), ("food", "Black tea"), ("food", "Honey"),
                                                 ("kitchen", "Chef knife"), ("kitchen", "Bread knife")])


def write_features(out, ds: Dataset, emb, mask=None, name="text", counts=None):
    """A features folder for ``ds`` whose manifest matches the arrays written (as the stages write it)."""
    out.mkdir(parents=True, exist_ok=True)
    emb = np.asarray(emb)
    mask = np.ones(len(emb), dtype=bool) if mask is None else np.asarray(mask)
    artifacts.write_npy(emb, out / f"{name}.npy")
    artifacts.write_npy(mask, out / f"has_{name}.npy")
    store.write_manifest_for(
        out, name, "features text", {"model": "test"}, ds.path / "items.parquet", ds.items_fingerprint,
        counts if counts is not None else {"n_items": len(emb), "dim": int(emb.shape[1]), "missing": 0},
    )
    return out


def unit_rows(n, d=4, seed=0):
    e = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def refused(out, ds, needle):
    with pytest.raises(TemacliError) as e:
        store.load_modality(out, "text", ds)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and "temacli features text" in msg, msg
    return msg


def test_good_features_load_and_float64_is_accepted(data, tmp_path):
    ds = Dataset.open(data)
    mod = store.load_modality(write_features(tmp_path / "f", ds, unit_rows(ds.n_items)), "text", ds)
    assert mod.dim == 4 and mod.mask.all() and mod.embeddings.dtype == np.float32
    mod = store.load_modality(write_features(tmp_path / "g", ds, unit_rows(ds.n_items).astype(np.float64)), "text", ds)
    assert mod.embeddings.dtype == np.float64  # consumers read it as float32 (documented cast)


def test_nan_and_inf_rows_are_refused_naming_the_first(data, tmp_path):
    ds = Dataset.open(data)
    e = unit_rows(ds.n_items)
    e[3, 1] = np.nan
    e[4, 0] = np.inf
    msg = refused(write_features(tmp_path / "f", ds, e), ds, "row 3 (item 3) of the text features is not finite")
    assert str(tmp_path / "f" / "text.npy") in msg and "2 rows in all" in msg


def test_float64_beyond_float32_range_is_refused(data, tmp_path):
    ds = Dataset.open(data)
    e = unit_rows(ds.n_items).astype(np.float64)
    e[2, 0] = 1e39  # finite in float64, infinite once read as float32
    refused(write_features(tmp_path / "f", ds, e), ds, "row 2 (item 2) of the text features is not finite (NaN, infinity or beyond float32's range; 1 row in all)")


def test_non_finite_scan_is_chunked(monkeypatch):
    monkeypatch.setattr(store, "_SCAN_ELEMENTS", 8)  # 2 rows of 4 per chunk
    e = np.zeros((11, 4), np.float32)
    e[9, 2] = np.nan
    e[10, 0] = -np.inf
    assert store.first_non_finite(e) == (9, 2)
    assert store.first_non_finite(np.zeros((0, 4))) == (-1, 0)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_])
def test_integer_or_bool_matrices_are_refused(data, tmp_path, dtype):
    ds = Dataset.open(data)
    out = write_features(tmp_path / "f", ds, np.ones((ds.n_items, 4), dtype=dtype))
    refused(out, ds, f"text features are stored as {np.dtype(dtype).name}, expected float32 or float16")


def test_masks_bool_or_zero_one(data, tmp_path):
    ds = Dataset.open(data)
    mod = store.load_modality(write_features(tmp_path / "f", ds, unit_rows(ds.n_items), mask=np.array([1, 0, 1, 1, 1], np.int64)), "text", ds)
    assert mod.mask.dtype == bool and mod.mask.tolist() == [True, False, True, True, True]
    refused(write_features(tmp_path / "g", ds, unit_rows(ds.n_items), mask=np.array([1, 2, 1, 1, 1])), ds,
            "row 1 of the has_text mask holds 2, expected true/false")
    refused(write_features(tmp_path / "h", ds, unit_rows(ds.n_items), mask=np.ones(ds.n_items, np.float32)), ds,
            "has_text mask is stored as float32, expected bool")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda m: m["counts"].pop("n_items"), "manifest field counts.n_items is missing"),
        (lambda m: m["counts"].update(dim="4"), "manifest field counts.dim is '4', expected a non-negative integer"),
        (lambda m: m["counts"].update(dim=7), "counts.dim is 7, the matrix has 4 columns"),
        (lambda m: m["inputs"].pop("items"), "manifest field inputs.items.fingerprint is missing"),
        (lambda m: m.pop("outputs"), "manifest field outputs.text.fingerprint is missing"),
        (lambda m: m.update(stage="tags match"), "manifest stage 'tags match' is not a features stage"),
    ],
)
def test_manifest_fields_are_required(data, tmp_path, edit, needle):
    ds = Dataset.open(data)
    out = write_features(tmp_path / "f", ds, unit_rows(ds.n_items))
    mp = out / "text.npy.manifest.json"
    m = json.loads(mp.read_text())
    edit(m)
    mp.write_text(json.dumps(m))
    refused(out, ds, needle)
    if "stage" not in needle:
        with pytest.raises(TemacliError, match="manifest field|counts"):
            store.load_modality(out, "text")  # without a dataset too: no KeyError


def test_a_matrix_edited_after_its_manifest_is_refused(data, tmp_path):
    ds = Dataset.open(data)
    out = write_features(tmp_path / "f", ds, unit_rows(ds.n_items))
    artifacts.write_npy(unit_rows(ds.n_items, seed=1), out / "text.npy")
    refused(out, ds, "text.npy fingerprint (the file changed after its manifest was written) does not match")


# ----------------------------------------------------------------------------- the stages' flags and outputs
def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "args, first",
    [
        # --dtype, --precision, --modality are choices: a wrong one is a usage error (tests/test_cli_flags.py)
        (["text", "--batch-size", "0"], "--batch-size 0: must be between 1 and 65536"),
        (["text", "--device", "tpu"], "--device tpu: unknown device"),
        (["text", "--text-column", "nope"], "--text-column nope: "),
        (["clip", "--random-weights", "--batch-size", "-1"], "--batch-size -1: must be between 1 and 65536"),
        (["clip", "--random-weights", "--text-batch-size", "100000"], "--text-batch-size 100000: must be between 1 and 65536"),
        (["clip", "--random-weights", "--workers", "-2"], "--workers -2: must be between 0 and 64"),
        (["clip", "--random-weights", "--seed", "-1"], "--seed -1: must be between 0 and 4294967295"),
        (["clip", "--random-weights", "--image-column", "picture"], "--image-column picture: "),
        (["clip", "--random-weights", "--text-column", "title_x"], "--text-column title_x: "),
    ],
)
def test_bad_flags_exit_2_before_any_file(data, tmp_path, run_cli, args, first):
    before = listing(tmp_path)
    code, _, err = run_cli(["features", args[0], "--items", data, "--out", tmp_path / "feat", *args[1:]])
    assert code == 2 and err.startswith(f"error: {first}"), err
    assert len(err.strip().splitlines()) == 1
    assert listing(tmp_path) == before


def test_bad_outputs_exit_2_before_any_file(data, tmp_path, run_cli):
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "f2").mkdir()
    (tmp_path / "f2" / "text.npy").mkdir()
    before = listing(tmp_path)
    for cmd in (["text"], ["clip", "--random-weights"]):
        for out, first in (
            (afile, f"--out {afile}: is an existing file, expected a folder"),
            (afile / "sub", f"--out {afile / 'sub'}: cannot be created because {afile} is a file"),
            (tmp_path / "f2", f"--out {tmp_path / 'f2'}: {tmp_path / 'f2' / 'text.npy'} is a folder where the output file"),
        ):
            code, _, err = run_cli(["features", cmd[0], "--items", data, "--out", out, *cmd[1:]])
            assert code == 2 and err.startswith(f"error: {first}"), err
            # the library call refuses the same way (the CLI's check is not the only one)
            if cmd[0] == "text":
                from temacli.features.text import compute_text_features

                with pytest.raises(TemacliError, match="^--out "):
                    compute_text_features(data, out)
    assert listing(tmp_path) == before


def test_cuda_index_out_of_range_is_refused():
    import torch

    from temacli.features.device import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(TemacliError, match="CUDA is not available"):
            resolve_device("cuda:7")
    else:
        n = torch.cuda.device_count()
        with pytest.raises(TemacliError, match=f"has {n} CUDA device"):
            resolve_device(f"cuda:{n}")
