"""Multi-process training with torchrun and DistributedDataParallel.

``torchrun --nproc-per-node 4 -m temacli train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; each
process then trains on its share of every global batch (see ``batches.BatchStream``), the loss is
divided by the *global* number of targets so that DDP's gradient average equals the single-process
gradient, and only rank 0 validates and writes files. CUDA uses NCCL; CPU uses gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The process's place in a torchrun job (world 1 when not launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(dist_info: Dist, device: str) -> None:
    """Join the process group (idempotent)."""
    import torch.distributed as dist

    if dist_info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def wrap(model, dist_info: Dist, device: str):
    """The model wrapped in DistributedDataParallel when the job has several processes."""
    if not dist_info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [dist_info.local_rank] if device.startswith("cuda") else None
    return DDP(model, device_ids=ids)


def broadcast(obj, dist_info: Dist):
    """Rank 0's ``obj`` on every rank."""
    if not dist_info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], dist_info: Dist) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    if not dist_info.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def barrier(dist_info: Dist) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()


def cleanup(dist_info: Dist) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
