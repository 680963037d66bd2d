"""DistributedDataParallel on CPU: 2 gloo processes give the single-process gradients and model."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import make_features, make_tags  # noqa: E402

from temacli.data.dataset import Dataset  # noqa: E402

PARAMS = {"q": 16, "dropout": 0.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_and_batch(paths: dict, rank: int, world: int):
    from temacli.data.dataset import Dataset
    from temacli.model.api import build_model
    from temacli.training.batches import BatchStream, windows
    from temacli.training.loop import ModelInputs, resolve_inputs

    ds = Dataset.open(paths["data"])
    inp = ModelInputs(features=paths["features"], tags=paths["tags"], params=dict(PARAMS, max_len=20))
    config, arrays, _ = resolve_inputs(ds, "tema", inp)
    config.update({"n_x": ds.n_x, "n_y": ds.n_y, "max_len": 20})
    torch.manual_seed(0)
    model = build_model(config, image=arrays["image"], text=arrays["text"], tags=arrays["tags"])
    stream = BatchStream(windows(ds.split("train"), 20, ds.pad), ds.n_x, ds.n_y, 10,
                         torch.Generator().manual_seed(0), "all", negatives=6, rank=rank, world=world)
    return model, next(iter(stream))


def _no_update(model):
    """An optimizer whose step changes nothing, so the gradients of one train_step can be compared."""
    return torch.optim.SGD(model.parameters(), lr=0.0)


def _worker(rank: int, world: int, port: int, paths: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from temacli.training import distributed
    from temacli.training.loop import ModelInputs, TrainOptions, train
    from temacli.training.step import train_step

    dist = distributed.from_env()
    distributed.init(dist, "cpu")
    model, batch = _model_and_batch(paths, rank, world)
    ddp = distributed.wrap(model, dist, "cpu")
    train_step(ddp, batch, _no_update(model), world=world)  # the loop's step; lr 0 keeps the gradients to compare
    if rank == 0:
        grads = {k: p.grad.numpy() for k, p in model.named_parameters() if p.grad is not None}
        np.savez(paths["grads"], **grads)
    # and the whole training loop under torchrun-like environment variables
    opts = TrainOptions(epochs=2, batch_size=10, softmax="sampled", negatives=6, max_len=20, seed=5, amp="off")
    train(paths["data"], paths["out"], opts,
          ModelInputs(features=paths["features"], tags=paths["tags"], params=dict(PARAMS)))


@pytest.mark.slow  # two spawned gloo processes and two training runs: ~35 s on the shared CPU
def test_ddp_two_gloo_processes_match_single_process(tmp_path, make_dataset):
    import torch.multiprocessing as mp

    ds = Dataset.open(make_dataset(tmp_path, n_users=16))
    paths = {
        "data": str(ds.path),
        "features": str(make_features(ds, tmp_path / "features")),
        "tags": str(make_tags(ds, tmp_path / "tags")),
        "grads": str(tmp_path / "grads.npz"),
        "out": str(tmp_path / "ddp-model"),
    }
    mp.spawn(_worker, args=(2, _free_port(), paths), nprocs=2, join=True)

    torch.set_num_threads(1)
    model, batch = _model_and_batch(paths, 0, 1)
    from temacli.training.step import train_step

    _, n = train_step(model, batch, _no_update(model), world=1)
    assert n == batch.n_targets_global
    ddp_grads = np.load(paths["grads"])
    single = {k: p.grad.numpy() for k, p in model.named_parameters() if p.grad is not None}
    assert set(single) == set(ddp_grads.files) and len(single) > 20
    for k, g in single.items():
        np.testing.assert_allclose(ddp_grads[k], g, rtol=1e-4, atol=1e-6, err_msg=k)

    from safetensors.torch import load_file

    from temacli.training.loop import ModelInputs, TrainOptions, train

    opts = TrainOptions(epochs=2, batch_size=10, softmax="sampled", negatives=6, max_len=20, seed=5, amp="off")
    train(paths["data"], tmp_path / "single-model", opts,
          ModelInputs(features=paths["features"], tags=paths["tags"], params=dict(PARAMS)))
    a = load_file(str(tmp_path / "single-model" / "model.safetensors"))
    b = load_file(str(Path(paths["out"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    # Adam turns float noise in near-zero gradients (e.g. the key bias, which softmax ignores) into
    # full-size steps, so compare the weights that carry signal, and the model's outputs below
    # the attention projections, whatever the encoders' layout (per stream or fused)
    # (weights only: biases are "_b" in the stacked layout, "bias" in the per-stream one)
    attention = sorted(k for k in a if k.startswith("encoders.") and ("qkv" in k or "proj" in k)
                       and not (k.endswith("_b") or k.endswith("bias")) and a[k].ndim >= 2)
    assert attention
    for k in ("E_id.weight", "E_tag", "mlp.0.weight", "P_img.weight", *attention):
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    ra = [json.loads(x) for x in (tmp_path / "single-model" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (Path(paths["out"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["targets"] for r in ra] == [r["targets"] for r in rb]
    for x, y in zip(ra, rb):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-4)
        assert y["valid_loss"] == pytest.approx(x["valid_loss"], rel=1e-4)
