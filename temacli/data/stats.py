"""Table I of a dataset: items, training targets, valid/test targets, average sequence length per domain."""

from __future__ import annotations

import numpy as np

def compute_stats(built_or_splits, domains, n_x, n_y) -> dict:
    """Table I per domain: items, training targets, valid/test targets, average sequence length."""
    splits = built_or_splits
    stats: dict = {"domains": {}, "users": 0}
    users = set()
    total_len = 0.0
    n_seq = 0
    for name, t in splits.items():
        td = t.column("target_domain").to_numpy()
        lens = np.diff(np.asarray(t.column("history").combine_chunks().offsets)) if t.num_rows else np.array([])
        users.update(t.column("user").to_numpy().tolist())
        if name == "train":
            hist = t.column("history").combine_chunks()
            vals = np.asarray(hist.values) if t.num_rows else np.array([], dtype=np.int32)
            # every item of a training sequence after its first is a next-item target
            seq_dom = np.concatenate([(vals >= n_x).astype(np.int8), td]) if t.num_rows else np.array([])
            stats["train_sequences"] = int(t.num_rows)
            stats["train_interactions"] = int(vals.size + t.num_rows)
            for d, dn in enumerate(domains):
                stats["domains"].setdefault(dn, {})["train_interactions"] = int((seq_dom == d).sum())
                stats["domains"][dn]["train_targets"] = int((td == d).sum())
        else:
            for d, dn in enumerate(domains):
                stats["domains"].setdefault(dn, {})[f"{name}_targets"] = int((td == d).sum())
            if t.num_rows:
                total_len += float((lens + 1).sum())
                n_seq += t.num_rows
            stats[f"{name}_rows"] = int(t.num_rows)
    for d, dn in enumerate(domains):
        stats["domains"].setdefault(dn, {})["items"] = n_x if d == 0 else n_y
    stats["users"] = len(users)
    stats["avg_eval_sequence_length"] = round(total_len / n_seq, 2) if n_seq else 0.0
    if "train_sequences" in stats and stats["train_sequences"]:
        stats["avg_train_sequence_length"] = round(stats["train_interactions"] / stats["train_sequences"], 2)
    return stats
