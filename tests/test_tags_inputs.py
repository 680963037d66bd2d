"""Bad input to the tag stages (issue 12): item_tags.parquet validated where it is read, a non-UTF-8
prompt file, flag values refused before any work with their range, a dead server named in one line."""

from __future__ import annotations

import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _llm_server import FOOD, KITCHEN, write_tag_list
from temacli import artifacts
from temacli.cli import main
from temacli.errors import TemacliError
from temacli.tags.match import Selection, match_tags
from temacli.tags.store import load_item_tags

FOOD_TAGS = ["coffee", "pasta", "tea", "spice", "gluten free"]
KITCHEN_TAGS = ["cast iron", "coffee", "baking dish", "kettle"]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tagged(tmp_path, make_dataset):
    items = make_dataset(tmp_path, "data", items=FOOD + KITCHEN) / "items.parquet"
    write_tag_list(tmp_path / "tags" / "food.parquet", "food", FOOD_TAGS)
    write_tag_list(tmp_path / "tags" / "kitchen.parquet", "kitchen", KITCHEN_TAGS)
    m = match_tags(items, [tmp_path / "tags"], out=tmp_path / "it", method="keyword",
                   selection=Selection(select="top-r", top_r=2))
    return items, tmp_path / "tags", m["path"]


def _rewrite(path, **cols):
    t = pq.read_table(path).to_pydict()
    t.update(cols)
    pq.write_table(pa.table({"item": pa.array(t["item"], pa.int32()), "tag_index": pa.array(t["tag_index"], pa.int32()),
                             "score": pa.array(t["score"], pa.float32()), "weight": pa.array(t["weight"], pa.float32())}),
                   path)


def test_valid_item_tags_load(tagged):
    it = load_item_tags(tagged[2])
    assert it.item.size > 0 and np.allclose(np.bincount(it.item, weights=it.weight)[np.unique(it.item)], 1, atol=1e-5)


@pytest.mark.parametrize("edit,words", [
    (lambda t: {"weight": [np.nan] + t["weight"][1:]}, "row 0 .* weight is not a number in \\(0, 1\\]"),
    (lambda t: {"weight": [-0.5] + t["weight"][1:]}, "row 0 .* weight is not a number in \\(0, 1\\]"),
    (lambda t: {"score": [500.0] + t["score"][1:]}, "row 0 .* score is not a number in 1-100"),
    (lambda t: {"score": [np.inf] + t["score"][1:]}, "score is not a number in 1-100"),
    (lambda t: {"tag_index": [99] + t["tag_index"][1:]}, "tag_index outside the vocabulary"),
    (lambda t: {"item": [-1] + t["item"][1:]}, "item index is negative"),
    (lambda t: {"weight": [t["weight"][0] * 0.5] + t["weight"][1:]}, "sum to .*, not 1"),
    (lambda t: {k: [t[k][0]] + t[k] for k in t}, "appears twice"),
])
def test_bad_item_tags_are_refused_with_the_row(tagged, edit, words):
    path = tagged[2]
    _rewrite(path, **edit(pq.read_table(path).to_pydict()))
    with pytest.raises(TemacliError, match=words):
        load_item_tags(path)


def test_zero_row_item_tags_are_refused(tagged):
    path = tagged[2]
    _rewrite(path, item=[], tag_index=[], score=[], weight=[])
    with pytest.raises(TemacliError, match="has no rows"):
        load_item_tags(path)
    # the file was edited after `tags match`: refused by its fingerprint even where empty shards are allowed
    with pytest.raises(TemacliError, match="changed after `tags match` wrote it"):
        load_item_tags(path, allow_empty=True)
    _refingerprint(path)  # as if `tags match` had written the empty shard itself
    assert load_item_tags(path, allow_empty=True).item.size == 0  # `tags merge` reads empty shards


def _refingerprint(path):
    m = artifacts.read_manifest(path)
    m["outputs"]["item_tags"]["fingerprint"] = artifacts.fingerprint(path)
    artifacts.write_manifest(path, m)


