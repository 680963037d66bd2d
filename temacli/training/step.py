"""One training step, the only one: the loop, the benchmark and the DDP test all call ``train_step``.

The loss that is back-propagated is the batch's summed loss divided by the number of targets of the
*global* batch (all ranks), times the world size: under DDP's gradient averaging every rank then
contributes exactly its share, and a single process gets the plain mean over targets.
"""

from __future__ import annotations

import math


class NonFiniteLoss(ArithmeticError):
    """The loss of a step was NaN or infinite (``value``); the caller names the epoch and batch."""

    def __init__(self, value: float):
        super().__init__(f"loss is {value}")
        self.value = value


def train_step(model, batch, optimizer, *, device: str = "cpu", amp: bool = False, world: int = 1) -> tuple[float, int]:
    """Forward, backward and one optimizer step on ``batch``; returns (summed loss, number of targets).

    ``model`` may be wrapped in DDP; ``amp`` runs the forward pass under bf16 autocast (the loss
    reductions inside the models stay in fp32). Raises :class:`NonFiniteLoss` *before* the optimizer
    step when the loss is not finite, so the weights are never updated with it.
    """
    import torch

    seq, target = batch.seq.to(device), batch.target.to(device)
    negs = batch.negatives.to(device) if batch.negatives is not None else None
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
        loss_sum, n = model(seq, target, negs)
    loss_value = float(loss_sum.detach())
    if not math.isfinite(loss_value):
        raise NonFiniteLoss(loss_value)
    loss = loss_sum.float() / max(int(batch.n_targets_global), 1) * world
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss_value, int(n)
