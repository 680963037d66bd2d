"""The constrained decoder of the local model, with a stand-in language model (fast): whatever the
model's logits, the reply is valid JSON of the schema, keys are the schema's, values in range."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from temacli.llm.local import LocalModel, _Decoder
from temacli.tags.generate import tag_schema
from temacli.tags.match import match_schema

VOCAB = list("abcdefghijklmnopqrstuvwxyz0123456789 ,.:{}[]\"'&-_!?<>\n") + ["ab", " the", "tea", " tea", "10",
                                                                           '",', "food", " food", "Coffee"]


class _Tok:
    all_special_ids = [len(VOCAB)]  # an end-of-text token

    def encode(self, text, add_special_tokens=False):
        out, i = [], 0
        while i < len(text):
            best = max((t for t in VOCAB if text.startswith(t, i)), key=len, default=None)
            out.append(VOCAB.index(best) if best is not None else VOCAB.index("?"))
            i += len(best) if best is not None else 1
        return out

    def decode(self, ids):
        return "".join(VOCAB[i] if i < len(VOCAB) else "" for i in ids)


class _Cache:
    def __init__(self):
        self.ids: list[int] = []

    def get_seq_length(self):
        return len(self.ids)

    def crop(self, k):
        assert k < 0
        del self.ids[k:]


class FakeLM(LocalModel):
    """Pseudo-random but deterministic logits from the whole context (like a real LM, context-dependent).
    (The batched score_fields path needs a real transformers model: tests/test_tags_local.py checks it.)"""

    batched = False

    def __init__(self, seed: int):
        self.torch = torch
        self.tok = _Tok()
        self.seed = seed
        self._setup_vocab(len(VOCAB) + 1)

    def step(self, ids, cache):
        cache = cache or _Cache()
        cache.ids.extend(ids)
        h = zlib.crc32(bytes(str((self.seed, cache.ids[-12:], len(cache.ids))), "ascii"))
        g = torch.Generator().manual_seed(h)
        return torch.randn(self.vocab_size, generator=g) * 3, cache


@pytest.mark.parametrize("seed", range(6))
def test_tag_list_schema_always_valid(seed):
    lm = FakeLM(seed)
    dec = _Decoder(lm, lm.tok.encode("list tags"), budget=400)
    dec.value(tag_schema(5))
    data = json.loads(dec.out_text())
    assert list(data) == ["tags"] and len(data["tags"]) == 5
    for el in data["tags"]:
        assert list(el) == ["tag", "score"]
        assert 0 <= el["score"] <= 1 and len(el["tag"]) <= 40
        assert all(ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ &'" for ch in el["tag"])
    assert len(data["tags"]) == 5


@pytest.mark.parametrize("seed", range(6))
def test_match_schema_always_valid_and_only_vocabulary_keys(seed):
    lm = FakeLM(100 + seed)
    tags = ["coffee", "gluten free", "tea"]
    dec = _Decoder(lm, lm.tok.encode("score items"), budget=400)
    dec.value(match_schema(tags, 2))
    data = json.loads(dec.out_text())
    assert [e["id"] for e in data["items"]] == [1, 2]
    for e in data["items"]:
        assert list(e["scores"]) == tags
        assert all(isinstance(v, int) and 1 <= v <= 100 for v in e["scores"].values())


def test_values_of_a_score_map_do_not_see_their_siblings():
    lm = FakeLM(7)
    seen = []
    orig = lm.step

    def spy(ids, cache):
        logits, cache = orig(ids, cache)
        seen.append(lm.tok.decode(cache.ids))
        return logits, cache

    lm.step = spy
    dec = _Decoder(lm, lm.tok.encode("P:"), budget=400)
    dec.value({"type": "object", "properties": {t: {"type": "integer", "minimum": 1, "maximum": 100}
                                                for t in ("tea", "food")}})
    food_ctx = [c for c in seen if c.endswith('"food": ')]
    assert food_ctx and all('"tea"' not in c for c in food_ctx)
    assert json.loads(dec.out_text()).keys() == {"tea", "food"}


def test_budget_exhaustion_still_gives_valid_json():
    lm = FakeLM(3)
    dec = _Decoder(lm, lm.tok.encode("x"), budget=3)
    dec.value(match_schema(["a", "b"], 2))
    data = json.loads(dec.out_text())
    assert all(1 <= v <= 100 for e in data["items"] for v in e["scores"].values())
