"""`temacli eval` on really trained tiny models (TEMA and SASRec, trained with the library)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from temacli.data.dataset import Dataset
from temacli.evaluation.evaluate import open_model_and_data
from temacli.evaluation.metrics import rank_of_target

pytestmark = pytest.mark.slow  # trains two tiny models (~15 s on the shared CPU)


@pytest.fixture(scope="module")
def tr(trained_runs):
    return trained_runs


def test_sampled_eval_matches_per_row_scoring(tr, run_cli):
    code, out, err = run_cli(["eval", "--model", tr["tema"], "--data", tr["data"].path, "--json", "--device", "cpu"])
    assert code == 0, err
    res = json.loads(out)
    assert res["model"]["kind"] == "tema" and res["protocol"] == "sampled"
    # the same ranks, one row at a time through the model's own interface
    model, ds = open_model_and_data(tr["tema"], None, "cpu")
    sp, cands = ds.split("test"), ds.candidates("test")
    ranks = []
    for i in range(len(sp)):
        state = model.encode(sp.padded([i], model.max_len, model.pad), sp.target_domain[[i]].astype(np.int64))
        items = np.concatenate([[sp.target[i]], cands[i]]).astype(np.int64)[None, :]
        s = model.score_candidates(state, items)
        ranks.append(int(rank_of_target(s[:, 0], s[:, 1:])[0]))
    mrr = float(np.mean(1.0 / np.asarray(ranks)))
    assert res["metrics"]["all"]["MRR"] == pytest.approx(mrr, rel=1e-5)


def test_full_eval_chunked_on_trained_model(tr, run_cli):
    outs = []
    for chunk in ("3", "100000"):
        code, out, err = run_cli(["eval", "--model", tr["tema"], "--protocol", "full", "--chunk-size", chunk,
                                  "--batch-size", "5", "--json", "--device", "cpu"])
        assert code == 0, err
        outs.append(json.loads(out))
    assert outs[0]["metrics"] == outs[1]["metrics"]
    n_x, n_y = tr["data"].n_x, tr["data"].n_y
    assert outs[0]["instances"]["candidates_per_instance"]["max"] <= max(n_x, n_y) - 1


def test_compare_trained_runs(tr, run_cli):
    code, out, err = run_cli(["eval", "--compare", tr["tema"], tr["sasrec"], "--device", "cpu"])
    assert code == 0, err
    assert "tema" in out and "sasrec" in out and "best in bold" in out


def test_per_domain_weights_of_a_run_selected_by_hr10(tr, run_cli, make_dataset):
    """`train --early-stop hr@10` keeps model.<domain>.safetensors; `eval --weights per-domain` ranks each
    domain's targets with its own weights, in LLMCDSR's layout."""
    from temacli.training.loop import ModelInputs, TrainOptions, train

    ds = Dataset.open(make_dataset(tr["tmp"] / "both_domains", preset="eval"))  # validation targets in both domains
    out = tr["tmp"] / "sasrec_hr10"
    train(ds.path, out, TrainOptions(model="sasrec", epochs=2, batch_size=32, max_len=10, device="cpu",
                                             threads=1, early_stop="hr@10"),
          ModelInputs(params={"dim": 16}))
    domains = ds.domains
    assert all((out / f"model.{d}.safetensors").is_file() for d in domains)
    res = {}
    for w in ("per-domain", *(f"model.{d}.safetensors" for d in domains)):
        code, text, err = run_cli(["eval", "--model", out, "--weights", w, "--layout", "llmcdsr", "--json", "--quiet",
                                   "--device", "cpu"])
        assert code == 0, err
        res[w] = json.loads(text)
    per = res["per-domain"]
    assert per["model"]["weights"] == "per-domain" and per["ks"] == [1, 3, 5, 10]
    for d in domains:
        assert per["metrics"][d] == res[f"model.{d}.safetensors"]["metrics"][d]
    code, text, err = run_cli(["eval", "--model", out, "--weights", "per-domain", "--layout", "llmcdsr", "--markdown",
                               "--no-slices", "--quiet", "--device", "cpu"])
    assert code == 0 and "| NDCG@1 % | NDCG@3 % |" in text and "tema" not in text.split("\n")[0]
