"""Training speed of TEMA and the baselines: seconds per epoch and sequences per second.

Times ``--steps`` optimizer steps of the real training code (batches, forward, backward, Adam) on a
dataset folder, after one warm-up step, and extrapolates to one epoch (steps per epoch x s/step).
Also times the validation ranking pass on ``--valid-rows`` rows and extrapolates to the whole split.
Without --features/--tags it makes random 512-d image and text features and 5 tags per item out of
100 (timing does not depend on their values) in a temporary folder.

    python examples/bench_train.py --data runs/fk/data                       # CPU, TEMA + SASRec
    python examples/bench_train.py --data runs/fk/data --device cuda --steps 20 --softmax full,sampled
    python examples/bench_train.py --data runs/fk/data --amp off,bf16       # is bf16 autocast faster?

Prints one JSON line per configuration and a table at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np



def synth_inputs(ds, tmp: Path, dim: int = 512, n_tags: int = 100, per_item: int = 5):
    import pyarrow as pa

    from temacli import artifacts
    from temacli.features.store import write_manifest_for
    from temacli.tags.store import ITEM_TAGS, TAG_VOCAB

    rng = np.random.default_rng(0)
    feat = tmp / "features"
    feat.mkdir(parents=True)
    for name in ("image", "text"):
        emb = rng.normal(size=(ds.n_items, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        artifacts.write_npy(emb, feat / f"{name}.npy")
        artifacts.write_npy(np.ones(ds.n_items, bool), feat / f"has_{name}.npy")
        write_manifest_for(feat, name, "features clip" if name == "image" else "features text", {"model": "random"},
                           ds.path / "items.parquet", ds.items_fingerprint, {"n_items": ds.n_items, "dim": dim, "missing": 0})
    tags = tmp / "tags"
    tags.mkdir()
    artifacts.write_table(pa.table({"tag_index": pa.array(np.arange(n_tags), pa.int32()),
                                    "tag": [f"t{i}" for i in range(n_tags)], "domain": ["x"] * n_tags}),
                          tags / "tag_vocab.parquet", TAG_VOCAB)
    item = np.repeat(np.arange(ds.n_items), per_item).astype(np.int32)
    tag = rng.integers(0, n_tags, size=item.size).astype(np.int32)
    score = rng.integers(30, 100, size=item.size).astype(np.float32)
    artifacts.write_table(pa.table({"item": item, "tag_index": tag, "score": score, "weight": score / 100}),
                          tags / "item_tags.parquet", ITEM_TAGS)
    m = artifacts.build_manifest("tags match", {"method": "random"},
                                 inputs={"items": {"path": "items.parquet", "fingerprint": ds.items_fingerprint}},
                                 outputs={"tag_vocab": {"fingerprint": artifacts.fingerprint(tags / "tag_vocab.parquet")}})
    artifacts.write_manifest(tags / "item_tags.parquet", m)
    return feat, tags / "item_tags.parquet"


def bench_one(ds, kind, softmax, amp, device, steps, valid_rows, features, tags, batch_size, max_len, negatives, dim=None):
    import torch

    from temacli.evaluation.protocols import sampled_ranks
    from temacli.model.api import Trained, build_model
    from temacli.training.batches import BatchStream, windows
    from temacli.training.loop import ModelInputs, resolve_inputs

    inp = ModelInputs(features=str(features) if kind == "tema" else None, tags=str(tags) if kind == "tema" else None,
                      params={"max_len": max_len, **({} if dim is None else {"q" if kind == "tema" else "dim": dim})})
    config, arrays, _ = resolve_inputs(ds, kind, inp)
    config.update({"n_x": ds.n_x, "n_y": ds.n_y, "max_len": max_len})
    torch.manual_seed(0)
    model = build_model(config, image=arrays.get("image"), text=arrays.get("text"), tags=arrays.get("tags")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    win = windows(ds.split("train"), max_len, ds.pad)
    stream = BatchStream(win, ds.n_x, ds.n_y, batch_size, torch.Generator().manual_seed(0), "all",
                         negatives if softmax == "sampled" else 0)
    use_amp = amp == "bf16"
    dev_type = device.split(":")[0]

    def sync():
        if dev_type == "cuda":
            torch.cuda.synchronize()

    it = iter(stream)
    times, cpu, seqs, targets = [], [], 0, 0
    model.train()
    for i in range(steps + 1):
        try:
            b = next(it)
        except StopIteration:
            it = iter(stream)
            b = next(it)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        negs = b.negatives.to(device) if b.negatives is not None else None
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=use_amp):
            loss_sum, n = model(b.seq.to(device), b.target.to(device), negs)
        loss = loss_sum.float() / max(n, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i > 0:  # the first step is a warm-up
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            seqs += b.seq.shape[0]
            targets += n
    s_step = float(np.mean(times))
    # batches differ in length (length bucketing): extrapolate by targets, not by steps
    epoch_targets = int(np.maximum((win != ds.pad).sum(1) - 1, 0).sum())
    s_epoch = sum(times) / targets * epoch_targets
    valid = ds.split("valid")
    rows = np.arange(min(valid_rows, len(valid)))
    scorer = Trained(model, config, device=device)
    sync()
    t0 = time.perf_counter()
    sampled_ranks(scorer, valid, ds.candidates("valid"), rows=rows, batch_size=512)
    sync()
    v_s = (time.perf_counter() - t0) * len(valid) / len(rows)
    return {
        "model": kind, "dim": dim or 256, "max_len": max_len, "negatives": negatives if softmax == "sampled" else None,
        "softmax": softmax, "amp": amp, "device": device, "threads": torch.get_num_threads(),
        "batch_size": batch_size, "steps_timed": steps, "s_per_step": round(s_step, 3),
        "sequences_per_s": round(seqs / sum(times), 1), "targets_per_s": round(targets / sum(times), 1),
        "s_per_epoch_train": round(s_epoch, 1), "steps_per_epoch": len(stream),
        "cpu_s_per_step": round(float(np.mean(cpu)), 3), "cpu_s_per_epoch": round(sum(cpu) / targets * epoch_targets, 1),
        "epoch_sequences_per_s": round(len(win) / s_epoch, 1),
        "s_validation": round(v_s, 1), "s_per_1000_sequences": round(1000 * sum(times) / seqs, 2),
        "final_loss": round(float(loss.detach()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/fk/data")
    ap.add_argument("--features")
    ap.add_argument("--tags")
    ap.add_argument("--models", default="tema,sasrec")
    ap.add_argument("--softmax", default="sampled,full")
    ap.add_argument("--amp", default="off")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--valid-rows", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--negatives", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dim", type=int, default=None, help="model width (TEMA q, baselines' dim); default 256")
    args = ap.parse_args()

    import torch

    from temacli.data.dataset import Dataset
    from temacli.model.api import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ds = Dataset.open(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        features, tags = args.features, args.tags
        if "tema" in args.models and (features is None or tags is None):
            f, t = synth_inputs(ds, Path(tmp))
            features, tags = features or f, tags or t
        results = []
        for kind in args.models.split(","):
            for softmax in args.softmax.split(","):
                for amp in args.amp.split(","):
                    r = bench_one(ds, kind, softmax, amp, device, args.steps, args.valid_rows, features, tags,
                                  args.batch_size, args.max_len, args.negatives, args.dim)
                    print(json.dumps(r), flush=True)
                    results.append(r)
    print(f"\n{'model':8} {'dim':>4} {'softmax':8} {'amp':5} {'s/step':>8} {'seq/s':>8} {'s/epoch':>8} {'cpu-s/ep':>8} {'s/valid':>8}")
    for r in results:
        print(f"{r['model']:8} {r['dim']:4} {r['softmax']:8} {r['amp']:5} {r['s_per_step']:8} {r['epoch_sequences_per_s']:8} "
              f"{r['s_per_epoch_train']:8} {r['cpu_s_per_epoch']:8} {r['s_validation']:8}")
    import os

    print(f"load average {os.getloadavg()}; dataset {args.data}: {len(ds.split('train'))} training sequences; device {device}; "
          f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
