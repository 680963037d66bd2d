"""The sampled and full protocols against simple independent reimplementations, slices, skips."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from _eval_fixtures import DotModel
from temacli import artifacts
from temacli.data.dataset import Dataset, SPLIT
from temacli.data.split import rewrite_split
from temacli.evaluation.evaluate import evaluate_scorer
from temacli.evaluation.protocols import full_ranks, sampled_ranks
from temacli.evaluation.slices import train_item_counts

LEVELS = 5  # few score levels: ties are everywhere


class TableScorer:
    """Scores in {0, 1, ..., LEVELS-1}: a fixed hash of (padded history, item). ``nan_item`` scores NaN."""

    def __init__(self, n_items: int, max_len: int = 6, nan_item: int | None = None):
        self.max_len, self.pad = max_len, n_items
        self.nan_item = nan_item
        self.encoded_rows = 0
        self.encode_calls = 0

    def encode(self, histories, target_domain):
        self.encode_calls += 1
        self.encoded_rows += len(histories)
        w = np.arange(1, self.max_len + 1, dtype=np.int64)
        return (np.asarray(histories, dtype=np.int64) * w).sum(axis=1) % 100003

    def _s(self, keys, items):
        s = ((keys * 7919 + items * 104729) % 9973 % LEVELS).astype(np.float32)
        if self.nan_item is not None:
            s = np.where(items == self.nan_item, np.float32(np.nan), s)
        return s

    def score_candidates(self, keys, items):
        return self._s(np.asarray(keys)[:, None], np.asarray(items, dtype=np.int64))

    def score_items(self, keys, items):
        return self._s(np.asarray(keys)[:, None], np.asarray(items, dtype=np.int64)[None, :])


def ref_key(history, max_len, pad) -> int:
    """The key of TableScorer, computed the plain way, one history at a time."""
    h = [int(v) for v in history][-max_len:]
    row = [pad] * (max_len - len(h)) + h
    return sum(v * (j + 1) for j, v in enumerate(row)) % 100003


def ref_score(key, item, nan_item=None) -> float:
    if item == nan_item:
        return math.nan
    return float((key * 7919 + item * 104729) % 9973 % LEVELS)


def ref_rank(t: float, others: list[float]) -> int:
    if math.isnan(t):
        return len(others) + 1
    return 1 + sum(1 for s in others if s > t)  # NaN > t is False


@pytest.fixture(scope="module")
def ds(tmp_path_factory, make_dataset):
    return Dataset.open(make_dataset(tmp_path_factory.mktemp("evalproto"), preset="eval"))


def test_sampled_fast_path_equals_plain_loop(ds):
    sp, cands = ds.split("test"), ds.candidates("test")
    sc = TableScorer(ds.n_items)
    fast = sampled_ranks(sc, sp, cands, batch_size=7)
    for i in range(len(sp)):
        key = ref_key(sp.history(i), sc.max_len, sc.pad)
        t = ref_score(key, int(sp.target[i]))
        expected = ref_rank(t, [ref_score(key, int(c)) for c in cands[i]])
        assert fast[i] == expected, i
    # ties really happened and were resolved in the target's favour
    assert fast.min() == 1 and len(set(fast.tolist())) > 3
    # each sequence encoded once, in batches: never once per candidate
    assert sc.encoded_rows == len(sp) and sc.encode_calls == math.ceil(len(sp) / 7)


@pytest.mark.parametrize("exclude", [True, False])
def test_full_ranking_equals_plain_loop(ds, exclude):
    sp = ds.split("test")
    sc = TableScorer(ds.n_items)
    ranges = (ds.domain_range(0), ds.domain_range(1))
    ranks, n_cand = full_ranks(sc, sp, ranges, exclude_history=exclude, batch_size=4, chunk_size=5)
    for i in range(len(sp)):
        key = ref_key(sp.history(i), sc.max_len, sc.pad)
        tgt = int(sp.target[i])
        lo, hi = ranges[int(sp.target_domain[i])]
        hist = set(int(v) for v in sp.history(i))
        others = [v for v in range(lo, hi) if v != tgt and not (exclude and v in hist)]
        assert n_cand[i] == len(others)
        assert ranks[i] == ref_rank(ref_score(key, tgt), [ref_score(key, v) for v in others]), i
    assert sc.encoded_rows == len(sp)


def test_full_ranking_chunked_equals_unchunked(ds):
    sp = ds.split("test")
    model = DotModel(ds, seed=3)
    ranges = (ds.domain_range(0), ds.domain_range(1))
    whole, n_whole = full_ranks(model, sp, ranges, chunk_size=10**6, batch_size=1000)
    for chunk, batch in ((1, 3), (4, 5), (7, 64)):
        part, n_part = full_ranks(model, sp, ranges, chunk_size=chunk, batch_size=batch)
        assert np.array_equal(whole, part) and np.array_equal(n_whole, n_part)
    # keeping the history as candidates can only push targets down
    kept, n_kept = full_ranks(model, sp, ranges, exclude_history=False)
    assert (kept >= whole).all() and (n_kept >= n_whole).all() and (kept > whole).any()


def test_full_ranking_uses_bounded_chunks(ds):
    """score_items never sees more than chunk_size items (+ the batch's targets)."""
    sp = ds.split("test")
    seen = []

    class Spy(TableScorer):
        def score_items(self, keys, items):
            seen.append((len(keys), len(items)))
            return super().score_items(keys, items)

    full_ranks(Spy(ds.n_items), sp, (ds.domain_range(0), ds.domain_range(1)), batch_size=4, chunk_size=6)
    assert seen and max(m - b for b, m in seen) <= 6


def test_nan_target_ranked_last_counted_and_named(ds):
    sp = ds.split("test")
    nan_item = int(sp.target[0])
    res = evaluate_scorer(TableScorer(ds.n_items, nan_item=nan_item), ds, protocol="full")
    hit = [str(u) for u, t in zip(sp.user_id, sp.target) if t == nan_item]
    assert res["instances"]["nan_score"]["n"] == len(hit) >= 1
    assert sorted(res["instances"]["nan_score"]["user_ids"]) == sorted(hit)
    assert res["instances"]["evaluated"] == len(sp)  # ranked last, not dropped


def test_result_names_protocol_split_candidates_model(ds):
    model = DotModel(ds)
    res = evaluate_scorer(model, ds, split="valid", protocol="sampled", model={"path": "m", "name": "m",
                                                                           "kind": "fake", "fingerprint": "sha256:ab"})
    assert res["protocol"] == "sampled" and res["split"] == "valid"
    assert res["candidates"]["fingerprint"] == ds.candidates_fingerprint("valid")
    assert res["model"]["kind"] == "fake" and res["data"]["fingerprint"] == ds.fingerprint
    full = evaluate_scorer(model, ds, protocol="full")
    kept = evaluate_scorer(model, ds, protocol="full", exclude_history=False)
    assert full["exclude_history"] is True and kept["exclude_history"] is False
    assert full["candidates"]["fingerprint"] != kept["candidates"]["fingerprint"]
    n = len(ds.split("test"))
    assert full["metrics"]["all"]["n"] == n
    assert full["metrics"]["food"]["n"] + full["metrics"]["kitchen"]["n"] == n


def test_slices_partition_the_instances(ds):
    res = evaluate_scorer(DotModel(ds), ds, protocol="full", cold_threshold=3)
    n = res["instances"]["evaluated"]
    for group, slices in res["slices"].items():
        assert sum(s["all"]["n"] for s in slices.values()) == n, group
        for s in slices.values():
            assert s["food"]["n"] + s["kitchen"]["n"] == s["all"]["n"]
    # by hand: users U000, U005, ... have food-only test histories (food_only_every=5 of the "eval" preset in conftest.py)
    sp = ds.split("test")
    one = sum(1 for i in range(len(sp)) if len(set(int(v >= ds.n_x) for v in sp.history(i))) == 1)
    assert one >= 1 and res["slices"]["history"]["one domain"]["all"]["n"] == one
    counts = train_item_counts(ds.split("train"), ds.n_items)
    tr = ds.split("train")
    item = int(sp.target[0])
    by_hand = sum(int(v == item) for i in range(len(tr)) for v in tr.sequence(i))
    assert counts[item] == by_hand
    cold = sum(1 for t in sp.target if counts[int(t)] <= 3)
    assert res["slices"]["target"]["cold (<=3 in train)"]["all"]["n"] == cold


def test_empty_history_is_skipped_counted_and_named(tmp_path, make_dataset):
    ds = Dataset.open(make_dataset(tmp_path, preset="eval"))
    t = artifacts.read_table(ds.path / "test.parquet", SPLIT)
    hist = t.column("history").to_pylist()
    hist[2] = []
    t = t.set_column(t.column_names.index("history"), "history", pa.array(hist, pa.list_(pa.int32())))
    rewrite_split(ds, "test", t)  # a deliberate edit, recorded in the manifest
    who = t.column("user_id").to_pylist()[2]
    res = evaluate_scorer(DotModel(ds), ds, protocol="sampled")
    skipped = res["instances"]["skipped"]["empty history"]
    assert skipped == {"n": 1, "user_ids": [who]}
    assert res["instances"]["evaluated"] == res["instances"]["total"] - 1 == res["metrics"]["all"]["n"]


def test_bad_protocol_and_split(ds):
    from temacli.errors import TemacliError

    with pytest.raises(TemacliError, match="protocol"):
        evaluate_scorer(DotModel(ds), ds, protocol="fancy")
    with pytest.raises(TemacliError, match="split 'train'"):
        evaluate_scorer(DotModel(ds), ds, split="train")


def test_domain_router_ranks_each_domain_with_its_scorer(ds):
    from temacli.evaluation.protocols import DomainRouter

    sp, cands = ds.split("test"), ds.candidates("test")
    a, b = DotModel(ds, seed=1), DotModel(ds, seed=2)
    routed = sampled_ranks(DomainRouter((a, b)), sp, cands, batch_size=4)
    dom = sp.target_domain.astype(int)
    for d, m in ((0, a), (1, b)):
        alone = sampled_ranks(m, sp, cands)
        assert np.array_equal(routed[dom == d], alone[dom == d])
    ranges = (ds.domain_range(0), ds.domain_range(1))
    routed_full, _ = full_ranks(DomainRouter((a, b)), sp, ranges, batch_size=4, chunk_size=9)
    assert np.array_equal(routed_full[dom == 1], full_ranks(b, sp, ranges)[0][dom == 1])
    # each row is encoded once, by its own domain's scorer
    assert a.calls["encoded_rows"] == int((dom == 0).sum()) * 2 + len(sp)  # 2 routed runs + 1 alone
