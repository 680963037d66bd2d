"""Training: batches (batches.py), the epoch loop with validation and early stopping (loop.py),
checkpoints and resume (checkpoint.py), and multi-GPU DistributedDataParallel (distributed.py)."""
