"""How big a run is before it starts: the memory a model needs and the time a CPU run will take.

``estimate_memory`` builds the model on PyTorch's ``meta`` device (shapes only, nothing allocated), so
a ``--dim`` too large for the machine is refused with its estimated size *before* any allocation.
The estimate counts the weights, their gradients and Adam's two moments (4 x 4 bytes per
parameter), the frozen buffers, and the largest activations of one training step (the softmax
logits and the hidden states); it is an order of magnitude, enough to tell "fits" from "cannot".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GiB = 1024**3
HIDDEN_FACTOR = 48  # hidden states kept for backward per (row, position, width): several branches and streams


@dataclass
class MemoryEstimate:
    parameters: int
    buffers: int
    activations: int  # bytes

    @property
    def total(self) -> int:
        return 16 * self.parameters + 4 * self.buffers + self.activations


def estimate_memory(spec, cfg, config: dict, opts, n_x: int, n_y: int, tag_nnz: int = 0) -> MemoryEstimate:
    import numpy as np
    import torch

    tags = None
    if spec.accepts("tags") and "tag" in getattr(cfg, "streams", ()):
        tags = (np.zeros(tag_nnz, np.int64), np.zeros(tag_nnz, np.int64), np.zeros(tag_nnz, np.float32))
    with torch.device("meta"):
        model = spec.build(cfg, image=None, text=None, tags=tags)
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for b in model.buffers())
    width = int(getattr(cfg, spec.width))
    positions = opts.max_len if opts.train_positions == "all" else 1
    scored = (opts.negatives + 1) if opts.softmax == "sampled" else max(n_x, n_y)
    acts = 4 * opts.batch_size * opts.max_len * width * HIDDEN_FACTOR + 4 * 3 * opts.batch_size * positions * scored
    return MemoryEstimate(int(n_params), int(n_buffers), int(acts))


def available_bytes(device: str) -> int | None:
    """Free memory of ``device``: CUDA's free memory, or MemAvailable of /proc/meminfo (None: unknown)."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # noqa: BLE001  (no usable CUDA context: do not refuse on a guess)
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", GiB), ("MiB", 1024**2)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def human_seconds(s: float) -> str:
    s = max(float(s), 0.0)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


# the paper's sizes, which on a CPU mean hours to days; the CPU recipe of docs/results.md
CPU_RECIPE = "--config examples/recipes/cpu.toml (--softmax sampled --negatives 256 --dim 128 --max-len 20)"


def paper_sized(opts, width: int) -> bool:
    """Settings sized for a GPU: the paper's width, or the full softmax over its 100 epochs."""
    return width >= 256 or (opts.softmax == "full" and opts.epochs >= 100)


def cpu_estimate_line(seconds_per_batch: float, batches: int, epochs: int, probe: int) -> str:
    epoch_s = seconds_per_batch * batches
    return (
        f"note: on this CPU this run takes about {human_seconds(epoch_s * epochs)} "
        f"({epochs} epochs of about {human_seconds(epoch_s)}, estimated from the first {probe} batches, validation "
        f"not counted); settings sized for a GPU. On a laptop use the CPU recipe: {CPU_RECIPE}, "
        f"or bound the run with --time-limit MINUTES"
    )
