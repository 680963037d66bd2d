"""Run logs beside metrics.jsonl: metrics.csv always, TensorBoard event files with --log tensorboard."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import TINY_TRAIN_ARGS
from temacli.training import loop


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_every_epoch_of_metrics_jsonl(tmp_path, make_dataset, run_cli):
    pytest.importorskip("tensorboard", reason="the test extra installs tensorboard")
    data = make_dataset(tmp_path, pattern=True)
    out = tmp_path / "tema"
    code, _, err = run_cli(["train", "--data", data, "--out", out, *TINY_TRAIN_ARGS, "--log", "tensorboard", "--quiet"])
    assert code == 0, err
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(out / "tensorboard")
    assert [s for s, _ in scalars["train_loss"]] == [r["epoch"] for r in records]
    assert [v for _, v in scalars["train_loss"]] == pytest.approx([r["train_loss"] for r in records], rel=1e-6)
    dom = next(iter(records[-1]["valid"]))
    assert scalars[f"valid/{dom}/MRR"][-1][1] == pytest.approx(records[-1]["valid"][dom]["MRR"], rel=1e-6)
    # the CSV has one row per epoch with the same numbers
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [r["epoch"] for r in records]
    assert float(rows[-1][f"valid_{dom}_MRR"]) == pytest.approx(records[-1]["valid"][dom]["MRR"], rel=1e-6)


def test_tensorboard_missing_is_one_line_before_any_file(tmp_path, make_dataset, run_cli, monkeypatch):
    monkeypatch.setattr(loop, "tensorboard_available", lambda: False)
    data = make_dataset(tmp_path, pattern=True)
    out = tmp_path / "tema"
    code, _, err = run_cli(["train", "--data", data, "--out", out, *TINY_TRAIN_ARGS, "--log", "tensorboard"])
    assert code == 2
    assert err.startswith("error: --log tensorboard needs the tensorboard package")
    assert "pip install 'temacli[tensorboard]'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_without_log_no_tensorboard_folder(tmp_path, make_dataset, run_cli):
    data = make_dataset(tmp_path, pattern=True)
    out = tmp_path / "tema"
    code, _, err = run_cli(["train", "--data", data, "--out", out, *TINY_TRAIN_ARGS, "--quiet"])
    assert code == 0, err
    assert (out / "metrics.csv").is_file() and not (out / "tensorboard").exists()
    code, _, err = run_cli(["train", "--data", data, "--out", tmp_path / "x", *TINY_TRAIN_ARGS, "--log", "wandb"])
    assert code == 2 and "wandb" in err and "tensorboard" in err and not (tmp_path / "x").exists()
