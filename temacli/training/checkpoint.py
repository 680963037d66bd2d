"""Weights (safetensors) and resumable checkpoints (torch.save, read back with weights_only=True).

A checkpoint holds everything that decides the rest of the run: the model and optimizer states,
the global torch RNG (dropout), the data generator (shuffling, sampled negatives), the epoch just
finished and the early-stopping tracker. Resuming from it replays the same remaining epochs as an
uninterrupted run. Nothing is ever unpickled: ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

from pathlib import Path

from temacli import artifacts
from temacli.errors import TemacliError


def save_weights(model, path: str | Path) -> Path:
    """The model's state dict (parameters and buffers) as safetensors, written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with artifacts.atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp))
    return Path(path)


def load_weights(model, path: str | Path, device: str = "cpu") -> None:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise TemacliError(f"{path}: model weights not found; train a model with `temacli train --out {path.parent}`")
    try:
        state = load_file(str(path), device=device)
    except Exception as e:  # safetensors raises its own error types
        raise TemacliError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise TemacliError(
            f"{path}: weights do not fit the model in config.json ({first[1].strip() if len(first) > 1 else first[0]}); "
            "retrain or use the config.json written with these weights"
        ) from None


def save_checkpoint(path: str | Path, model, optimizer, generator, epoch: int, tracker: dict) -> Path:
    import torch

    state = {
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
        "tracker": tracker,
    }
    with artifacts.atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, model, optimizer, generator, device: str = "cpu") -> tuple[int, dict]:
    """Restore a checkpoint in place; returns (epoch finished, tracker)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TemacliError(f"{path}: no checkpoint to resume from; start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise TemacliError(f"{path}: checkpoint cannot be read ({type(e).__name__}); start again without --resume") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    generator.set_state(state["generator"].cpu())
    return int(state["epoch"]), state["tracker"]
