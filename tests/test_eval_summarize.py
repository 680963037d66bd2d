"""examples/summarize_results.py: seed means in our layout and LLMCDSR's, tie warnings listed."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from _eval_fixtures import DotModel
from temacli.data.dataset import Dataset
from temacli.evaluation.evaluate import evaluate_scorer
from test_eval_diagnostics import ConstScorer

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("summarize_results", ROOT / "examples" / "summarize_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_dataset):
    tmp = tmp_path_factory.mktemp("summ")
    ds = Dataset.open(make_dataset(tmp / "d", preset="eval"))
    runs = tmp / "runs"
    for name, seeds in (("tema", (1, 2)), ("sasrec", (3,))):
        for s in seeds:
            d = runs / f"{name}_s{s}"
            d.mkdir(parents=True)
            res = evaluate_scorer(DotModel(ds, seed=s), ds, protocol="sampled", ks=(1, 3, 5, 10))
            (d / "test.sampled.json").write_text(json.dumps(res))
    d = runs / "gru4rec_s1"
    d.mkdir()
    (d / "test.sampled.json").write_text(json.dumps(evaluate_scorer(ConstScorer(ds.n_items), ds, ks=(1, 3, 5, 10))))
    return runs


def test_llmcdsr_layout_means_over_seeds(folder, capsys):
    _script().main([str(folder), "--layout", "llmcdsr"])
    out = capsys.readouterr().out
    head = next(ln for ln in out.splitlines() if ln.startswith("| model"))
    assert "food NDCG@1 | food NDCG@3 | food NDCG@5 | food NDCG@10 | food HR@1 | food HR@3" in head
    assert "MRR" not in head
    tema = next(ln for ln in out.splitlines() if ln.startswith("| tema |"))
    vals = [json.loads((folder / f"tema_s{s}" / "test.sampled.json").read_text())["metrics"]["kitchen"]["HR@3"]
            for s in (1, 2)]
    expected = f"{100 * statistics.mean(vals):.2f} ± {100 * statistics.stdev(vals):.2f}"
    assert tema.startswith("| tema | 2 |") and expected in tema
    assert "- gru4rec (sampled): warning: the target ties" in out  # the constant scorer is named


def test_paper_layout_and_missing_cutoffs(folder, capsys, tmp_path):
    _script().main([str(folder)])
    out = capsys.readouterr().out
    assert "| model | seeds | food MRR | food NDCG@5 | food NDCG@10 |" in out
    d = tmp_path / "tema_s1"
    d.mkdir()
    r = json.loads((folder / "tema_s1" / "test.sampled.json").read_text())
    for dom in r["metrics"].values():
        dom.pop("HR@3")
    (d / "test.sampled.json").write_text(json.dumps(r))
    with pytest.raises(SystemExit, match="no HR@3; evaluate them with `temacli eval --ks 1,3,5,10`"):
        _script().main([str(tmp_path), "--layout", "llmcdsr"])


def test_weights_reads_one_selection_beside_or_inside_the_run(folder, capsys, tmp_path):
    """--weights W: NAME_sS.W.test.P.json beside the run folder (train_eval_grid.sh) or test.W.P.json in it."""
    r1 = json.loads((folder / "tema_s1" / "test.sampled.json").read_text())
    r2 = json.loads((folder / "tema_s2" / "test.sampled.json").read_text())
    for s in (1, 2):
        (tmp_path / f"tema_s{s}").mkdir()
    (tmp_path / "tema_s1.per-domain.test.sampled.json").write_text(json.dumps(r1))  # grid layout
    (tmp_path / "tema_s2" / "test.per-domain.sampled.json").write_text(json.dumps(r2))  # docs layout
    (tmp_path / "tema_s1" / "test.sampled.json").write_text(json.dumps(r2))  # another selection: not read
    _script().main([str(tmp_path), "--weights", "per-domain"])
    tema = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| tema |"))
    vals = [r["metrics"]["food"]["MRR"] for r in (r1, r2)]
    assert tema.startswith("| tema | 2 |") and f"{100 * statistics.mean(vals):.2f} ±" in tema
