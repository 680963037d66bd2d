"""`temacli plot`: learning curves and comparisons as PNGs of the asked size, seeds grouped, refusals."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from temacli import plot
from temacli.data.dataset import Dataset
from temacli.errors import TemacliError


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def metric_block(base: float) -> dict:
    return {"n": 50, "MRR": base, "NDCG@5": base * 0.9, "NDCG@10": base * 1.1, "HR@1": base / 2, "HR@5": base * 1.5,
            "HR@10": base * 2}


def fake_model(root: Path, name: str, kind: str, quality: float, epochs: int = 6, best: int = 4,
               data_fp: str = "sha256:data", protocols=("sampled", "full")) -> Path:
    """A model folder as `temacli train` leaves it, with eval results as `temacli eval --out` writes them."""
    folder = root / name
    folder.mkdir(parents=True)
    lines = []
    for e in range(1, epochs + 1):
        lines.append(json.dumps({
            "epoch": e, "train_loss": 5.0 - 0.3 * e, "valid_loss": 5.2 - 0.2 * min(e, best) + 0.1 * max(0, e - best),
            "valid": {"food": metric_block(quality * e / epochs), "kitchen": metric_block(quality * 0.6 * e / epochs),
                      "all": metric_block(quality * 0.8 * e / epochs)},
            "improved": e <= best,
        }))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "config.json").write_text(json.dumps({
        "kind": kind, "best": {"status": "done", "epochs_run": epochs, "stopped_early": True, "best_epoch": best}}))
    for p in protocols:
        res = {
            "kind": "temacli.eval", "schema": 1, "model": {"name": name, "kind": kind},
            "data": {"path": "runs/x/data", "fingerprint": data_fp, "domains": ["food", "kitchen"]},
            "split": "test", "protocol": p, "candidates": {"fingerprint": f"sha256:cands-{p}"},
            "metrics": {"food": metric_block(quality), "kitchen": metric_block(quality * 0.5),
                        "all": metric_block(quality * 0.7)},
        }
        (root / f"{name}.test.{p}.json").write_text(json.dumps(res))  # beside the folder, as the scripts do
    return folder


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "grid"
    return [fake_model(root, "tema_s1", "tema", 0.30), fake_model(root, "tema_s2", "tema", 0.34),
            fake_model(root, "tema_s3", "tema", 0.32), fake_model(root, "sasrec_s1", "sasrec", 0.25, epochs=8, best=3),
            fake_model(root, "gru4rec", "gru4rec", 0.20)]


@pytest.mark.slow
def test_plot_writes_pngs_of_the_asked_size(models, tmp_path, run_cli):
    out = tmp_path / "figs"
    models = [models[0], models[1], models[4]]  # two seeds of tema, one gru4rec
    code, stdout, err = run_cli(["plot", *models, "--out", out, "--dpi", "50", "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    names = sorted(Path(f["path"]).name for f in summary["figures"])
    assert names == sorted([f"{m.name}.curves.png" for m in models] + ["compare.test.full.png", "compare.test.sampled.png"])
    for m in models:
        f = out / f"{m.name}.curves.png"
        assert f.stat().st_size > 5000  # a drawn figure, not an empty canvas
        assert png_size(f) == (round(plot.CURVE_SIZE[0] * 50), round(plot.CURVE_SIZE[1] * 50))
    for p in ("sampled", "full"):
        f = out / f"compare.test.{p}.png"
        assert f.stat().st_size > 5000
        assert png_size(f) == (round(plot.COMPARE_PANEL[0] * 2 * 50), round(plot.COMPARE_PANEL[1] * 50))
    assert summary["groups"] == {"tema": ["tema_s1", "tema_s2"], "gru4rec": ["gru4rec"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "plot" and len(manifest["outputs"]) == len(names)
    assert "tema_s1/test.full" in manifest["inputs"] and "tema_s1/metrics.jsonl" in manifest["inputs"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]

    # three metrics: one more panel, wider figure; one protocol only
    code, _, err = run_cli(["plot", *models, "--out", out, "--dpi", "40", "--metrics", "MRR,NDCG@5,HR@10",
                            "--protocol", "full", "--no-curves", "--force"])
    assert code == 0, err
    assert png_size(out / "compare.test.full.png") == (round(plot.COMPARE_PANEL[0] * 3 * 40), round(plot.COMPARE_PANEL[1] * 40))


def test_seeds_are_grouped_and_spread_is_the_sd_over_seeds(models):
    runs = [plot.read_run(m) for m in models]
    groups = plot.group_runs(runs)
    assert [(g.name, [r.seed for r in g.runs]) for g in groups] == [("tema", [1, 2, 3]), ("sasrec", [1]), ("gru4rec", [None])]
    vals = [plot._pct(r.results[("test", "full")]["metrics"]["food"]["MRR"]) for r in groups[0].runs]
    mean, sd = plot.seed_stats(vals)
    assert mean == pytest.approx(32.0) and sd == pytest.approx(2.0)  # 30, 34, 32 %
    assert plot.seed_stats([5.0]) == (5.0, 0.0)
    assert runs[0].kept_epoch == 4 and runs[3].kept_epoch == 3


def test_kept_epoch_without_a_best_block_is_the_last_improvement(tmp_path):
    m = fake_model(tmp_path, "x", "tema", 0.3, epochs=5, best=2)
    (m / "config.json").write_text(json.dumps({"kind": "tema"}))
    assert plot.read_run(m).kept_epoch == 2


def test_refusals_are_one_line_exit_2(models, tmp_path, run_cli):
    out = tmp_path / "figs"
    assert run_cli(["plot", *models, "--out", out, "--no-curves", "--protocol", "full", "--dpi", "30"])[0] == 0
    code, _, err = run_cli(["plot", *models, "--out", out, "--no-curves", "--protocol", "full"])
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["plot", tmp_path / "nope", "--out", out])
    assert code == 2 and "nope" in err
    code, _, err = run_cli(["plot", *models, "--out", tmp_path / "f2", "--metrics", "MAP"])
    assert code == 2 and "MAP" in err and "NDCG@10" in err
    code, _, err = run_cli(["plot", *models, "--out", tmp_path / "f3", "--protocol", "sampled", "--split", "valid"])
    assert code == 2 and "valid/sampled" in err
    # models evaluated on other data are not drawn side by side
    other = fake_model(tmp_path / "elsewhere", "other", "tema", 0.3, data_fp="sha256:another")
    code, _, err = run_cli(["plot", models[0], other, "--out", tmp_path / "f4", "--no-curves"])
    assert code == 2 and "different dataset" in err


def test_missing_matplotlib_is_one_clear_line(models, tmp_path, run_cli, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = run_cli(["plot", *models, "--out", tmp_path / "figs"])
    assert code == 2 and out == ""
    assert err.strip() == f"error: {plot._MISSING}" and "temacli[plot]" in err
    assert not (tmp_path / "figs").exists()


@pytest.mark.slow
def test_plot_a_tiny_run_trained_through_the_cli(tmp_path, run_cli, make_dataset):
    ds = Dataset.open(make_dataset(tmp_path, n_users=16, length=10))
    model = tmp_path / "tiny_s1"
    code, _, err = run_cli(["train", "--data", ds.path, "--out", model, "--model", "sasrec", "--epochs", "3",
                            "--dim", "8", "--batch-size", "8", "--quiet"])
    assert code == 0, err
    code, stdout, err = run_cli(["plot", model, "--out", tmp_path / "figs", "--dpi", "60", "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert [Path(f["path"]).name for f in summary["figures"]] == ["tiny_s1.curves.png"]
    assert "comparison" in summary["skipped"]  # not evaluated yet: no comparison, and it says so
    f = tmp_path / "figs" / "tiny_s1.curves.png"
    assert png_size(f) == (round(plot.CURVE_SIZE[0] * 60), round(plot.CURVE_SIZE[1] * 60)) and f.stat().st_size > 5000
    assert plot.read_run(model).kept_epoch in (1, 2, 3)
