"""`tags match --method embedding --features DIR` reuses text.npy (issue 13 item 6): the output is byte
for byte the output of encoding again; features of another items table are refused."""

from __future__ import annotations

import json

import pytest

from _llm_server import FOOD, KITCHEN, write_tag_list
from temacli.errors import TemacliError
from temacli.tags.match import match_tags

FOOD_TAGS = ["coffee", "pasta", "tea", "spice", "gluten free"]
KITCHEN_TAGS = ["cast iron", "coffee", "baking dish", "kettle"]


def test_embedding_reuse_equals_encoding_again(tmp_path, monkeypatch, make_dataset):
    from temacli.features.text import compute_text_features

    items = make_dataset(tmp_path, "data", items=FOOD + KITCHEN) / "items.parquet"
    write_tag_list(tmp_path / "tags" / "food.parquet", "food", FOOD_TAGS)
    write_tag_list(tmp_path / "tags" / "kitchen.parquet", "kitchen", KITCHEN_TAGS)
    compute_text_features(items, tmp_path / "features")
    a = match_tags(items, [tmp_path / "tags"], out=tmp_path / "a", method="embedding")
    # reuse: the encoder must not run on the items (it still encodes the few tags)
    import temacli.tags.embed as embed

    calls = []
    real = embed.item_text_vectors

    def spy(*args, **kw):
        out = real(*args, **kw)
        calls.append(out[1])
        return out

    monkeypatch.setattr(embed, "item_text_vectors", spy)
    b = match_tags(items, [tmp_path / "tags"], out=tmp_path / "b", method="embedding", features=tmp_path / "features")
    assert calls and calls[0]["reused"] is True
    assert (tmp_path / "a" / "item_tags.parquet").read_bytes() == (tmp_path / "b" / "item_tags.parquet").read_bytes()
    rep = json.loads((tmp_path / "b" / "item_tags.report.json").read_text())
    assert rep["item_vectors"]["reused"] is True and b["inputs"]["features_text"]["fingerprint"].startswith("sha256:")
    assert a["counts"]["rows"] == b["counts"]["rows"] > 0
    # features made for another items table: refused, nothing written
    other = make_dataset(tmp_path, "data2", items=FOOD[:3] + KITCHEN[:2]) / "items.parquet"
    write_tag_list(tmp_path / "tags2" / "food.parquet", "food", FOOD_TAGS)
    write_tag_list(tmp_path / "tags2" / "kitchen.parquet", "kitchen", KITCHEN_TAGS)
    with pytest.raises(TemacliError, match="items fingerprint of text.npy"):
        match_tags(other, [tmp_path / "tags2"], out=tmp_path / "c", method="embedding", features=tmp_path / "features")
    assert not (tmp_path / "c" / "item_tags.parquet").exists()
    with pytest.raises(TemacliError, match="--features is used by --method embedding only"):
        match_tags(items, [tmp_path / "tags"], out=tmp_path / "d", method="keyword", features=tmp_path / "features")
