"""Real-LLM ergonomics (issue 13 item 7): an `openai/` model behind --api-base with no key works (a
placeholder key, sent to that base only), the cache key includes the endpoint, one tag-length cap."""

from __future__ import annotations

import json

import pytest

from _llm_server import Reply, serve
from temacli.llm.cache import request_key
from temacli.llm.client import PLACEHOLDER_KEY, LLMClient, LLMSettings, Request, placeholder_key


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("HOSTED_VLLM_API_KEY", raising=False)
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(tmp_path / "cache"))


def _run(settings, text="hi"):
    out = []
    c = LLMClient(settings)
    try:
        c.run([Request(1, [{"role": "user", "content": text}])], out.append)
    finally:
        c.close()
    return out[0], c.stats


def test_openai_model_with_api_base_and_no_key_works_with_a_placeholder(monkeypatch):
    with serve(lambda b, n: Reply('{"ok": 1}')) as s:
        res, _ = _run(LLMSettings(model="openai/any-local-model", api_base=(s.url,), max_retries=0))
        assert res.text == '{"ok": 1}' and res.error is None
        assert s.auth == [f"Bearer {PLACEHOLDER_KEY}"]
    # a key in the environment is used as it is; no placeholder for a provider's own API
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-key-0000000000")
    assert placeholder_key(LLMSettings(model="openai/x", api_base=("http://h:1/v1",))) is None
    monkeypatch.delenv("OPENAI_API_KEY")
    assert placeholder_key(LLMSettings(model="openai/gpt-4o-mini")) is None
    assert placeholder_key(LLMSettings(model="hosted_vllm/Qwen", api_base=("http://h:1/v1",))) == PLACEHOLDER_KEY
    assert placeholder_key(LLMSettings(model="anthropic/claude", api_base=("http://h:1/v1",))) is None


def test_cache_key_includes_the_endpoint():
    m = [{"role": "user", "content": "x"}]
    assert request_key("openai/a", m, {}, ["http://a/v1"]) != request_key("openai/a", m, {}, ["http://b/v1"])
    with serve(lambda b, n: Reply("first server")) as s1, serve(lambda b, n: Reply("second server")) as s2:
        r1, st1 = _run(LLMSettings(model="openai/same", api_base=(s1.url,)))
        r2, st2 = _run(LLMSettings(model="openai/same", api_base=(s2.url,)))
        r3, st3 = _run(LLMSettings(model="openai/same", api_base=(s1.url,)))
    assert (r1.text, r2.text, r3.text) == ("first server", "second server", "first server")
    assert st2.cached == 0 and st3.cached == 1  # the other server's reply was not reused


def test_schema_cap_equals_parser_cap():
    from temacli.tags.generate import tag_schema
    from temacli.tags.parse import MAX_TAG_CHARS, normalise_tag, parse_tag_list

    cap = tag_schema(5)["properties"]["tags"]["items"]["properties"]["tag"]["maxLength"]
    assert cap == MAX_TAG_CHARS == 40
    assert normalise_tag("a" * cap) == "a" * cap and normalise_tag("a" * (cap + 1)) is None
    tags, _ = parse_tag_list(json.dumps({"tags": [{"tag": "b" * (cap + 1), "score": 0.5}]}), None)
    assert tags == [("b" * (cap + 1), 0.5)]  # kept for the rules, which drop it as too_long


def test_local_model_requests_are_not_timed_out(monkeypatch):
    """The in-process model cannot be cancelled: a timeout would only queue a second generation behind the
    first (on a busy machine every run timed out and was retried), so local requests get no timeout."""
    import asyncio

    async def slow(self, litellm, req):
        await asyncio.sleep(0.3)
        return '{"tags": []}'

    monkeypatch.setattr(LLMClient, "_acompletion", slow)
    monkeypatch.setattr("temacli.llm.client.import_litellm", lambda: None)
    local = LLMSettings(model="temacli-local/smollm2-135m", timeout=0.01, max_retries=0, use_cache=False)
    res, st = _run(local)
    assert res.text == '{"tags": []}' and st.retries == 0
    seen = []
    real_wait_for = asyncio.wait_for

    async def spy(aw, timeout):
        seen.append(timeout)
        return await real_wait_for(aw, timeout)

    monkeypatch.setattr("temacli.llm.client.asyncio.wait_for", spy)
    _run(local)
    _run(LLMSettings(model="openai/x", api_base=("http://127.0.0.1:9/v1",), timeout=2, max_retries=0, use_cache=False))
    assert seen == [None, 2 * 1.5 + 5]  # a remote request keeps its limit
