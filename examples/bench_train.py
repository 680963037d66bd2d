"""Training efficiency of TEMA-LLM and the baselines: time, FLOPs, achieved GFLOP/s against the ceiling.

For every configuration (model x softmax x precision) it runs the real training step
(``temacli.training.step.train_step``) on batches from ``temacli.training.batches.BatchStream``, exactly
as ``temacli train`` does, and prints one JSON line with

* seconds per epoch and sequences/s: a whole epoch by default; with ``--steps N`` only N steps are
  timed (after one warm-up step) and the epoch is *extrapolated* by targets (``"extrapolated": true``);
* FLOPs per step: every matrix product of the forward and backward pass, counted by torch's
  ``FlopCounterMode`` on the same batches in an untimed pass (attention included);
* achieved GFLOP/s = FLOPs / time, against this machine's matrix-product ceiling in fp32 and bf16,
  **measured in the same run** just before each configuration (the machine may be shared: compare
  ratios, not absolute numbers);
* the peak resident memory of the configuration (the kernel's high-water mark is reset before it).

Without --features/--tags it makes random 512-d image and text features and 5 tags per item out of
100 (timing does not depend on their values) in a temporary folder.

    python examples/bench_train.py --data runs/fk/data --steps 4                 # TEMA + SASRec, paper sizes
    python examples/bench_train.py --data runs/fk/data --steps 4 --amp off,bf16  # both precisions
    python examples/bench_train.py --data runs/fk/data --models tema --steps 2 --profile   # top ops
    python examples/bench_train.py --data runs/fk/data --models sasrec --softmax full \\
        --dim 50 --blocks 2 --batch-size 128 --steps 20                          # SASRec.pytorch's shapes

Paper sizes are the defaults: q = 256, max length 50, batch 256, 1,000 sampled negatives per domain.
A table and the load average follow the JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
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
    tag = np.argsort(rng.random((ds.n_items, n_tags)), axis=1)[:, :per_item].reshape(-1).astype(np.int32)  # distinct per item
    score = rng.integers(30, 100, size=item.size).astype(np.float32)
    weight = (score.reshape(-1, per_item) / score.reshape(-1, per_item).sum(1, keepdims=True)).reshape(-1)  # sums to 1
    artifacts.write_table(pa.table({"item": item, "tag_index": tag, "score": score, "weight": weight}),
                          tags / "item_tags.parquet", ITEM_TAGS)
    m = artifacts.build_manifest("tags match", {"method": "random"},
                                 inputs={"items": {"path": "items.parquet", "fingerprint": ds.items_fingerprint}},
                                 outputs={"tag_vocab": {"fingerprint": artifacts.fingerprint(tags / "tag_vocab.parquet")}})
    artifacts.write_manifest(tags / "item_tags.parquet", m)
    return feat, tags / "item_tags.parquet"


# ----------------------------------------------------------------------------- machine
def matmul_ceiling(dtype, device: str = "cpu", max_single_s: float = 0.3) -> dict:
    """This machine's matrix-product ceiling for ``dtype``: the best of square products from 512 up to
    4096 (stopping once one product takes ``max_single_s``), per wall second and per CPU second of this
    process (the CPU-time figure does not depend on how much of a shared machine we got)."""
    import torch

    best, best_cpu, n = 0.0, 0.0, 512
    while n <= 4096:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up
        _sync(device)
        spent, one = 0.0, 0.0
        while spent < 0.4:
            t0, c0 = time.perf_counter(), time.process_time()
            a @ b
            _sync(device)
            one = time.perf_counter() - t0
            cpu = time.process_time() - c0
            spent += one
            best = max(best, 2 * n**3 / one / 1e9)
            if device == "cpu" and cpu > 0:
                best_cpu = max(best_cpu, 2 * n**3 / cpu / 1e9)
        if one > max_single_s:
            break
        n *= 2
    return {"wall": best, "cpu": best_cpu or None}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark of this process (Linux); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flop_counter():
    """torch's FlopCounterMode, taught the CPU flash-attention kernels it does not know."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    extra = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None:
        extra[fwd] = lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v)
    if bwd is not None:
        extra[bwd] = lambda grad, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(grad, q, k, v)
    return FlopCounterMode(display=False, custom_mapping=extra)


