"""Training: batches (batches.py), the one training step (step.py), the epoch loop with validation and
early stopping (loop.py), size and time estimates (sizing.py), and multi-GPU DistributedDataParallel
(distributed.py). The model folder it writes is owned by ``temacli.model.folder``."""
