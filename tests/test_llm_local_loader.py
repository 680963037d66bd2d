"""The offline model's streaming GGUF loader against transformers' own GGUF loading: the same weights
bit for bit, the same tokenizer, and a tokenizer/config cache that is used, rebuilt when damaged and
optional when the cache directory cannot be written (slow: loads the model twice)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You write JSON."},
            {"role": "user", "content": "List tags for the domain 'Food & Drink': crème brûlée, 12 oz. coffee"}]
TEXTS = ["Lavazza whole bean coffee, 2.2 lb", "  pirate   ships & écoles ", "tags: [\"a\", \"b\"]", ""]


@pytest.fixture()
def gguf(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    from temacli.llm.local import gguf_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(tmp_path / "cache"))
    return gguf_path()


def test_streaming_loader_equals_transformers(gguf, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from temacli.llm.local import load_streaming

    tok, model = load_streaming(gguf)
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)

    ours, theirs = model.state_dict(), ref.state_dict()
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype == torch.float32, name
        assert torch.equal(ours[name], theirs[name]), name
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as in the file
    # the rotary tables (buffers the file does not hold) are computed, not left uninitialised
    for (n, a), (_, b) in zip(model.named_buffers(), ref.named_buffers()):
        assert torch.equal(a, b), n
    ids = torch.tensor([ref_tok.encode(TEXTS[0])])
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)

    # the tokenizer came from the cache entry the load wrote; it reads and writes text as the GGUF's does
    assert (tmp_path / "cache" / "local-model").is_dir()
    tok2, _ = load_streaming(gguf)
    for t in (tok, tok2):
        assert t.get_vocab() == ref_tok.get_vocab()
        assert t.all_special_ids == ref_tok.all_special_ids
        for text in TEXTS:
            assert t.encode(text, add_special_tokens=False) == ref_tok.encode(text, add_special_tokens=False)
        assert (t.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
                == ref_tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False))
        n = len(ref_tok)
        assert [t.decode([i]) for i in range(0, n, 97)] == [ref_tok.decode([i]) for i in range(0, n, 97)]


def test_tokenizer_cache_is_used_rebuilt_and_optional(gguf, tmp_path, monkeypatch):
    import transformers

    from temacli.llm import local

    reads = []
    real = transformers.AutoTokenizer.from_pretrained

    def counting(path, *a, **kw):
        if kw.get("gguf_file"):
            reads.append(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
    tok, cfg = local._tokenizer_and_config(gguf)
    assert len(reads) == 1
    local._tokenizer_and_config(gguf)
    assert len(reads) == 1  # the second load reads the cache entry, not the GGUF
    (entry,) = (tmp_path / "cache" / "local-model").iterdir()
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".tmp-")]  # no temporary left
    (entry / "tokenizer.json").write_text("{ damaged")
    tok3, _ = local._tokenizer_and_config(gguf)
    assert len(reads) == 2 and tok3.get_vocab() == tok.get_vocab()  # a damaged entry is read again...
    local._tokenizer_and_config(gguf)
    assert len(reads) == 2  # ...and rewritten

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory would go")
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(blocked))
    tok4, cfg4 = local._tokenizer_and_config(gguf)  # an unwritable cache costs speed, not the load
    assert tok4.get_vocab() == tok.get_vocab() and cfg4.to_dict() == cfg.to_dict()