# ----------------------------------------------------------------------------- one configuration
def build(ds, kind, features, tags, max_len, dim, blocks, device):
    import torch

    from temacli.model.api import build_model
    from temacli.training.loop import ModelInputs, resolve_inputs

    params: dict = {"max_len": max_len}
    if dim is not None:
        params["q" if kind == "tema" else "dim"] = dim
    if blocks is not None:
        params["n_blocks"] = blocks
    inp = ModelInputs(features=str(features) if kind == "tema" else None, tags=str(tags) if kind == "tema" else None,
                      params=params)
    config, arrays, _ = resolve_inputs(ds, kind, inp)
    config.update({"n_x": ds.n_x, "n_y": ds.n_y, "max_len": max_len})
    torch.manual_seed(0)
    model = build_model(config, image=arrays.get("image"), text=arrays.get("text"), tags=arrays.get("tags")).to(device)
    return model, config


def bench_one(ds, kind, softmax, amp, device, args, features, tags) -> dict:
    import torch

    from temacli.model.layers import runtime_info
    from temacli.training.batches import BatchStream, windows
    from temacli.training.step import train_step

    before = {"fp32": matmul_ceiling(torch.float32, device), "bf16": matmul_ceiling(torch.bfloat16, device)}
    reset_peak_rss()
    model, config = build(ds, kind, features, tags, args.max_len, args.dim, args.blocks, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    win = windows(ds.split("train"), args.max_len, ds.pad)
    negatives = args.negatives if softmax == "sampled" else 0
    stream = BatchStream(win, ds.n_x, ds.n_y, args.batch_size, torch.Generator().manual_seed(0), "all", negatives)
    use_amp = amp == "bf16"
    epoch_targets = int(np.maximum((win != ds.pad).sum(1) - 1, 0).sum())

    batches = list(stream)  # one epoch, in the loop's order
    model.train()
    train_step(model, batches[0], opt, device=device, amp=use_amp)  # warm-up (allocator, kernels)
    timed = batches[1 : 1 + args.steps] if args.steps else batches
    times, cpu, seqs, targets = [], [], 0, 0
    for b in timed:
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss_sum, n = train_step(model, b, opt, device=device, amp=use_amp)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        seqs += b.seq.shape[0]
        targets += n
    peak = peak_rss_mib()

    # FLOPs of the same batches, untimed: forward + backward (the optimizer's elementwise work is not counted)
    flops = 0
    counted = timed[: args.flop_steps] if args.flop_steps else timed
    counted_targets = 0
    for b in counted:
        with flop_counter() as fc:
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_amp):
                ls, n = model(b.seq.to(device), b.target.to(device),
                              b.negatives.to(device) if b.negatives is not None else None)
            (ls.float() / max(n, 1)).backward()
        model.zero_grad(set_to_none=True)
        flops += fc.get_total_flops()
        counted_targets += n
    flop_per_target = flops / max(counted_targets, 1)
    after = {"fp32": matmul_ceiling(torch.float32, device), "bf16": matmul_ceiling(torch.bfloat16, device)}
    # the machine may be shared: the ceiling is the mean of its measurements before and after this configuration
    ceiling = {p: (before[p]["wall"] + after[p]["wall"]) / 2 for p in before}
    ceiling_cpu = {p: (before[p]["cpu"] + after[p]["cpu"]) / 2 if before[p]["cpu"] and after[p]["cpu"] else None
                   for p in before}
    total = sum(times)
    s_epoch = total / targets * epoch_targets if args.steps else total
    gflops = flop_per_target * targets / total / 1e9
    gflops_cpu = flop_per_target * targets / sum(cpu) / 1e9 if sum(cpu) > 0 else None
    prec = "bf16" if use_amp else "fp32"

    profile = None
    if args.profile:
        profile = top_ops(model, timed[:1], opt, device, use_amp, args.profile_rows)

    r = {
        "model": kind, "dim": args.dim or 256, "blocks": args.blocks, "max_len": args.max_len,
        "batch_size": args.batch_size, "negatives": negatives or None, "softmax": softmax, "amp": amp,
        "device": device, "threads": torch.get_num_threads(),
        "steps_timed": len(timed), "steps_per_epoch": len(stream), "extrapolated": bool(args.steps),
        "s_per_step": round(total / len(timed), 3), "s_per_epoch": round(s_epoch, 1),
        "sequences_per_s": round(seqs / total, 1), "targets_per_s": round(targets / total, 1),
        "cpu_s_per_epoch": round(sum(cpu) / targets * epoch_targets, 1),
        "gflop_per_step": round(flop_per_target * targets / len(timed) / 1e9, 1),
        "tflop_per_epoch": round(flop_per_target * epoch_targets / 1e12, 2),
        "achieved_gflops": round(gflops, 1),
        "ceiling_gflops_fp32": round(ceiling["fp32"], 1), "ceiling_gflops_bf16": round(ceiling["bf16"], 1),
        "fraction_of_ceiling": round(gflops / ceiling[prec], 3) if ceiling[prec] else None,
        "fraction_of_fp32_ceiling": round(gflops / ceiling["fp32"], 3),
        "gflop_per_cpu_s": round(gflops_cpu, 1) if gflops_cpu else None,
        "ceiling_gflop_per_cpu_s_fp32": round(ceiling_cpu["fp32"], 1) if ceiling_cpu["fp32"] else None,
        "ceiling_gflop_per_cpu_s_bf16": round(ceiling_cpu["bf16"], 1) if ceiling_cpu["bf16"] else None,
        "fraction_of_ceiling_cpu_time": (round(gflops_cpu / ceiling_cpu[prec], 3)
                                         if gflops_cpu and ceiling_cpu[prec] else None),
        "peak_rss_mib": round(peak), "final_loss": round(float(loss_sum) / max(n, 1), 4),
        "runtime": runtime_info(model, device, use_amp),
    }
    if profile:
        r["top_ops"] = profile
    return r


