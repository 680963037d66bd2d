"""Evaluation: pure metric functions of ranks, and the sampled and full protocols."""
