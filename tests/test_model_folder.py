"""The model folder (temacli.model.folder): typed view, recorded paths, config checks, the registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _train_fixtures import make_tags
from temacli.data.dataset import Dataset
from temacli.errors import TemacliError
from temacli.model import registry
from temacli.model.folder import ModelFolder, load_trained, open_model_and_data


@pytest.fixture(scope="module")
def tr(trained_runs):
    return trained_runs


def test_open_gives_a_typed_view(tr):
    f = ModelFolder.open(tr["tema"])
    ds = tr["data"]
    assert f.kind == "tema" and (f.n_x, f.n_y) == (ds.n_x, ds.n_y) and f.domains == tuple(ds.domains)
    assert f.dataset_fingerprint == ds.fingerprint and f.max_len == 10 and f.early_stop == "loss"
    rec = f.inputs["dataset"]
    assert Path(rec["path"]).is_absolute() and not Path(rec["relative"]).is_absolute()
    assert f.dataset_path().resolve() == ds.path.resolve()
    assert f.tags_path().resolve() == Path(tr["tags"]).resolve()
    assert f.weights_files() == ["model.safetensors"]
    with pytest.raises(TemacliError, match="early-stop"):
        f.weights_files("per-domain")
    assert ModelFolder.open(tr["sasrec"]).tags_path() is None


def test_a_moved_tree_of_runs_resolves_inside_the_new_place(tr, tmp_path):
    """Dataset, tags and model copied together: the copy reads the copy's inputs (relative paths)."""
    src = tr["tmp"]
    dst = tmp_path / "moved"
    shutil.copytree(src, dst)
    f = ModelFolder.open(dst / "tema")
    assert f.dataset_path().resolve() == (dst / tr["data"].path.relative_to(src)).resolve()
    assert str(f.tags_path().resolve()).startswith(str(dst.resolve()))
    model, ds = open_model_and_data(dst / "tema", None, "cpu")
    assert ds.fingerprint == tr["data"].fingerprint and model.kind == "tema"


@pytest.mark.slow
def test_recommend_from_another_directory_without_data_keeps_tags(tmp_path, run_cli, monkeypatch, make_dataset):
    """Trained with relative paths from one directory, used by absolute path from another."""
    work = tmp_path / "work"
    ds = Dataset.open(make_dataset(work, name="data"))
    make_tags(ds, work / "tags")
    monkeypatch.chdir(work)
    code, _, err = run_cli(["train", "--data", "data", "--tags", "tags/item_tags.parquet", "--out", "model",
                            "--epochs", "1", "--dim", "8", "--batch-size", "16", "--device", "cpu", "--quiet"])
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uid = str(ds.split("test").user_id[0])
    code, out, err = run_cli(["recommend", "--model", work / "model", "--user", uid, "--json", "--device", "cpu"])
    assert code == 0, err
    r = json.loads(out)
    assert "note" not in err  # the tags were found: no "tags not shown"
    assert all(x["tags"] for x in r["recommendations"]) and r["data"]["fingerprint"] == ds.fingerprint
    code, out, err = run_cli(["eval", "--model", work / "model", "--json", "--device", "cpu"])
    assert code == 0, err


def _broken_copy(tr, tmp_path, edit) -> Path:
    dst = tmp_path / "broken"
    shutil.copytree(tr["sasrec"], dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.update(n_x="many"), "field 'n_x' is str"),
    (lambda c: c.pop("max_len"), "field 'max_len' is missing"),
    (lambda c: c.update(model=[1, 2]), "field 'model' is list"),
    (lambda c: c.update(kind="transformer"), "unknown model kind"),
    (lambda c: c["model"].update(depth=3), "'model' field does not fit"),
])
def test_bad_config_json_is_one_line(tr, tmp_path, run_cli, edit, needle):
    broken = _broken_copy(tr, tmp_path, edit)
    with pytest.raises(TemacliError, match=needle):
        load_trained(broken, device="cpu")
    code, _, err = run_cli(["eval", "--model", broken, "--device", "cpu"])
    assert code == 2 and needle.split("'")[0] in err and len(err.strip().splitlines()) == 1, err


def test_registry_drives_kinds_and_flags():
    assert registry.KINDS == ("tema", "sasrec", "gru4rec")
    assert registry.get("sasrec").accepts("id") and not registry.get("sasrec").accepts("tags")
    assert registry.params_from_flags("tema", {"--dim": 32, "--alpha": None}) == {"q": 32}
    assert registry.params_from_flags("gru4rec", {"--dim": 32}) == {"dim": 32}
    with pytest.raises(TemacliError, match="--lambda1: not an option of --arch sasrec"):
        registry.params_from_flags("sasrec", {"--lambda1": 0.5})
    with pytest.raises(TemacliError, match="choose one of tema, sasrec, gru4rec"):
        registry.get("bert4rec")
    cfg = registry.get("gru4rec").make_config(5, 6, dim=8)
    assert (cfg.kind, cfg.dim, cfg.n_x) == ("gru4rec", 8, 5)


def test_reading_a_model_loads_no_training_code():
    """eval and recommend read model folders without importing the training package (no loop)."""
    code = ("import sys, temacli.model.folder, temacli.model.api, temacli.recommend; "
            "print(sorted(m for m in sys.modules if m.startswith('temacli.training') or m == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
