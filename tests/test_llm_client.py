"""LLMClient through LiteLLM over real HTTP to a scripted server: retries, Retry-After, timeouts,
fatal errors, the cache, the concurrency bound, several endpoints, and keys kept out of messages."""

from __future__ import annotations

import threading
import time

import pytest

from _llm_server import Reply, serve
from temacli.errors import TemacliError
from temacli.llm.cache import ResponseCache, request_key
from temacli.llm.client import LLMClient, LLMSettings, Request, classify, redact, retry_after

pytestmark = pytest.mark.usefixtures("llm_env")  # a dummy key and a cache of its own per test


def _req(i=1, text="hi", validate=None):
    return Request(i, [{"role": "user", "content": text}], schema={"type": "object"}, validate=validate)


def _client(url, sleeps=None, **kw):
    async def fake_sleep(s):
        if sleeps is not None:
            sleeps.append(s)

    kw.setdefault("backoff", 0.01)
    kw.setdefault("concurrency", 1)
    return LLMClient(LLMSettings(model="openai/scripted", api_base=(url,), **kw), sleep=fake_sleep)


def _run(client, reqs):
    out = []
    stats = client.run(reqs, out.append)
    return out, stats


def test_429_retry_after_and_500_are_retried(llm_env):
    def script(body, n):
        if n == 1:
            return Reply(status=429, headers={"Retry-After": "7"})
        if n == 2:
            return Reply(status=500)
        if n == 3:
            return Reply(status=503)
        return Reply('{"ok": true}')

    sleeps = []
    with serve(script) as s:
        out, stats = _run(_client(s.url, sleeps, use_cache=False), [_req()])
    assert out[0].text == '{"ok": true}' and out[0].error is None
    assert len(s.requests) == 4 and stats.retries == 3
    # Retry-After: 7 s honoured (plus a little jitter); then backoff * 2^(k-1) for retry k, times U(0.5, 1.5)
    assert 7.0 <= sleeps[0] < 7.01
    assert 0.01 <= sleeps[1] < 0.03 and 0.02 <= sleeps[2] < 0.06
    # the request asked for the JSON schema, and carried the key from the environment
    assert s.requests[0]["response_format"]["type"] == "json_schema"
    assert s.auth[0] == f"Bearer {llm_env.key}"


def test_hang_past_timeout_is_retried():
    def script(body, n):
        return Reply('{"late": 1}', delay=3.0) if n == 1 else Reply('{"fast": 1}')

    with serve(script) as s:
        t0 = time.perf_counter()
        out, stats = _run(_client(s.url, use_cache=False, timeout=0.5), [_req()])
        dt = time.perf_counter() - t0
    assert out[0].text == '{"fast": 1}'
    assert stats.retries == 1 and dt < 3.0


def test_retries_exhausted_gives_error_result_without_secret(llm_env):
    with serve(lambda body, n: Reply(status=500)) as s:
        out, stats = _run(_client(s.url, use_cache=False, max_retries=2), [_req()])
    assert out[0].text is None and out[0].error
    assert len(s.requests) == 3 and stats.failed == 1
    assert llm_env.key not in out[0].error


def test_auth_failure_stops_the_run_with_one_line_and_no_key(llm_env):
    with serve(lambda body, n: Reply(status=401, body='{"error": {"message": "bad key ' + llm_env.key + '"}}')) as s:
        with pytest.raises(TemacliError) as e:
            _run(_client(s.url, use_cache=False), [_req(1), _req(2, "x")])
    msg = str(e.value)
    assert "OPENAI_API_KEY" in msg and llm_env.key not in msg and "\n" not in msg
    assert len(s.requests) == 1


