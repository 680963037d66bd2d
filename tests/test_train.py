"""`temacli train`: outputs, over-fitting a learnable pattern, resume, Ctrl-C, bad inputs, real data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import make_features, make_tags  # noqa: E402

from temacli import artifacts  # noqa: E402
from temacli.data.dataset import Dataset  # noqa: E402
from temacli.errors import Interrupted, TemacliError  # noqa: E402
from temacli.model.folder import load_trained  # noqa: E402
from temacli.training.loop import ModelInputs, TrainOptions, train  # noqa: E402

torch.set_num_threads(1)
SMALL = {"q": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_dataset):
    tmp = tmp_path_factory.mktemp("train")
    ds = Dataset.open(make_dataset(tmp, pattern=True))
    feats = make_features(ds, tmp / "features")
    tags = make_tags(ds, tmp / "tags")
    other = Dataset.open(make_dataset(tmp, name="other", n_food=11, seed=1))
    return {"tmp": tmp, "ds": ds, "features": feats, "tags": tags, "other": other}


def records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


@pytest.mark.slow  # ~10 s on the shared CPU (trains all four streams through the CLI)
def test_cli_writes_a_complete_model_folder(world, run_cli):
    out = world["tmp"] / "cli-model"
    code, stdout, err = run_cli(
        ["train", "--data", world["ds"].path, "--features", world["features"], "--tags", world["tags"],
         "--out", out, "--epochs", "2", "--dim", "16", "--batch-size", "8", "--json", "--quiet"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["epochs_run"] == 2 and summary["status"] == "done"
    for name in ("model.safetensors", "config.json", "metrics.jsonl", "manifest.json", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "tema" and config["model"]["streams"] == ["id", "img", "tex", "tag"]
    assert config["dataset_fingerprint"] == world["ds"].fingerprint
    assert config["model"]["image_dim"] == 12 and config["model"]["n_tags"] == 6
    m = artifacts.read_manifest(out, stage="train")
    assert set(m["inputs"]) == {"dataset", "features_image", "features_text", "tags"}
    assert m["inputs"]["tags"]["fingerprint"] == artifacts.fingerprint(world["tags"])
    assert m["outputs"]["model"]["fingerprint"] == artifacts.fingerprint(out / "model.safetensors")
    lines = records(out / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"food", "kitchen", "all"} <= set(lines[0]["valid"]) and "NDCG@10" in lines[0]["valid"]["food"]
    assert lines[0]["valid_loss"] > 0 and lines[0]["train_loss"] > 0

    trained = load_trained(out, device="cpu", dataset=world["ds"])
    valid = world["ds"].split("valid")
    hist = valid.padded(np.arange(4), trained.max_len, trained.pad)
    st = trained.encode(hist, valid.target_domain[:4])
    cands = np.concatenate([valid.target[:4, None], world["ds"].candidates("valid")[:4, :5]], axis=1)
    scores = trained.score_candidates(st, cands)
    parts = trained.explain(st, cands)
    assert scores.shape == (4, 6) and scores.dtype == np.float32 and len(parts) == 12
    np.testing.assert_allclose(sum(parts.values()), scores, rtol=1e-5)
    with pytest.raises(TemacliError, match="dataset fingerprint"):
        load_trained(out, device="cpu", dataset=world["other"])
    # the folder is kept unless asked: refuse, then --force replaces it
    code, _, err = run_cli(["train", "--data", world["ds"].path, "--out", out, "--epochs", "1"])
    assert code == 2 and "--force" in err


def test_overfits_a_learnable_pattern_to_near_perfect_mrr(world):
    out = world["tmp"] / "overfit"
    opts = TrainOptions(epochs=15, batch_size=8, lr=0.01, patience=15, early_stop="mrr")
    inputs = ModelInputs(features=str(world["features"]), tags=str(world["tags"]), params=dict(SMALL, q=32))
    summary = train(world["ds"].path, out, opts, inputs)
    best = max(r["valid"]["all"]["MRR"] for r in records(out / "metrics.jsonl"))
    assert best > 0.9, best
    assert summary["best_mean"] is not None and (out / "model.food.safetensors").is_file()
    # the paper's selection is kept beside the per-domain one: the epoch of the lowest validation loss
    rows = records(out / "metrics.jsonl")
    losses = [r["valid_loss"] for r in rows]
    assert summary["best_loss_epoch"] == rows[losses.index(min(losses))]["epoch"]
    assert summary["loss_patience_exhausted"] == (len(rows) - summary["best_loss_epoch"] >= 15)
    assert (out / "model.valid-loss.safetensors").is_file() and (out / "prepared.valid-loss.safetensors").is_file()
    first = records(out / "metrics.jsonl")[0]
    assert first["valid"]["all"]["MRR"] < 0.5  # it learned: it did not start there


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_baselines_learn_the_pattern(world, kind):
    out = world["tmp"] / kind
    opts = TrainOptions(model=kind, epochs=25, batch_size=8, lr=0.01, patience=25)
    train(world["ds"].path, out, opts, ModelInputs(params={"dim": 32, "dropout": 0.0}))
    best = max(r["valid"]["all"]["MRR"] for r in records(out / "metrics.jsonl"))
    assert best > 0.8, best
    assert json.loads((out / "config.json").read_text())["kind"] == kind


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_and_ctrl_c_give_the_uninterrupted_result(world, monkeypatch):
    ds = world["ds"]
    inputs = lambda: ModelInputs(features=str(world["features"]), tags=str(world["tags"]), params=dict(SMALL, dropout=0.3))  # noqa: E731
    opts = lambda n: TrainOptions(epochs=n, batch_size=8, softmax="sampled", negatives=5, seed=3)  # noqa: E731
    straight = world["tmp"] / "straight"
    train(ds.path, straight, opts(3), inputs())

    resumed = world["tmp"] / "resumed"
    train(ds.path, resumed, opts(1), inputs())
    # Ctrl-C in the middle of epoch 2: the run saves its state and says how to continue
    from temacli.training import batches

    calls = {"n": 0}
    original = batches.BatchStream.__iter__

    def interrupted(self):
        for i, b in enumerate(original(self)):
            if self.shuffle and i == 1:
                calls["n"] += 1
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(batches.BatchStream, "__iter__", interrupted)
    with pytest.raises(Interrupted, match="--resume"):
        train(ds.path, resumed, opts(3), inputs(), resume=True)
    monkeypatch.setattr(batches.BatchStream, "__iter__", original)
    assert calls["n"] == 1
    assert artifacts.read_manifest(resumed, stage="train")["summary"]["status"] == "interrupted"
    assert [r["epoch"] for r in records(resumed / "metrics.jsonl")] == [1]

    train(ds.path, resumed, opts(3), inputs(), resume=True)
    a, b = _weights(straight / "model.safetensors"), _weights(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ra, rb = records(straight / "metrics.jsonl"), records(resumed / "metrics.jsonl")
    assert [r["epoch"] for r in rb] == [1, 2, 3]
    for x, y in zip(ra, rb):
        assert x["train_loss"] == y["train_loss"] and x["valid"] == y["valid"]

    with pytest.raises(TemacliError, match="lr"):  # resuming with other options is refused
        train(ds.path, resumed, TrainOptions(epochs=4, batch_size=8, softmax="sampled", negatives=5, seed=3, lr=0.5),
              inputs(), resume=True)


def test_time_limit_stops_between_epochs_and_resume_continues(world, run_cli, monkeypatch):
    from temacli.training import loop

    clock = {"t": 0.0}

    def fake_clock():  # every reading is 20 simulated seconds after the last
        clock["t"] += 20.0
        return clock["t"]

    monkeypatch.setattr(loop.time, "perf_counter", fake_clock)
    out = world["tmp"] / "timed"
    args = ["train", "--data", world["ds"].path, "--out", out, "--dim", "16", "--batch-size", "8",
            "--softmax", "sampled", "--negatives", "5", "--epochs", "6", "--quiet"]
    code, stdout, err = run_cli(args + ["--time-limit", "1.5"])  # 90 s: stops after a few epochs, not 6
    assert code == 0, err
    assert "time limit reached" in stdout and "--resume" in stdout
    summary = artifacts.read_manifest(out, stage="train")["summary"]
    assert summary["status"] == "time limit" and 1 <= summary["epochs_run"] < 6
    assert [r["epoch"] for r in records(out / "metrics.jsonl")] == list(range(1, summary["epochs_run"] + 1))
    assert (out / "model.safetensors").is_file()

    code, stdout, err = run_cli(args + ["--resume"])  # no limit now: runs the remaining epochs
    assert code == 0, err
    summary = artifacts.read_manifest(out, stage="train")["summary"]
    assert summary["status"] == "done" and summary["epochs_run"] == 6


def test_bad_inputs_exit_2_with_one_line(world, run_cli, tmp_path):
    ds, other = world["ds"], world["other"]
    other_feats = make_features(other, tmp_path / "of")
    other_tags = make_tags(other, tmp_path / "ot")
    wrong_fp_feats = make_features(ds, tmp_path / "wf", items_fp="sha256:" + "0" * 64)
    base = ["train", "--data", ds.path, "--epochs", "1", "--quiet"]
    cases = [
        (["--features", other_feats, "--out", tmp_path / "a"], "rows"),  # another item count
        (["--features", wrong_fp_feats, "--out", tmp_path / "b"], "fingerprint"),
        (["--tags", other_tags, "--out", tmp_path / "c"], "fingerprint"),  # tags of another dataset
        (["--streams", "id,img", "--out", tmp_path / "d"], "--features"),  # modality asked, not given
        (["--streams", "id,tag", "--out", tmp_path / "e"], "--tags"),
        (["--features", tmp_path / "missing", "--out", tmp_path / "f"], "not found"),
        (["--arch", "sasrec", "--tags", world["tags"], "--out", tmp_path / "g"], "IDs only"),
        (["--arch", "sasrec", "--alpha", "0.5,0.2,0.2", "--out", tmp_path / "h"], "TEMA options"),
        (["--resume", "--out", tmp_path / "i"], "--resume"),
        (["--time-limit", "-1", "--out", tmp_path / "m"], "--time-limit"),
        (["--alpha", "0.7,0.3,0.3", "--out", tmp_path / "k"], "alpha"),
        (["--device", "cuda:0", "--out", tmp_path / "l"] if not torch.cuda.is_available() else ["--device", "tpu", "--out", tmp_path / "l"], "device"),
    ]
    for extra, needle in cases:
        code, _, err = run_cli(base + extra)
        assert code == 2, (extra, err)
        assert needle in err and len(err.strip().splitlines()) == 1, (extra, err)
        assert not (Path(extra[-1]) / "model.safetensors").exists()
    # a choice outside an enum is click's usage error: exit 2, the choices named, nothing written
    code, _, err = run_cli(base + ["--softmax", "approx", "--out", tmp_path / "j"])
    assert code == 2 and "--softmax" in err and "'full'" in err and "'sampled'" in err
    assert not (tmp_path / "j").exists()


def test_loss_falls_on_a_slice_of_real_data(tmp_path, make_dataset):
    # the first 120 users, split as `temacli data split` does by default (skipped without the shared data)
    ds = Dataset.open(make_dataset(tmp_path, "afk", real=True, n_users=120, min_user=10, min_per_domain=3, seed=42))
    feats = make_features(ds, tmp_path / "features", dims=(("image", 16), ("text", 16)))
    out = tmp_path / "model"
    opts = TrainOptions(epochs=6, batch_size=32, softmax="sampled", negatives=100, lr=1e-2, eval_every=3)
    train(ds.path, out, opts, ModelInputs(features=str(feats), params={"q": 32}))
    losses = [r["train_loss"] for r in records(out / "metrics.jsonl")]
    assert losses[-1] < losses[0] * 0.97 and max(losses[3:]) < losses[1] < losses[0], losses
    last = records(out / "metrics.jsonl")[-1]
    assert [("valid" in r) for r in records(out / "metrics.jsonl")] == [False, False, True, False, False, True]  # --eval-every 3
