"""`tags generate` (Algorithm 1) against the scripted server: vote, normalisation, ties, unreadable
runs, per-run prompts, manifest, CLI."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from _llm_server import FOOD, KITCHEN, Reply, chat_user, serve
from temacli.cli import main
from temacli.errors import TemacliError
from temacli.llm.client import LLMSettings
from temacli.tags.generate import RunRecord, build_prompts, generate_tags, vote
from temacli.tags.parse import normalise_tag, parse_tag_list

pytestmark = pytest.mark.usefixtures("llm_env")  # a dummy key and a cache of its own per test


def _tags(*pairs):
    return json.dumps({"tags": [{"tag": t, "score": s} for t, s in pairs]})


def test_normalise_and_tolerant_parse():
    assert normalise_tag("  Gluten-Free ") == "gluten free"
    assert normalise_tag("#Snack_Foods!") == "snack foods"
    assert normalise_tag("") is None and normalise_tag(None) is None
    tags, err = parse_tag_list('Here:\n```json\n{"tags": [{"tag": "Tea", "score": 0.5}, {"tag": "tea ", "score": 0.9}, ["Coffee", 80]]}\n```')
    assert err is None and tags == [("tea", 0.5), ("coffee", 0.8)]  # dup in a run merged, 1-100 scaled
    tags, err = parse_tag_list("1. Organic: 0.9\n2. Spicy (0.7)\n- baking")
    assert tags == [("organic", 0.9), ("spicy", 0.7), ("baking", None)]
    tags, err = parse_tag_list('{"tags": ')
    assert tags == [] and "no tags" in err


def test_vote_majority_ties_and_order():
    runs = [
        RunRecord(0, "ok", [("tea", 0.9), ("coffee", 0.5), ("pasta", 0.9)]),
        RunRecord(1, "ok", [("tea", 0.7), ("coffee", 0.9), ("rice", 0.9)]),
        RunRecord(2, "ok", [("coffee", 0.7), ("tea", 0.8), ("pasta", 0.3)]),
        RunRecord(3, "unparsable", []),
    ]
    kept, n, need = vote(runs, num_tags=10, min_votes=2)
    assert n == 3 and need == 2  # a strict majority of the parsed runs
    # tea and coffee: 3 votes (tie broken by mean score 0.8 vs 0.7); pasta 2 votes; rice 1 vote (dropped)
    assert [(k["tag"], k["votes"]) for k in kept] == [("tea", 3), ("coffee", 3), ("pasta", 2)]
    assert kept[0]["mean_score"] == pytest.approx(0.8) and kept[2]["mean_score"] == pytest.approx(0.6)
    # equal votes and equal means: earlier in the lists first, then alphabetical; N caps the list
    tie = [RunRecord(0, "ok", [("b", 0.5), ("a", 0.5), ("c", 0.5)])]
    kept, _, _ = vote(tie, num_tags=2)
    assert [k["tag"] for k in kept] == ["b", "a"]
    tie = [RunRecord(0, "ok", [("b", 0.5), ("a", 0.5)]), RunRecord(1, "ok", [("a", 0.5), ("b", 0.5)])]
    kept, _, _ = vote(tie, num_tags=2)
    assert [k["tag"] for k in kept] == ["a", "b"]
    kept, _, need = vote(runs, num_tags=10)  # default: the N most voted
    assert need == 1 and [k["tag"] for k in kept] == ["tea", "coffee", "pasta", "rice"]
    kept, _, _ = vote(runs, num_tags=3)
    assert [k["tag"] for k in kept] == ["tea", "coffee", "pasta"]


def test_runs_see_different_prompts():
    titles = [f"title {i}" for i in range(50)]
    with_items = build_prompts("food", 4, 10, titles, 5, 0, "{domain} {num_tags} {examples} {aspects}")
    assert len(set(with_items)) == 4
    assert with_items == build_prompts("food", 4, 10, titles, 5, 0, "{domain} {num_tags} {examples} {aspects}")
    without = build_prompts("movie", 5, 10, [], 5, 0, "{domain} {examples} {aspects}")
    assert len(set(without)) == 5  # the aspect order rotates even without titles


def test_generate_end_to_end_with_unreadable_and_failed_runs(tmp_path, llm_env, make_dataset):
    items = make_dataset(tmp_path, "data", items=FOOD + KITCHEN) / "items.parquet"
    replies = {
        1: Reply(_tags(("Coffee", 0.9), ("Tea", 0.8), ("Pasta", 0.4))),
        2: Reply("I cannot help with that."),  # prose: no tags
        3: Reply("```json\n" + _tags(("coffee", 0.7), ("gluten-free", 0.6), ("TEA ", 0.6)) + "\n```"),
        4: Reply('{"tags": [{"tag": "pasta", "sc'),  # cut off: unreadable
        5: Reply(_tags(("Gluten Free", 0.5), ("coffee", 0.5))),
    }
    seen_prompts = []
    state = {"rerun": False, "asked": 0}

    def script(body, n):
        if state["rerun"]:
            state["asked"] += 1
            return Reply(_tags(("coffee", 0.9)))
        seen_prompts.append(chat_user(body))
        return replies.get(n, Reply(status=500))

    out = tmp_path / "tags" / "food.parquet"
    with serve(script) as s:
        st = LLMSettings(model="openai/scripted", api_base=(s.url,), concurrency=1, backoff=0.01)
        m = generate_tags("food", out=out, items=items, runs=5, num_tags=10, settings=st, min_votes=2,
                          min_items=1)
        # unreadable replies were not cached: a rerun (same server: the endpoint is part of the cache key)
        # asks only those two again
        state["rerun"] = True
        m2 = generate_tags("food", out=tmp_path / "tags2" / "food.parquet", items=items, runs=5, num_tags=10,
                           settings=st, min_votes=2, min_items=1)
    assert state["asked"] == 2 and m2["counts"]["cache_hits"] == 3
    t = pq.read_table(out).to_pydict()
    # parsed runs: 1, 3, 5 (3 runs, need 2 votes): coffee 3, tea 2, gluten free 2; pasta 1 (dropped)
    assert t["tag"] == ["coffee", "tea", "gluten free"]
    assert t["votes"] == [3, 2, 2] and set(t["runs"]) == {3} and set(t["domain"]) == {"food"}
    assert m["counts"]["runs_parsed"] == 3 and m["counts"]["runs_unparsable"] == 2
    # every run saw food titles, different ones; no kitchen title leaks in
    assert len(set(seen_prompts)) == 5 and all("Lodge" not in p for p in seen_prompts)
    report = json.loads((tmp_path / "tags" / "food.report.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["ok", "unparsable", "ok", "unparsable", "ok"]
    man = json.loads((tmp_path / "tags" / "food.parquet.manifest.json").read_text())
    assert man["stage"] == "tags generate" and man["params"]["llm"]["model"] == "openai/scripted"
    assert len(man["params"]["prompt_sha256"]) == 64 and man["inputs"]["items"]["fingerprint"].startswith("sha256:")
    assert llm_env.key not in json.dumps(man) and llm_env.key not in json.dumps(report)


def test_generate_refuses_when_nothing_parses_and_bad_domain(tmp_path, make_dataset):
    items = make_dataset(tmp_path, "data", items=FOOD + KITCHEN) / "items.parquet"
    with serve(lambda b, n: Reply("no idea")) as s:
        st = LLMSettings(model="openai/scripted", api_base=(s.url,))
        with pytest.raises(TemacliError, match="none of the 2 runs"):
            generate_tags("food", out=tmp_path / "t.parquet", runs=2, settings=st)
        with pytest.raises(TemacliError, match="no items of domain 'books'"):
            generate_tags("books", out=tmp_path / "t.parquet", items=items, runs=2, settings=st)
    assert not (tmp_path / "t.parquet").exists()


def test_cli_generate_json(tmp_path, capsys, make_dataset):
    items = make_dataset(tmp_path, "data", items=FOOD + KITCHEN) / "items.parquet"
    with serve(lambda b, n: Reply(_tags(("Cookware", 0.9), ("Bakeware", 0.7)))) as s:
        with pytest.raises(SystemExit) as e:
            main(["tags", "generate", "--domain", "kitchen", "--items", str(items), "--runs", "3",
                  "--llm", "openai/scripted", "--api-base", s.url, "--out", str(tmp_path / "k.parquet"), "--json",
                  "--min-items", "0"])
    assert e.value.code == 0
    res = json.loads(capsys.readouterr().out)
    assert [t["tag"] for t in res["tags"]] == ["cookware", "bakeware"] and res["counts"]["runs_parsed"] == 3
    with pytest.raises(SystemExit) as e:
        main(["tags", "generate", "--domain", "kitchen", "--runs", "0"])
    assert e.value.code == 2
    capsys.readouterr()
    # the list is there now: a rerun into it is refused (nothing written) unless --force replaces it
    out = tmp_path / "k.parquet"
    before = out.read_bytes()
    rerun = ["tags", "generate", "--domain", "kitchen", "--items", str(items), "--runs", "2", "--llm",
             "openai/scripted", "--out", str(out), "--json", "--min-items", "0"]
    with serve(lambda b, n: Reply(_tags(("Knives", 0.9)))) as s:
        with pytest.raises(SystemExit) as e:
            main([*rerun, "--api-base", s.url])
        assert e.value.code == 2 and out.read_bytes() == before and s.requests == []
        assert capsys.readouterr().err.strip() == f"error: {out} exists; pass --force to replace it, or choose another --out"
        with pytest.raises(SystemExit) as e:
            main([*rerun, "--api-base", s.url, "--force"])
    assert e.value.code == 0
    assert json.loads(capsys.readouterr().out)["counts"]["runs"] == 2
    assert pq.read_table(out).column("tag").to_pylist() == ["knives"]