def test_cache_makes_rerun_free_and_skips_invalid_replies(tmp_path):
    def script(body, n):
        text = body["messages"][0]["content"]
        return Reply("garbage" if text == "bad" else '{"v": "%s"}' % text)

    ok = lambda t: t.startswith("{")  # noqa: E731
    with serve(script) as s:
        c = _client(s.url)
        out, st = _run(c, [_req(1, "a", ok), _req(2, "b", ok), _req(3, "bad", ok)])
        assert st.called == 3 and st.invalid == 1
        c2 = _client(s.url)
        out2, st2 = _run(c2, [_req(1, "a", ok), _req(2, "b", ok), _req(3, "bad", ok)])
    assert st2.cached == 2 and st2.called == 1  # the invalid reply was not cached, so it is asked again
    assert {r.id: r.text for r in out2 if r.cached} == {1: '{"v": "a"}', 2: '{"v": "b"}'}
    assert len(s.requests) == 4


def test_cache_key_covers_model_messages_and_params(tmp_path):
    m = [{"role": "user", "content": "x"}]
    k = request_key("openai/a", m, {"temperature": 0})
    assert k == request_key("openai/a", m, {"temperature": 0})
    assert k != request_key("openai/b", m, {"temperature": 0})
    assert k != request_key("openai/a", [{"role": "user", "content": "y"}], {"temperature": 0})
    assert k != request_key("openai/a", m, {"temperature": 0.5})
    c = ResponseCache(tmp_path / "c.sqlite")
    c.put(k, "openai/a", "reply")
    c.close()
    assert ResponseCache(tmp_path / "c.sqlite").get(k) == "reply"


def test_concurrency_is_bounded():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def script(body, n):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return Reply("{}")

    with serve(script) as s:
        _run(_client(s.url, use_cache=False, concurrency=3), [_req(i, f"q{i}") for i in range(9)])
    assert state["max"] == 3


def test_several_api_bases_share_the_load():
    with serve(lambda b, n: Reply('{"s": 1}')) as s1, serve(lambda b, n: Reply('{"s": 2}')) as s2:
        c = LLMClient(LLMSettings(model="openai/scripted", api_base=(s1.url, s2.url), use_cache=False, concurrency=2))
        out, _ = _run(c, [_req(i, f"q{i}") for i in range(16)])
    assert len(out) == 16 and all(r.text for r in out)
    assert len(s1.requests) > 0 and len(s2.requests) > 0
    assert len(s1.requests) + len(s2.requests) == 16


def test_helpers_classify_retry_after_and_redact(monkeypatch, llm_env):
    class E(Exception):
        status_code = 429
        litellm_response_headers = {"retry-after-ms": "1500"}

    assert classify(E()) == "retry" and retry_after(E()) == 1.5
    assert classify(TimeoutError()) == "retry"
    assert classify(ValueError("x")) == "fail"

    class InternalServerError(Exception):
        status_code = 500

    assert classify(InternalServerError("OpenAIException - Missing credentials. Please pass an `api_key`")) == "fatal"
    assert classify(InternalServerError("upstream overloaded")) == "retry"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef-123")
    s = redact(f"key {llm_env.key} at https://user:pw@host/v1 with tok-abcdef-123, Bearer abc.def")
    assert llm_env.key not in s and "user:pw" not in s and "tok-abcdef-123" not in s and "abc.def" not in s


def test_settings_refuse_bad_values():
    with pytest.raises(TemacliError, match="--concurrency"):
        LLMSettings(concurrency=0)
    with pytest.raises(TemacliError, match="--api-base"):
        LLMSettings(api_base=("localhost:8000",))
    with pytest.raises(TemacliError, match="--response-format"):
        LLMSettings(response_format="xml")
    assert "pw" not in str(LLMSettings(model="openai/x", api_base=("http://u:pw@h/v1",)).public())


def test_litellm_is_imported_with_offline_switches_and_local_provider():
    import os

    from temacli.llm.client import import_litellm

    litellm = import_litellm()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True" and os.environ["LITELLM_OFFLINE_MODE"] == "true"
    assert any(p["provider"] == "temacli-local" for p in litellm.custom_provider_map)
    assert litellm.telemetry is False
