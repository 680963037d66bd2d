"""`eval --ks`, `--layout llmcdsr`, option ranges and output paths checked before any work."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from _eval_fixtures import DotModel, fake_models  # noqa: F401  (fixture)
from temacli.data.dataset import Dataset
from temacli.evaluation.evaluate import evaluate_scorer
from temacli.evaluation.protocols import full_ranks


@pytest.fixture
def runs(tmp_path, fake_models, make_dataset):  # noqa: F811
    ds = Dataset.open(make_dataset(tmp_path, preset="eval"))
    m = DotModel(ds, seed=1, kind="tema")
    a = fake_models(tmp_path / "good", m)
    b = fake_models(tmp_path / "other", DotModel(ds, seed=2, kind="sasrec"))
    return ds, a, b, m


def test_ks_give_ndcg_and_hr_at_every_k(tmp_path, make_dataset):
    ds = Dataset.open(make_dataset(tmp_path, preset="eval"))
    model = DotModel(ds, seed=3)
    res = evaluate_scorer(model, ds, protocol="full", ks=(10, 1, 3, 5, 3))
    assert res["ks"] == [1, 3, 5, 10]
    assert res["metric_names"] == ["MRR", "NDCG@1", "NDCG@3", "NDCG@5", "NDCG@10", "HR@1", "HR@3", "HR@5", "HR@10"]
    ranks, _ = full_ranks(model, ds.split("test"), (ds.domain_range(0), ds.domain_range(1)))
    dom = ds.split("test").target_domain
    for d, name in enumerate(ds.domains):
        r = ranks[dom == d]
        got = res["metrics"][name]
        assert set(got) == {"n", *res["metric_names"]}
        assert got["HR@3"] == pytest.approx(float(np.mean(r <= 3)))
        assert got["NDCG@3"] == pytest.approx(float(np.mean([1 / math.log2(x + 1) if x <= 3 else 0 for x in r])))
        assert got["NDCG@1"] == got["HR@1"]  # one relevant item: the two agree at k = 1
        assert got["MRR"] == pytest.approx(float(np.mean(1 / r)))
    # slices carry the same cutoffs
    assert "HR@3" in res["slices"]["history"]["both domains"]["all"]
    default = evaluate_scorer(model, ds, protocol="full")
    assert default["ks"] is None and default["metric_names"] == ["MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10"]


def test_cli_ks_and_llmcdsr_layout(runs, run_cli):
    ds, a, b, _ = runs
    code, out, err = run_cli(["eval", "--model", a, "--ks", "1,3,5,10", "--json"])
    assert code == 0, err
    assert json.loads(out)["metric_names"][-4:] == ["HR@1", "HR@3", "HR@5", "HR@10"]
    code, out, err = run_cli(["eval", "--model", a, "--layout", "llmcdsr", "--markdown", "--no-slices"])
    assert code == 0, err
    header = next(ln for ln in out.splitlines() if ln.startswith("| target domain"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[2:10] == ["NDCG@1 %", "NDCG@3 %", "NDCG@5 %", "NDCG@10 %", "HR@1 %", "HR@3 %", "HR@5 %", "HR@10 %"]
    assert "MRR %" not in cols
    code, out, err = run_cli(["eval", "--model", a, "--layout", "llmcdsr"])  # the rich tables
    assert code == 0 and "LLMCDSR's layout" in out and "NDCG@3" in out and "HR@3" in out
    code, out, err = run_cli(["eval", "--compare", a, b, "--layout", "llmcdsr", "--json", "--quiet"])
    assert code == 0, err
    assert json.loads(out)["metrics"] == ["NDCG@1", "NDCG@3", "NDCG@5", "NDCG@10", "HR@1", "HR@3", "HR@5", "HR@10"]
    code, _, err = run_cli(["eval", "--model", a, "--layout", "llmcdsr", "--ks", "5,10"])
    assert code == 2 and "--layout llmcdsr needs k = 1,3,5,10" in err
    code, _, err = run_cli(["eval", "--model", a, "--layout", "wide"])
    assert code == 2 and "'wide' is not one of 'paper', 'llmcdsr'" in err
    code, _, err = run_cli(["eval", "--compare", a, b, "--metrics", "HR@3"])  # HR@3 not evaluated by default
    assert code == 2 and "HR@3 not among the cutoffs" in err


@pytest.mark.parametrize("args, needle", [
    (["--ks", "0,5"], "--ks 0,5: give comma-separated integers between 1 and 1000"),
    (["--ks", "five"], "--ks five: give comma-separated integers between 1 and 1000"),
    (["--ks", "1,5000"], "between 1 and 1000"),
    (["--batch-size", "0"], "--batch-size 0: must be between 1 and 65536"),
    (["--batch-size", "100000"], "--batch-size 100000: must be between 1 and 65536"),
    (["--chunk-size", "0"], "--chunk-size 0: must be between 1 and 16777216"),
    (["--cold-threshold", "-1"], "--cold-threshold -1: must be between 0 and 1000000000"),
    (["--recompute"], "--recompute goes with --compare"),
    (["--device", "gpu"], "--device gpu: choose auto, cpu, cuda or cuda:N"),
])
def test_bad_values_are_refused_before_any_work(runs, run_cli, monkeypatch, args, needle):
    ds, a, _, model = runs
    import temacli.evaluation.evaluate as ev

    opened = []
    monkeypatch.setattr(ev, "open_model_and_data", lambda *x, **k: opened.append(x))
    code, out, err = run_cli(["eval", "--model", a, *args])
    assert code == 2 and needle in err and out == ""
    assert len(err.strip().splitlines()) == 1
    assert opened == [] and model.calls["encode"] == 0 and not (a / "eval").exists()


def test_help_shows_the_ranges(run_cli):
    code, out, _ = run_cli(["eval", "--help"])
    assert code == 0
    flat = " ".join(out.replace("│", " ").split())  # rich wraps help text inside a box
    for needle in ("1 to 65536", "1 to 16777216", "from 1 to 1000", "--recompute", "--layout", "--ks"):
        assert needle in flat, needle


def test_bad_out_paths_are_refused_before_any_work(runs, run_cli, tmp_path):
    ds, a, b, model = runs
    folder = tmp_path / "a_folder"
    folder.mkdir()
    code, _, err = run_cli(["eval", "--model", a, "--out", folder])
    assert code == 2 and "is an existing folder, expected a file" in err
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    code, _, err = run_cli(["eval", "--model", a, "--out", a_file / "r.json"])
    assert code == 2 and "is a file, not a folder" in err
    code, _, err = run_cli(["eval", "--compare", a, b, "--out", folder])
    assert code == 2 and "is an existing folder" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            code, _, err = run_cli(["eval", "--model", a, "--out", locked / "r.json"])
            assert code == 2 and "is not writable" in err
        finally:
            locked.chmod(0o700)
    assert model.calls["encode"] == 0 and not (a / "eval").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".json")) == []
