"""One tag representation (issue 14 item 3): `temacli.tags.represent` by hand, its refusals, and the
same e_tag from `tags match --represent X` as from `represent(..., X)` on the same scores."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from _llm_server import FOOD, KITCHEN, write_tag_list
from temacli.errors import TemacliError
from temacli.tags.match import Selection, match_tags
from temacli.tags.represent import REPRESENTATIONS, represent

FOOD_TAGS = ["coffee", "pasta", "tea", "spice", "gluten free"]
KITCHEN_TAGS = ["cast iron", "coffee", "baking dish", "kettle", "tea"]


def _rows(*arrs):
    return [(int(i), int(t), round(float(w), 5)) for i, t, w in zip(*arrs)]


def test_represent_by_hand():
    item = np.array([3, 0, 0, 0, 3, 7])
    tag = np.array([2, 5, 1, 4, 9, 0])
    w = np.array([10, 90, 30, 90, 30, 0.2])
    assert _rows(*represent(item, tag, w, "weighted")) == [
        (0, 4, round(90 / 210, 5)), (0, 5, round(90 / 210, 5)), (0, 1, round(30 / 210, 5)),
        (3, 9, 0.75), (3, 2, 0.25), (7, 0, 1.0)]
    assert _rows(*represent(item, tag, w, "multihot")) == [
        (0, 4, 0.33333), (0, 5, 0.33333), (0, 1, 0.33333), (3, 9, 0.5), (3, 2, 0.5), (7, 0, 1.0)]
    # one-hot: the top weight, ties (90/90 of item 0) by the lower tag index
    assert _rows(*represent(item, tag, w, "onehot")) == [(0, 4, 1.0), (3, 9, 1.0), (7, 0, 1.0)]
    for how in REPRESENTATIONS:
        i, t, x = represent(item, tag, w, how)
        assert i.dtype == np.int64 and t.dtype == np.int64 and x.dtype == np.float32
        sums = np.bincount(i, weights=x)
        assert np.allclose(sums[np.unique(i)], 1.0, atol=1e-6)
    e = represent(np.zeros(0), np.zeros(0), np.zeros(0), "weighted")
    assert [a.size for a in e] == [0, 0, 0]


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_represent_refuses_bad_weights(bad):
    with pytest.raises(TemacliError, match=r"row 1 \(item 0, tag 2\).*finite and > 0"):
        represent(np.array([0, 0]), np.array([1, 2]), np.array([0.5, bad]), "weighted")


def test_represent_refuses_duplicates_unknown_and_shapes():
    with pytest.raises(TemacliError, match="given twice"):
        represent(np.array([0, 0]), np.array([1, 1]), np.array([0.5, 0.5]), "multihot")
    with pytest.raises(TemacliError, match="unknown; choose weighted, multihot, onehot"):
        represent(np.array([0]), np.array([1]), np.array([1.0]), "binary")
    with pytest.raises(TemacliError, match="one length"):
        represent(np.array([0, 1]), np.array([1]), np.array([1.0]), "weighted")
    with pytest.raises(TemacliError, match="negative tag index"):
        represent(np.array([0]), np.array([-1]), np.array([1.0]), "weighted")


def _e_tag(item, tag, weight, n_items, n_tags):
    import torch

    from temacli.model.tema import TEMA, TEMAConfig

    torch.manual_seed(0)
    n_x = sum(1 for r in FOOD)
    cfg = TEMAConfig(n_x=n_x, n_y=n_items - n_x, streams=("id", "tag"), q=8, n_tags=n_tags)
    model = TEMA(cfg, tags=(item, tag, weight))
    with torch.no_grad():
        return model.e_tag_all().numpy()


@pytest.mark.parametrize("how", REPRESENTATIONS)
def test_match_and_represent_give_identical_e_tag(tmp_path, how, make_dataset):
    """`tags match --represent X` and represent(scores, X) (what `train --tag-weights X` calls) agree."""
    items = make_dataset(tmp_path, "data", items=FOOD + KITCHEN) / "items.parquet"
    write_tag_list(tmp_path / "tags" / "food.parquet", "food", FOOD_TAGS)
    # "coffee" and "tea" are in both lists, so kitchen's columns are not in vocabulary order: ties must
    # still be broken by the vocabulary index, as represent() does
    write_tag_list(tmp_path / "tags" / "kitchen.parquet", "kitchen", KITCHEN_TAGS)
    sel = dict(select="top-r", top_r=3)
    ref = match_tags(items, [tmp_path / "tags"], out=tmp_path / "w", method="keyword",
                     selection=Selection(represent="weighted", **sel))
    t = pq.read_table(ref["path"]).to_pydict()
    item, tag, score = (np.asarray(t[k]) for k in ("item", "tag_index", "score"))
    n_items, n_tags = len(FOOD) + len(KITCHEN), ref["counts"]["tags"]
    assert len(set(item.tolist())) >= 6  # enough tagged items for the comparison to mean something
    got = match_tags(items, [tmp_path / "tags"], out=tmp_path / how, method="keyword",
                     selection=Selection(represent=how, **sel))
    g = pq.read_table(got["path"]).to_pydict()
    ri, rt, rw = represent(item, tag, score, how)
    assert _rows(g["item"], g["tag_index"], g["weight"]) == _rows(ri, rt, rw)
    a = _e_tag(np.asarray(g["item"]), np.asarray(g["tag_index"]), np.asarray(g["weight"]), n_items, n_tags)
    b = _e_tag(ri, rt, rw, n_items, n_tags)
    assert np.array_equal(a, b)
    assert np.abs(a).sum() > 0
