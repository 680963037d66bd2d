"""`temacli eval` and `--compare` through the CLI, on fake models (no torch needed)."""

from __future__ import annotations

import json

import pytest

from _eval_fixtures import DotModel, fake_models  # noqa: F401  (fixture)
from temacli import artifacts
from temacli.data.dataset import Dataset


@pytest.fixture
def runs(tmp_path, fake_models, make_dataset):  # noqa: F811
    ds = Dataset.open(make_dataset(tmp_path, preset="eval"))
    a = fake_models(tmp_path / "good", DotModel(ds, seed=1, kind="tema"))
    b = fake_models(tmp_path / "other", DotModel(ds, seed=2, kind="sasrec"))
    return ds, a, b, fake_models


def test_eval_table_names_everything(runs, run_cli):
    ds, a, _, _ = runs
    code, out, err = run_cli(["eval", "--model", a, "--data", ds.path, "--split", "test"])
    assert code == 0, err
    for needle in ("protocol: sampled", "split: test", ds.candidates_fingerprint("test").split(":")[1][:12],
                   str(a), "food", "kitchen", "MRR", "NDCG@10", "HR@10", "history: both domains", "cold"):
        assert needle in out, needle


def test_eval_json_and_data_from_manifest(runs, run_cli):
    ds, a, _, _ = runs
    code, out, _ = run_cli(["eval", "--model", a, "--protocol", "full", "--json"])  # --data from the manifest
    assert code == 0
    r = json.loads(out)
    assert r["protocol"] == "full" and r["exclude_history"] is True and r["split"] == "test"
    assert r["model"]["path"] == str(a) and r["model"]["kind"] == "tema"
    assert r["data"]["fingerprint"] == ds.fingerprint and r["candidates"]["fingerprint"].startswith("sha256:")
    assert r["metrics"]["all"]["n"] == len(ds.split("test"))
    code, out, _ = run_cli(["eval", a, "--protocol", "full", "--keep-history", "--json"])
    assert json.loads(out)["exclude_history"] is False


def test_eval_markdown_and_out_with_manifest(runs, run_cli, tmp_path):
    ds, a, _, _ = runs
    dest = tmp_path / "m.json"
    code, out, _ = run_cli(["eval", "--model", a, "--data", ds.path, "--markdown", "--out", dest])
    assert code == 0
    assert out.startswith("- model:") and "| target domain | n | MRR % |" in out and "protocol: sampled" in out
    saved = json.loads(dest.read_text())
    m = artifacts.read_manifest(dest, stage="eval")
    assert m["inputs"]["data"]["fingerprint"] == ds.fingerprint == saved["data"]["fingerprint"]
    assert m["outputs"]["result"]["fingerprint"] == artifacts.fingerprint(dest)


def test_compare_table_bold_best_and_json(runs, run_cli, tmp_path):
    ds, a, b, _ = runs
    code, out, err = run_cli(["eval", "--compare", a, b, "--data", ds.path, "--markdown"])
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| model | kind | food MRR %")
    assert "candidates" in out and "protocol: sampled" in out
    code, out, _ = run_cli(["eval", "--compare", a, b, "--data", ds.path, "--json"])
    cmp = json.loads(out)
    assert [r["model"] for r in cmp["rows"]] == ["good", "other"]
    for d in ("food", "kitchen"):
        vals = [r["values"][d]["MRR"] for r in cmp["rows"]]
        assert cmp["best"][d]["MRR"] == ([vals.index(max(vals))] if vals[0] != vals[1] else [0, 1])
    # the markdown bolds exactly the best cells
    code, md, _ = run_cli(["eval", "--compare", a, b, "--data", ds.path, "--markdown"])
    n_best = sum(len(v) for d in ("food", "kitchen") for v in cmp["best"][d].values())
    assert md.count("**") == 2 * n_best
    # saved results compare too, without re-running
    ra, rb = tmp_path / "a.json", tmp_path / "b.json"
    for p, m in ((ra, a), (rb, b)):
        code, out, _ = run_cli(["eval", "--model", m, "--data", ds.path, "--json"])
        p.write_text(out)
    code, out, _ = run_cli(["eval", "--compare", ra, rb, "--json"])
    assert code == 0 and json.loads(out)["rows"][0]["values"] == cmp["rows"][0]["values"]
    saved = tmp_path / "cmp.json"
    code, _, _ = run_cli(["eval", "--compare", ra, rb, "--out", saved])
    assert code == 0 and json.loads(saved.read_text())["best"] == cmp["best"]
    assert artifacts.read_manifest(saved, stage="eval compare")["counts"]["runs"] == 2


def test_compare_refuses_other_candidates(runs, run_cli, tmp_path):
    ds, a, b, _ = runs
    ra, rb = tmp_path / "a.json", tmp_path / "b.json"
    run_cli(["eval", "--model", a, "--data", ds.path, "--out", ra])
    run_cli(["eval", "--model", b, "--data", ds.path, "--out", rb])
    r = json.loads(rb.read_text())
    r["candidates"]["fingerprint"] = "sha256:" + "0" * 64  # negatives re-drawn
    rb.write_text(json.dumps(r))
    code, out, err = run_cli(["eval", "--compare", ra, rb])
    assert code == 2 and out == ""
    assert "candidate set differs" in err and str(b) in err and len(err.strip().splitlines()) == 1