def test_item_tags_edited_after_match_are_refused_even_when_valid(tagged):
    path = tagged[2]
    t = pq.read_table(path).to_pydict()
    t["tag_index"] = t["tag_index"][::-1]  # same rows, other tags: still a valid file, not the one written
    _rewrite(path, **t)
    with pytest.raises(TemacliError, match="item tags fingerprint .* does not match.*rerun `temacli tags match`"):
        load_item_tags(path)


def test_prompt_file_not_utf8_is_one_line(tagged, tmp_path, capsys):
    items, tags, _ = tagged
    bad = tmp_path / "prompt.txt"
    bad.write_bytes(b"Score the items \xff\xfe {tags} {items}")
    for argv in (["tags", "generate", "--domain", "food", "--runs", "1", "--prompt-file", str(bad),
                  "--out", str(tmp_path / "g" / "food.parquet")],
                 ["tags", "match", "--items", str(items), "--tags", str(tags), "--method", "llm",
                  "--prompt-file", str(bad), "--out", str(tmp_path / "m" / "item_tags.parquet")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --prompt-file") and "not UTF-8" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g").exists() and not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv,words", [
    (["generate", "--domain", "food", "--runs", "0"], "--runs 0: must be between 1 and 100"),
    (["generate", "--domain", "food", "--num-tags", "500"], "--num-tags 500: must be between 1 and 200"),
    (["generate", "--domain", "food", "--runs", "3", "--min-votes", "4"], "--min-votes 4: must be between 1 and 3"),
    (["generate", "--domain", "food", "--max-share", "1.5"], "--max-share 1.5: must be between 0.0 and 1.0"),
    (["generate", "--domain", "food", "--max-words", "0"], "--max-words 0: must be between 1 and 10"),
    (["generate", "--domain", "food", "--ground", "magic"], "'--ground': Value error, 'magic' is not one of"),
    (["generate", "--domain", "food", "--merge-cos", "nan"], "--merge-cos nan: must be a finite number"),
    (["match", "--top-r", "0"], "--top-r must be at least 1"),
    (["match", "--threshold", "101"], "--threshold must be within 1..100"),
    (["match", "--shard", "4/4"], "--shard '4/4' must be i/n with 0 <= i < n"),
    (["match", "--batch-items", "0"], "--batch-items 0: must be between 1 and 256"),
    (["match", "--max-failed-share", "2"], "--max-failed-share 2.0: must be between 0.0 and 1.0"),
])
def test_flag_values_are_refused_before_any_work(tagged, tmp_path, capsys, argv, words):
    items, tags, _ = tagged
    out = tmp_path / "never"
    if argv[0] == "match":
        argv = argv + ["--items", str(items), "--tags", str(tags), "--method", "llm", "--out", str(out / "it.parquet")]
    else:
        argv = argv + ["--out", str(out / "t.parquet")]
    with pytest.raises(SystemExit) as e:
        main(["tags"] + argv)
    assert e.value.code == 2
    assert words in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def _flat(text: str) -> str:
    import re

    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def test_help_shows_the_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["tags", "generate", "--help"])
    text = _flat(capsys.readouterr().out)
    assert "(1-100)" in text and "(1-200)" in text
    with pytest.raises(SystemExit):
        main(["tags", "match", "--help"])
    text = _flat(capsys.readouterr().out)
    assert "strictly greater" in text and "(1-256)" in text


def test_dead_server_is_one_whole_line_naming_the_url(tagged, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(SystemExit) as e:
        main(["tags", "generate", "--domain", "food", "--runs", "1", "--llm", "openai/any", "--api-base", url,
              "--max-retries", "0", "--out", str(tmp_path / "g" / "food.parquet")])
    assert e.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and url in lines[0] and "is the server running" in lines[0]  # one whole line
    assert "Missing credentials" not in lines[0] and "OPENAI_API_KEY" not in lines[0]
