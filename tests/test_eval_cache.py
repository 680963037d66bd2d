"""Results saved in the model folder and reused by `eval --compare` (counted calls), `--recompute`."""

from __future__ import annotations

import json

import pytest

from _eval_fixtures import DotModel, fake_models  # noqa: F401  (fixture)
from temacli.data.dataset import Dataset
from temacli.evaluation import cache
from temacli.evaluation import evaluate as ev


@pytest.fixture
def world(tmp_path, fake_models, monkeypatch, make_dataset):  # noqa: F811
    ds = Dataset.open(make_dataset(tmp_path, preset="eval"))
    ma, mb = DotModel(ds, seed=1, kind="tema"), DotModel(ds, seed=2, kind="sasrec")
    a = fake_models(tmp_path / "a", ma)
    b = fake_models(tmp_path / "b", mb)
    calls = {"evaluate_scorer": 0}
    real = ev.evaluate_scorer

    def counted(*args, **kw):
        calls["evaluate_scorer"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(ev, "evaluate_scorer", counted)
    return {"ds": ds, "a": a, "b": b, "ma": ma, "mb": mb, "calls": calls, "add": fake_models, "tmp": tmp_path}


def encodes(w) -> int:
    return w["ma"].calls["encode"] + w["mb"].calls["encode"]


def test_second_compare_evaluates_nothing(world, run_cli):
    w = world
    code, out1, err = run_cli(["eval", "--compare", w["a"], w["b"], "--json"])
    assert code == 0, err
    assert w["calls"]["evaluate_scorer"] == 2 and encodes(w) > 0
    saved = sorted(p.name for p in (w["a"] / "eval").glob("*.json") if not p.name.endswith(".manifest.json"))
    assert len(saved) == 1 and saved[0].startswith("test.sampled.model.default-ks.")
    before = (w["calls"]["evaluate_scorer"], encodes(w))
    code, out2, err = run_cli(["eval", "--compare", w["a"], w["b"], "--json"])
    assert code == 0, err
    assert (w["calls"]["evaluate_scorer"], encodes(w)) == before  # nothing evaluated, nothing encoded
    assert "saved result reused" in err
    first, second = json.loads(out1), json.loads(out2)
    assert first["rows"] == second["rows"] and first["best"] == second["best"]
    # --recompute evaluates both again
    code, _, _ = run_cli(["eval", "--compare", w["a"], w["b"], "--recompute", "--quiet"])
    assert code == 0 and w["calls"]["evaluate_scorer"] == before[0] + 2


def test_plain_eval_saves_and_compare_reuses_it(world, run_cli):
    w = world
    code, out, err = run_cli(["eval", "--model", w["a"], "--protocol", "full", "--json"])
    assert code == 0 and "saved in" in err
    assert w["calls"]["evaluate_scorer"] == 1
    code, _, err = run_cli(["eval", "--compare", w["a"], w["b"], "--protocol", "full"])
    assert code == 0 and w["calls"]["evaluate_scorer"] == 2  # only b evaluated
    # another protocol, cutoffs or history rule is another key: evaluated again
    for extra in (["--protocol", "sampled"], ["--protocol", "full", "--keep-history"], ["--ks", "1,3"]):
        n = w["calls"]["evaluate_scorer"]
        code, _, err = run_cli(["eval", "--compare", w["a"], w["b"], "--quiet", *extra])
        assert code == 0, err
        assert w["calls"]["evaluate_scorer"] == n + 2, extra
    names = [p.name for p in (w["a"] / "eval").glob("*.json") if not p.name.endswith(".manifest.json")]
    assert len(names) == 4 and any(".keep-history." in n for n in names) and any(".k1-3." in n for n in names)


def test_changed_weights_or_dataset_are_evaluated_again(world, run_cli):
    w = world
    run_cli(["eval", "--compare", w["a"], w["b"], "--quiet"])
    n = w["calls"]["evaluate_scorer"]
    (w["a"] / "model.safetensors").write_bytes(b"retrained")  # new weights, new fingerprint
    p = cache.params("test", "sampled", True, None, "model.safetensors", 5)
    found, note = cache.lookup(w["a"], None, p)
    assert found is None and note == "model weights changed"
    code, _, _ = run_cli(["eval", "--compare", w["a"], w["b"], "--quiet"])
    assert code == 0 and w["calls"]["evaluate_scorer"] == n + 1  # a again, b reused
    found, note = cache.lookup(w["b"], None, p)
    assert found is not None and note.startswith("saved result reused")
    # a saved result whose dataset fingerprint is not the current one is never used
    path = cache.path_for(w["b"], w["ds"].fingerprint, p)
    r = json.loads(path.read_text())
    r["data"]["fingerprint"] = "sha256:" + "1" * 64
    path.write_text(json.dumps(r))
    assert cache.lookup(w["b"], None, p) == (None, "dataset changed")


def test_unwritable_model_folder_still_evaluates(world, run_cli, monkeypatch):
    w = world

    def refuse(result, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ev, "write_result", refuse)
    code, out, err = run_cli(["eval", "--model", w["a"], "--json"])
    assert code == 0 and json.loads(out)["metrics"]["all"]["n"] > 0
    assert "not writable" in err and not (w["a"] / "eval").exists()


def test_saved_result_manifest_names_its_options(world, run_cli):
    from temacli import artifacts

    w = world
    code, _, err = run_cli(["eval", "--model", w["a"], "--ks", "1,3,5,10", "--protocol", "full", "--quiet"])
    assert code == 0, err
    (path,) = [p for p in (w["a"] / "eval").glob("*.json") if not p.name.endswith(".manifest.json")]
    m = artifacts.read_manifest(path, stage="eval")
    assert m["params"]["ks"] == [1, 3, 5, 10] and m["params"]["weights"] == "model.safetensors"
    assert m["params"]["protocol"] == "full" and m["outputs"]["result"]["fingerprint"] == artifacts.fingerprint(path)
    assert path.name.startswith("test.full.model.k1-3-5-10.")