def test_compare_refuses_other_protocol_or_data(runs, run_cli, tmp_path, make_dataset):
    ds, a, b, fake = runs
    ra, rb = tmp_path / "a.json", tmp_path / "b.json"
    run_cli(["eval", "--model", a, "--out", ra])
    run_cli(["eval", "--model", b, "--protocol", "full", "--out", rb])
    code, _, err = run_cli(["eval", "--compare", ra, rb])
    assert code == 2 and "protocol differs" in err
    other_ds = Dataset.open(make_dataset(tmp_path / "elsewhere", seed=5, preset="eval"))
    c = fake(tmp_path / "c", DotModel(other_ds))
    code, _, err = run_cli(["eval", "--compare", a, c])  # each with its own recorded dataset
    assert code == 2 and "dataset differs" in err


def test_eval_errors_exit_2(runs, run_cli, tmp_path, make_dataset):
    ds, a, _, fake = runs
    other_ds = Dataset.open(make_dataset(tmp_path / "elsewhere", seed=5, preset="eval"))
    code, _, err = run_cli(["eval", "--model", a, "--data", other_ds.path])
    assert code == 2 and "dataset fingerprint" in err
    code, _, err = run_cli(["eval", "--model", a, "--protocol", "fancy"])
    assert code == 2 and "'fancy' is not one of 'sampled', 'full'" in err
    code, _, err = run_cli(["eval", "--model", a, "--split", "train"])
    assert code == 2 and "'train' is not one of 'test', 'valid'" in err
    code, _, err = run_cli(["eval", "--model", tmp_path / "nope"])
    assert code == 2 and "model folder not found" in err
    code, _, err = run_cli(["eval", "--compare", a])
    assert code == 2 and "at least two" in err
    code, _, err = run_cli(["eval"])
    assert code == 2 and "--model" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    code, _, err = run_cli(["eval", "--compare", bad, a])
    assert code == 2 and "not a temacli evaluation result" in err


def test_per_domain_weights_route_each_domain(runs, run_cli):
    """--weights per-domain: food targets ranked by model.food, kitchen targets by model.kitchen."""
    ds, a, _, fake = runs
    m_food, m_kitchen = DotModel(ds, seed=11, kind="tema"), DotModel(ds, seed=12, kind="tema")
    fake(a, m_food, weights="model.food.safetensors")
    fake(a, m_kitchen, weights="model.kitchen.safetensors")
    res = {}
    for w in ("per-domain", "model.food.safetensors", "model.kitchen.safetensors"):
        code, out, err = run_cli(["eval", "--model", a, "--weights", w, "--protocol", "full", "--json"])
        assert code == 0, err
        res[w] = json.loads(out)
    per = res["per-domain"]
    assert per["model"]["weights"] == "per-domain" and per["model"]["name"] == "good:per-domain"
    assert per["metrics"]["food"] == res["model.food.safetensors"]["metrics"]["food"]
    assert per["metrics"]["kitchen"] == res["model.kitchen.safetensors"]["metrics"]["kitchen"]
    assert per["model"]["fingerprint"] not in (res[w]["model"]["fingerprint"] for w in res if w != "per-domain")
    code, _, err = run_cli(["eval", "--model", a, "--weights", "model.best.safetensors"])
    assert code == 2 and "weights not found" in err


def test_compare_metric_columns(runs, run_cli):
    ds, a, b, _ = runs
    code, out, _ = run_cli(["eval", "--compare", a, b, "--metrics", "mrr,HR@10", "--json"])
    assert code == 0 and json.loads(out)["metrics"] == ["MRR", "HR@10"]
    code, _, err = run_cli(["eval", "--compare", a, b, "--metrics", "AUC"])
    assert code == 2 and "--metrics AUC" in err


def test_edited_negatives_are_refused(runs, run_cli):
    """A candidates file that no longer matches the fingerprint data split recorded is refused."""
    import numpy as np

    ds, a, _, _ = runs
    path = ds.path / "candidates_test.npy"
    cands = np.load(path)
    np.save(path, np.roll(cands, 1, axis=1))  # same negatives, other order: still another file
    code, out, err = run_cli(["eval", "--model", a])
    assert code == 2 and "stored negatives" in err and "candidates_test.npy" in err and out == ""


def test_docs_list_every_eval_option():
    """docs/evaluation.md's option table names exactly the options `temacli eval --help` has."""
    import re
    from pathlib import Path

    import typer.main

    from temacli.cli import app

    cmd = typer.main.get_command(app).commands["eval"]
    cli = {o for p in cmd.params if p.param_type_name == "option" for o in p.opts + p.secondary_opts
           if o.startswith("--")}
    page = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    section = page.split("## Options", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)`", section))
    assert documented == cli
