"""Diagnostics of every evaluation: tied targets and NaN candidate scores, per domain, in JSON and tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _eval_fixtures import DotModel, fake_models  # noqa: F401  (fixture)
from temacli.data.dataset import Dataset
from temacli.evaluation.evaluate import evaluate_scorer
from temacli.evaluation.metrics import diagnostics_by_domain, tie_warning
from temacli.evaluation.protocols import full_rank_stats, sampled_rank_stats
from temacli.evaluation.report import result_markdown
from test_eval_protocols import TableScorer, ref_key, ref_score


class ConstScorer:
    """Every item gets the same score: a degenerate model."""

    def __init__(self, n_items: int, max_len: int = 6):
        self.max_len, self.pad = max_len, n_items

    def encode(self, histories, target_domain):
        return len(histories)

    def score_candidates(self, b, items):
        return np.zeros(np.asarray(items).shape, np.float32)

    def score_items(self, b, items):
        return np.zeros((b, len(items)), np.float32)


class ConstModel(DotModel):
    """The fake model interface with constant scores (for the CLI)."""

    def score_candidates(self, state, items):
        self.calls["score_candidates"] += 1
        return np.zeros(np.asarray(items).shape, np.float32)

    def score_items(self, state, items):
        self.calls["score_items"] += 1
        b = next(iter(state.values())).shape[0]
        return np.zeros((b, len(items)), np.float32)


@pytest.fixture(scope="module")
def ds(tmp_path_factory, make_dataset):
    return Dataset.open(make_dataset(tmp_path_factory.mktemp("evaldiag"), preset="eval"))


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_constant_scorer_is_flagged(ds, protocol):
    res = evaluate_scorer(ConstScorer(ds.n_items), ds, protocol=protocol)
    assert res["metrics"]["all"]["MRR"] == 1.0  # ties favour the target: perfect on paper
    for d in ("food", "kitchen", "all"):
        g = res["diagnostics"][d]
        assert g["n"] == res["metrics"][d]["n"] and g["tied_targets"] == g["n"] and g["tied_share"] == 1.0
        assert g["nan_candidate_scores"] == 0 and g["nan_target_scores"] == 0
    assert len(res["warnings"]) == 1 and res["warnings"][0].startswith("warning: the target ties")
    assert "100.0% of food instances" in res["warnings"][0] and "kitchen" in res["warnings"][0]
    md = result_markdown(res, slices=False)
    header = next(ln for ln in md.splitlines() if ln.startswith("| target domain"))
    assert header.endswith("| tied % | NaN cand. |")
    food = next(ln for ln in md.splitlines() if ln.startswith("| food"))
    assert food.endswith("| 100.00 | 0 |")
    assert res["warnings"][0] in md


def test_a_real_model_has_no_tie_warning(ds):
    res = evaluate_scorer(DotModel(ds, seed=4), ds, protocol="full")
    assert res["warnings"] == [] and res["diagnostics"]["all"]["tied_targets"] == 0


def test_tie_counts_equal_a_plain_loop(ds):
    """TableScorer has 5 score levels: ties are everywhere; count them one row at a time."""
    sp, cands = ds.split("test"), ds.candidates("test")
    sc = TableScorer(ds.n_items)
    st = sampled_rank_stats(sc, sp, cands, batch_size=7)
    full = full_rank_stats(sc, sp, (ds.domain_range(0), ds.domain_range(1)), batch_size=4, chunk_size=5)
    for i in range(len(sp)):
        key = ref_key(sp.history(i), sc.max_len, sc.pad)
        tgt = int(sp.target[i])
        t = ref_score(key, tgt)
        assert st.ties[i] == sum(ref_score(key, int(c)) == t for c in cands[i]), i
        lo, hi = ds.domain_range(int(sp.target_domain[i]))
        hist = set(int(v) for v in sp.history(i))
        others = [v for v in range(lo, hi) if v != tgt and v not in hist]
        assert full.ties[i] == sum(ref_score(key, v) == t for v in others), i
    assert (st.ties > 0).any() and (full.ties > 0).any()
    diag = diagnostics_by_domain(st.ties, st.nan_candidates, st.nan_target, sp.target_domain, ds.domains)
    assert diag["all"]["tied_targets"] == int((st.ties > 0).sum())
    assert diag["food"]["n"] + diag["kitchen"]["n"] == len(sp)


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_nan_candidate_scores_are_counted_per_domain(ds, protocol):
    sp, cands = ds.split("test"), ds.candidates("test")
    # an item that is a candidate somewhere but never a target: only candidate scores are NaN
    targets = set(int(t) for t in sp.target)
    counts = np.bincount(cands.ravel(), minlength=ds.n_items)
    nan_item = next(int(i) for i in np.argsort(-counts) if int(i) not in targets)
    res = evaluate_scorer(TableScorer(ds.n_items, nan_item=nan_item), ds, protocol=protocol)
    expected = {"food": 0, "kitchen": 0}
    rows_with = {"food": 0, "kitchen": 0}
    for i in range(len(sp)):
        d = ds.domains[int(sp.target_domain[i])]
        if protocol == "sampled":
            k = int((cands[i] == nan_item).sum())
        else:
            lo, hi = ds.domain_range(int(sp.target_domain[i]))
            k = int(lo <= nan_item < hi and nan_item not in set(int(v) for v in sp.history(i)))
        expected[d] += k
        rows_with[d] += int(k > 0)
    assert sum(expected.values()) > 0
    for d in ("food", "kitchen"):
        assert res["diagnostics"][d]["nan_candidate_scores"] == expected[d]
        assert res["diagnostics"][d]["instances_with_nan_candidates"] == rows_with[d]
    assert res["diagnostics"]["all"]["nan_candidate_scores"] == sum(expected.values())
    assert res["diagnostics"]["all"]["nan_target_scores"] == 0 == res["instances"]["nan_score"]["n"]
    md = result_markdown(res, slices=False)
    line = next(ln for ln in md.splitlines() if ln.startswith("| all"))
    assert line.endswith(f"| {sum(expected.values())} |")


def test_warning_threshold_is_one_percent():
    diag = {"x": {"n": 1000, "tied_targets": 10, "tied_share": 0.010, "nan_candidate_scores": 0},
            "y": {"n": 1000, "tied_targets": 11, "tied_share": 0.011, "nan_candidate_scores": 0}}
    assert tie_warning({"x": diag["x"], "y": diag["x"]}, ("x", "y")) is None  # exactly 1%: no warning
    w = tie_warning(diag, ("x", "y"))
    assert w is not None and "1.1% of y instances (11 of 1000)" in w and "of x" not in w
    assert "\n" not in w


def test_cli_prints_one_warning_line_and_diagnostics_in_json(tmp_path, fake_models, run_cli, make_dataset):  # noqa: F811
    ds = Dataset.open(make_dataset(tmp_path, preset="eval"))
    m = fake_models(tmp_path / "const", ConstModel(ds, kind="tema"))
    code, out, err = run_cli(["eval", "--model", m, "--json", "--quiet"])
    assert code == 0, err
    res = json.loads(out)
    assert res["diagnostics"]["all"]["tied_share"] == 1.0
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "ties favour the target" in lines[0]
    code, out, err = run_cli(["eval", "--model", m, "--no-slices", "--quiet"])
    assert code == 0 and "tied %" in out and "NaN cand." in out and "100.00" in out
    assert sum(ln.startswith("warning:") for ln in err.splitlines()) == 1
