"""`temacli train`: model selection by any metric, bad flags and inputs, non-finite losses, resume edge
cases, metrics.csv, the progress events."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import make_features, make_tags  # noqa: E402

from conftest import poison_weights_at
from temacli import artifacts  # noqa: E402
from temacli.data.dataset import Dataset  # noqa: E402
from temacli.errors import TemacliError  # noqa: E402
from temacli.model.folder import load_trained  # noqa: E402
from temacli.progress import Recorder  # noqa: E402
from temacli.training.loop import (  # noqa: E402
    EarlyStopping, ModelInputs, TrainOptions, parse_early_stop, tag_representation, train,
)

torch.set_num_threads(1)
SMALL = {"q": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_dataset):
    tmp = tmp_path_factory.mktemp("checks")
    ds = Dataset.open(make_dataset(tmp, n_users=30))
    return {"tmp": tmp, "ds": ds, "features": make_features(ds, tmp / "features"), "tags": make_tags(ds, tmp / "tags")}


def records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def quick(**kw) -> TrainOptions:
    base = dict(epochs=2, batch_size=8, softmax="sampled", negatives=5, device="cpu", max_len=12, seed=3)
    return TrainOptions(**{**base, **kw})


def test_early_stop_hr10_keeps_each_domains_best_validation_epoch(world):
    ds = world["ds"]
    out = world["tmp"] / "hr10"
    summary = train(ds.path, out, quick(epochs=6, lr=0.01, patience=6, early_stop="hr@10"),
                    ModelInputs(params=dict(SMALL)))
    lines = records(out / "metrics.jsonl")
    assert "HR@10" in lines[0]["valid"]["food"] and "NDCG@10" in lines[0]["valid"]["food"]
    config = json.loads((out / "config.json").read_text())
    manifest = artifacts.read_manifest(out, stage="train")
    assert config["train"]["early_stop"] == "hr@10" and config["selection_metric"] == "HR@10"
    assert manifest["params"]["early_stop"] == "hr@10" and manifest["summary"]["selection_metric"] == "HR@10"
    valid = ds.split("valid")
    from temacli.evaluation.metrics import hr_at
    from temacli.evaluation.protocols import sampled_ranks

    for d in ds.domains:
        hr = [r["valid"][d]["HR@10"] for r in lines]
        best = 1 + int(np.argmax(hr))  # the first epoch with the best value
        assert summary["best_epoch_by_domain"][d] == best and summary["best_by_domain"][d] == pytest.approx(max(hr))
        # the kept weights are that epoch's: they reproduce its validation HR@10 in this domain
        model = load_trained(out, device="cpu", dataset=ds, weights=f"model.{d}.safetensors")
        ranks = sampled_ranks(model, valid, ds.candidates("valid"))
        mine = valid.target_domain == ds.domains.index(d)
        assert hr_at(ranks[mine], 10) == pytest.approx(max(hr), abs=1e-9)
    means = [np.mean([r["valid"][d]["HR@10"] for d in ds.domains]) for r in lines]
    assert summary["best_epoch"] == 1 + int(np.argmax(means))
    assert sorted(p.name for p in out.glob("model*.safetensors")) == sorted(
        ["model.safetensors", "model.valid-loss.safetensors"] + [f"model.{d}.safetensors" for d in ds.domains])


def test_early_stop_values_and_tracker():
    assert [parse_early_stop(v) for v in ("loss", "MRR", "hr@10", "NDCG@3")] == ["loss", "MRR", "HR@10", "NDCG@3"]
    for bad in ("hr@0", "recall@10", "ndcg@x", "hr@5000"):
        with pytest.raises(TemacliError, match="--early-stop"):
            parse_early_stop(bad)
    t = EarlyStopping("loss", patience=2, domains=("a", "b"))
    assert t.update(1, float("nan"), {}) == (False, [])  # a non-finite epoch is never the best
    assert t.update(2, 3.0, {}) == (True, ["model.safetensors"]) and t.best_epoch == 2
    assert t.update(3, float("inf"), {}) == (False, [])
    t.update(4, 3.5, {})
    assert t.stopped and t.best_loss == 3.0
    h = EarlyStopping("HR@10", patience=3, domains=("a", "b"))
    assert h.update(1, 1.0, {"a": {"HR@10": 0.2}, "b": {"HR@10": float("nan")}})[1] == [
        "model.valid-loss.safetensors", "model.a.safetensors", "model.safetensors"]
    # the validation loss did not fall: only the domain that improved is saved
    assert h.update(2, 1.0, {"a": {"HR@10": 0.1}, "b": {"HR@10": 0.3}})[1] == ["model.b.safetensors"]
    assert h.best_epoch_by_domain == {"a": 1, "b": 2} and h.best_loss_epoch == 1
    assert h.update(3, 0.5, {"a": {"HR@10": 0.1}, "b": {"HR@10": 0.3}}) == (False, ["model.valid-loss.safetensors"])
    assert h.best_loss_epoch == 3 and h.bad == 1  # a lower loss alone does not reset the per-domain patience
    back = EarlyStopping.from_dict(h.to_dict(), "HR@10", 3, ("a", "b"))
    assert back == h
    old = {"epoch": 4, "best_epoch": 3, "best_loss": None, "best_mean_mrr": 0.4, "best_mrr": {"a": 0.5, "b": 0.3},
           "best_mrr_epoch": {"a": 3, "b": 2}, "bad": 1, "stopped": False}  # a checkpoint of an earlier version
    legacy = EarlyStopping.from_dict(old, "MRR", 10, ("a", "b"))
    assert legacy.best == {"a": 0.5, "b": 0.3} and legacy.best_mean == 0.4 and legacy.best_epoch_by_domain["a"] == 3


def test_bad_flags_exit_2_before_any_file(world, run_cli, tmp_path):
    base = ["train", "--data", world["ds"].path, "--quiet"]
    cases = [
        (["--dim", "0"], "--dim 0: must be an integer in 1..16384"),
        (["--lr", "-1"], "--lr -1.0: must be a number in (0, 10]"),
        (["--batch-size", "0"], "--batch-size 0: must be an integer in 1..1000000"),
        (["--epochs", "0"], "--epochs 0: must be an integer in 1..100000"),
        (["--eval-batch", "0"], "--eval-batch 0"),
        (["--early-stop", "recall@10"], "--early-stop recall@10"),
        (["--dropout", "1.5"], "--dropout 1.5"),
        (["--arch", "gru4rec", "--lambda1", "0.2"], "--lambda1: not an option of"),
    ]
    for i, (extra, needle) in enumerate(cases):
        out = tmp_path / f"m{i}"
        code, _, err = run_cli(base + extra + ["--out", out])
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, err)
        assert not out.exists(), extra  # nothing written, not even config.json
    # choices are enums: a usage error naming every choice (click's Usage/Error lines), nothing written
    for i, (extra, needle) in enumerate([(["--arch", "bert4rec"], "'bert4rec' is not one of 'tema', 'sasrec', 'gru4rec'"),
                                         (["--tags", world["tags"], "--tag-weights", "sqrt"], "'sqrt' is not one of 'file'")]):
        out = tmp_path / f"c{i}"
        code, _, err = run_cli(base + extra + ["--out", out])
        assert code == 2 and needle in err, (extra, err)
        assert not out.exists(), extra
    afile = tmp_path / "a-file"
    afile.write_text("x")
    code, _, err = run_cli(base + ["--out", afile])
    assert code == 2 and "existing file" in err and afile.read_text() == "x"
    code, out, _ = run_cli(["train", "--help"])
    assert code == 0 and "1..16384" in out and "hr@K" in out


def test_a_model_too_large_is_refused_with_its_size(world, monkeypatch, tmp_path):
    from temacli.training import sizing

    monkeypatch.setattr(sizing, "available_bytes", lambda device: 50 * 1024**2)  # a 50 MiB machine
    out = tmp_path / "big"
    with pytest.raises(TemacliError, match=r"too large for this machine: about [\d.]+ [GT]iB needed \([\d,]+ parameters at --dim 4096"):
        train(world["ds"].path, out, quick(), ModelInputs(params={"q": 4096}))
    assert not out.exists()
    est = sizing.estimate_memory(*_spec_cfg(world["ds"], 64), quick(), world["ds"].n_x, world["ds"].n_y)
    est2 = sizing.estimate_memory(*_spec_cfg(world["ds"], 128), quick(), world["ds"].n_x, world["ds"].n_y)
    assert est2.parameters > 2 * est.parameters > 0  # attention weights grow with dim^2


def _spec_cfg(ds, q):
    from temacli.model import registry

    spec = registry.get("sasrec")
    return spec, spec.make_config(ds.n_x, ds.n_y, dim=q), {}


def test_non_finite_inputs_and_loss_stop_with_exit_2(world, monkeypatch, tmp_path):
    ds = world["ds"]
    bad = make_features(ds, tmp_path / "nanfeat")
    emb = np.load(bad / "text.npy")
    emb[4, 2] = np.nan
    artifacts.write_npy(emb, bad / "text.npy")
    from temacli.features.store import write_manifest_for

    write_manifest_for(bad, "text", "features text", {"model": "fixture"}, ds.path / "items.parquet",
                       ds.items_fingerprint, {"n_items": ds.n_items, "dim": emb.shape[1]})  # recorded as a stage would
    with pytest.raises(TemacliError, match=r"text.npy: row 4 .*not finite"):
        train(ds.path, tmp_path / "nan-in", quick(), ModelInputs(features=str(bad), params=dict(SMALL)))
    assert not (tmp_path / "nan-in" / "config.json").exists()

    # a loss that turns NaN in epoch 2, batch 2: exit 2 naming both; epoch 1 stays the kept model

    n_batches = -(-len(ds.split("train")) // 8)
    poison_weights_at(monkeypatch, n_batches + 2)  # the weights turn NaN in epoch 2's second batch
    out = tmp_path / "nan-loss"
    with pytest.raises(TemacliError, match="loss is nan at epoch 2, batch 2"):
        train(ds.path, out, quick(epochs=3), ModelInputs(params=dict(SMALL)))
    assert [r["epoch"] for r in records(out / "metrics.jsonl")] == [1]
    summary = artifacts.read_manifest(out, stage="train")["summary"]
    assert summary["status"] == "non-finite loss" and summary["best_epoch"] == 1
    from safetensors.torch import load_file

    assert all(torch.isfinite(v).all() for v in load_file(str(out / "model.safetensors")).values())


def test_resume_edge_cases(world, tmp_path):
    ds = world["ds"]
    inputs = lambda tags: ModelInputs(tags=str(tags), params=dict(SMALL))  # noqa: E731
    out = tmp_path / "run"
    train(ds.path, out, quick(epochs=1), inputs(world["tags"]))
    # a kill between config.json and the first checkpoint: --resume (and a plain run) start over, with a note
    (out / "checkpoints" / "last.pt").unlink()
    rec = Recorder()
    train(ds.path, out, quick(epochs=1), inputs(world["tags"]), resume=True, progress=rec)
    assert any(e[0] == "message" and "no checkpoint" in e[1] for e in rec.events)
    assert (out / "checkpoints" / "last.pt").is_file() and [r["epoch"] for r in records(out / "metrics.jsonl")] == [1]
    # a temporary file of a killed checkpoint write is removed by the next run
    stale = out / "checkpoints" / f".last.pt.999999999-{artifacts._host_tag()}.x1.temacli-tmp.pt"  # its writer is gone
    stale.write_bytes(b"0" * 1000)
    # the same inputs by a relative path are the same run (compared by fingerprint)
    import os

    rel = Path(os.path.relpath(world["tags"], Path.cwd()))
    assert not rel.is_absolute()
    # a torn last line of metrics.jsonl (a kill while it was written) is dropped with a note
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')
    rec = Recorder()
    train(ds.path, out, quick(epochs=2), inputs(rel), resume=True, progress=rec)
    assert not stale.exists()
    assert any(e[0] == "message" and "cut off" in e[1] for e in rec.events)
    assert [r["epoch"] for r in records(out / "metrics.jsonl")] == [1, 2]
    # a config.json someone edited into the wrong shape is one line, not a crash
    good = (out / "config.json").read_text()
    for edit, needle in ((lambda c: c.pop("train"), "field 'train' is missing"),
                         (lambda c: c.update(inputs="x"), "field 'inputs' is str")):
        cfg = json.loads(good)
        edit(cfg)
        (out / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(TemacliError, match=needle):
            train(ds.path, out, quick(epochs=3), inputs(world["tags"]), resume=True)
    (out / "config.json").write_text(good)
    # other content under the same path is another run
    other = make_tags(ds, tmp_path / "othertags", seed=5)
    with pytest.raises(TemacliError, match="other inputs \\(tags differ by content\\)"):
        train(ds.path, out, quick(epochs=3), inputs(other), resume=True)


def test_metrics_csv_and_progress_events(world, tmp_path):
    import csv

    ds = world["ds"]
    out = tmp_path / "csv"
    rec = Recorder()
    train(ds.path, out, quick(epochs=2, early_stop="ndcg@3"), ModelInputs(params=dict(SMALL)), progress=rec)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    lines = records(out / "metrics.jsonl")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["valid_food_NDCG@3"]) == pytest.approx(lines[1]["valid"]["food"]["NDCG@3"])
    assert float(rows[0]["train_loss"]) == pytest.approx(lines[0]["train_loss"])
    starts = [e[2] for e in rec.events if e[0] == "start"]
    assert starts[0] == "epoch 1/2" and starts[1] == "validate epoch 1" and starts[2].startswith("epoch 2/2 (run ETA")
    msgs = [e[1] for e in rec.events if e[0] == "message"]
    assert len(msgs) == 2 and msgs[0].startswith("epoch 1/2") and "NDCG@3" in msgs[0]
    assert "artifacts" not in json.dumps(artifacts.read_manifest(out, stage="train")["outputs"])


def test_cpu_with_paper_sizes_prints_the_estimate(world, tmp_path):
    rec = Recorder()
    train(world["ds"].path, tmp_path / "paper", quick(epochs=1), ModelInputs(params={"q": 256}), progress=rec)
    notes = [e[1] for e in rec.events if e[0] == "message" and e[1].startswith("note: on this CPU")]
    assert len(notes) == 1 and "cpu.toml" in notes[0] and "1 epochs" in notes[0]
    rec = Recorder()
    train(world["ds"].path, tmp_path / "small", quick(epochs=1), ModelInputs(params=dict(SMALL)), progress=rec)
    assert not any(e[0] == "message" and "on this CPU" in e[1] for e in rec.events)


def test_tag_weights_through_the_one_representation():
    from temacli.tags.represent import represent

    item = np.array([0, 0, 0, 1, 2, 2])
    tag = np.array([3, 1, 2, 0, 1, 2])
    w = np.array([0.2, 0.9, 0.1, 0.5, 0.4, 0.4], np.float32)
    i, t, v = tag_representation(item, tag, w, "file")
    assert (i.tolist(), t.tolist()) == ([0, 0, 0, 1, 2, 2], [1, 3, 2, 0, 1, 2])
    assert v.tolist() == pytest.approx([0.9, 0.2, 0.1, 0.5, 0.4, 0.4])  # the file's weights, kept
    for how in ("weighted", "multihot", "onehot"):
        got = tag_representation(item, tag, w, how)
        want = represent(item, tag, w, how)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
        sums = np.bincount(got[0], weights=got[2])
        assert np.allclose(sums[np.unique(got[0])], 1.0)
    with pytest.raises(TemacliError, match="weight"):
        tag_representation(item, tag, np.array([0.2, 0.9, 0.0, 0.5, 0.4, 0.4]), "file", "x.parquet")
    assert math.isclose(tag_representation(item, tag, w, "multihot")[2][0], 1 / 3, rel_tol=1e-6)


def test_cli_shows_epochs_and_validation_on_stderr(world, run_cli, tmp_path):
    code, out, err = run_cli(["train", "--data", world["ds"].path, "--out", tmp_path / "m", "--epochs", "2",
                              "--dim", "16", "--batch-size", "8", "--device", "cpu"])
    assert code == 0, err
    assert "best epoch" in out
    for needle in ("epoch 1/2: start", "validate epoch 1: start", "epoch 2/2 (run ETA", "valid loss"):
        assert needle in err, needle
    code, out, err = run_cli(["train", "--data", world["ds"].path, "--out", tmp_path / "q", "--epochs", "1",
                              "--dim", "16", "--batch-size", "8", "--device", "cpu", "--quiet"])
    assert code == 0 and "start (" not in err and "epoch 1/1  train loss" in err  # --quiet: no bars, epoch lines stay