def top_ops(model, batches, opt, device, amp, rows):
    """The operators that took the most self CPU time over ``batches`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from temacli.training.step import train_step

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        for b in batches:
            train_step(model, b, opt, device=device, amp=amp)
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev) or 1
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000 / len(batches), 1),
             "share": round(e.self_cpu_time_total / total, 3), "calls": e.count // len(batches)} for e in ev[:rows]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/fk/data")
    ap.add_argument("--features")
    ap.add_argument("--tags")
    ap.add_argument("--models", default="tema,sasrec")
    ap.add_argument("--softmax", default="sampled", help="sampled, full or both (comma-separated)")
    ap.add_argument("--amp", default="off", help="off, bf16 or both (comma-separated)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=0, help="time N steps and extrapolate the epoch (0: a whole epoch)")
    ap.add_argument("--flop-steps", type=int, default=0, help="count FLOPs on the first N timed steps only (0: all)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--negatives", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dim", type=int, default=None, help="model width (TEMA q, baselines' dim); default 256")
    ap.add_argument("--blocks", type=int, default=None, help="attention blocks (default: the model's)")
    ap.add_argument("--profile", action="store_true", help="also list the top operators (torch.profiler)")
    ap.add_argument("--profile-rows", type=int, default=15)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import torch

    from temacli.data.dataset import Dataset
    from temacli.model.api import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ds = Dataset.open(args.data)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        features, tags = args.features, args.tags
        if "tema" in args.models and (features is None or tags is None):
            f, t = synth_inputs(ds, Path(tmp))
            features, tags = features or f, tags or t
        results = []
        for kind in args.models.split(","):
            for softmax in args.softmax.split(","):
                for amp in args.amp.split(","):
                    r = bench_one(ds, kind, softmax, amp, device, args, features, tags)
                    print(json.dumps(r), flush=True)
                    results.append(r)
    load_after = os.getloadavg()
    print(f"\n{'model':7} {'softmax':8} {'amp':4} {'s/step':>7} {'s/epoch':>8} {'seq/s':>7} {'GFLOP/step':>10} "
          f"{'GFLOP/s':>8} {'ceil fp32':>9} {'ceil bf16':>9} {'of ceil':>7} {'of ceil (CPU s)':>15} {'peak MiB':>8}")
    for r in results:
        print(f"{r['model']:7} {r['softmax']:8} {r['amp']:4} {r['s_per_step']:7} {r['s_per_epoch']:8}"
              f"{'*' if r['extrapolated'] else ' '} {r['sequences_per_s']:6} {r['gflop_per_step']:10} "
              f"{r['achieved_gflops']:8} {r['ceiling_gflops_fp32']:9} {r['ceiling_gflops_bf16']:9} "
              f"{r['fraction_of_ceiling']:7} {str(r['fraction_of_ceiling_cpu_time']):>15} {r['peak_rss_mib']:8}")
    if any(r["extrapolated"] for r in results):
        print(f"* s/epoch extrapolated from {args.steps} timed steps by targets ({results[0]['steps_per_epoch']} steps per epoch)")
    for r in results:
        for op in r.get("top_ops", []):
            print(f"  {r['model']} {r['amp']}: {op['op'][:48]:48} {op['self_ms']:9.1f} ms/step {100 * op['share']:5.1f}%  x{op['calls']}")
    info = {"date": started, "load_average_before": load_before, "load_average_after": load_after,
            "dataset": args.data, "train_sequences": len(ds.split("train")), "device": device,
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}
    print(json.dumps(info))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
