"""LiteLLM calls for the tag stages: the one road from temacli to a model.

* ``import_litellm()`` sets LiteLLM's offline switches (``LITELLM_LOCAL_MODEL_COST_MAP``,
  ``LITELLM_OFFLINE_MODE``) *before* importing it, so nothing reaches for the network at import, and
  registers the in-process offline model (``temacli-local/...``, see :mod:`temacli.llm.local`).
* :class:`LLMClient` sends many requests with a bound on concurrency (an asyncio worker pool),
  retries timeouts, 429 and 5xx with exponential backoff and jitter (honouring ``Retry-After``),
  reads and writes the :mod:`temacli.llm.cache` first, and spreads requests over several
  ``--api-base`` endpoints through a LiteLLM ``Router``.
* Keys come only from the environment (LiteLLM reads ``OPENAI_API_KEY`` & co.); :func:`redact`
  scrubs them, and user:password parts of URLs, from every message temacli prints or stores.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable

from temacli.errors import Interrupted, TemacliError

LOCAL_MODEL = "temacli-local/smollm2-135m"
OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}
RESPONSE_FORMATS = ("schema", "json", "none")

_litellm = None


def import_litellm():
    """Import LiteLLM with its offline switches set and the local provider registered (once)."""
    global _litellm
    if _litellm is not None:
        return _litellm
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True  # a backend that lacks response_format just doesn't get it
    from temacli.llm import local

    local.register(litellm)
    _litellm = litellm
    return litellm


# ----------------------------------------------------------------------------- secrets
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+", re.I)
_SK = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


def redact(text: str) -> str:
    """Remove secrets from ``text``: env values of *KEY/*TOKEN/*SECRET vars, URL userinfo, bearer tokens."""
    text = str(text)
    for name, value in os.environ.items():
        if value and len(value) >= 6 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    text = _BEARER.sub(r"\1***", text)
    return _SK.sub("sk-***", text)


def public_url(url: str) -> str:
    """An endpoint as it may appear in a manifest: without user:password."""
    return _URL_USERINFO.sub(lambda m: m.group("scheme"), url)


# ----------------------------------------------------------------------------- settings
@dataclass
class LLMSettings:
    """How to reach the model; everything here except secrets goes into the manifest."""

    model: str = LOCAL_MODEL
    api_base: tuple[str, ...] = ()
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 1.0  # first retry waits about this many seconds, doubling after each failure
    max_backoff: float = 60.0
    temperature: float = 0.0
    max_tokens: int | None = None
    response_format: str = "schema"  # schema | json | none
    cache: str | None = None  # path of the SQLite cache; None = default_cache_path()
    use_cache: bool = True

    def __post_init__(self):
        if not self.model or not isinstance(self.model, str):
            raise TemacliError("--llm is empty; pass a LiteLLM model string such as openai/gpt-4o-mini")
        if self.concurrency < 1:
            raise TemacliError(f"--concurrency must be at least 1 (got {self.concurrency})")
        if self.timeout <= 0:
            raise TemacliError(f"--timeout must be positive (got {self.timeout})")
        if self.max_retries < 0:
            raise TemacliError(f"--max-retries must be 0 or more (got {self.max_retries})")
        if self.response_format not in RESPONSE_FORMATS:
            raise TemacliError(
                f"--response-format '{self.response_format}' is unknown; choose {', '.join(RESPONSE_FORMATS)}"
            )
        self.api_base = tuple(b.strip() for b in self.api_base if b and b.strip())
        for b in self.api_base:
            if not re.match(r"^https?://", b):
                raise TemacliError(f"--api-base '{public_url(b)}' is not an http(s) URL; pass e.g. http://host:8000/v1")

    @property
    def is_local(self) -> bool:
        return self.model.startswith("temacli-local/")

    def public(self) -> dict[str, Any]:
        """Parameters for manifests: no keys, no URL credentials."""
        return {
            "model": self.model,
            "api_base": [public_url(b) for b in self.api_base],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_format": self.response_format,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "concurrency": self.concurrency,
        }


@dataclass
class Request:
    """One chat request. ``validate(text)`` decides whether a reply is good enough to cache."""

    id: Any
    messages: list[dict]
    schema: dict | None = None
    schema_name: str = "reply"
    validate: Callable[[str], bool] | None = None


@dataclass
class Result:
    id: Any
    text: str | None
    error: str | None = None
    cached: bool = False
    attempts: int = 0


@dataclass
class RunStats:
    requests: int = 0
    cached: int = 0
    called: int = 0
    failed: int = 0
    retries: int = 0
    invalid: int = 0  # replies that came back but did not validate (not cached)
    seconds: float = 0.0
    retry_reasons: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- errors
_RETRYABLE = (
    "Timeout",
    "RateLimitError",
    "InternalServerError",
    "ServiceUnavailableError",
    "APIConnectionError",
    "BadGatewayError",
    "RouterRateLimitError",
)
_FATAL = ("AuthenticationError", "PermissionDeniedError", "NotFoundError")
# some providers report a missing key as a 500 from the client library, before any request is sent
_MISSING_KEY = re.compile(r"missing credentials|api_key client option must be set|no api key", re.I)


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    resp = getattr(exc, "response", None)
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` / ``retry-after-ms``), if it said."""
    headers = None
    for attr in ("litellm_response_headers", "headers"):
        h = getattr(exc, attr, None)
        if h:
            headers = h
            break
    if headers is None:
        resp = getattr(exc, "response", None)
        headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        lower = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    except Exception:
        return None
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    val = lower.get("retry-after")
    if val is None:
        return None
    try:
        return max(0.0, float(val))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(val).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify(exc: BaseException) -> str:
    """``retry``, ``fatal`` (stop the whole run: bad key, unknown model) or ``fail`` (this request)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return "retry"
    name = type(exc).__name__
    names = {c.__name__ for c in type(exc).__mro__}
    if names & set(_FATAL) or _MISSING_KEY.search(str(exc)):
        return "fatal"
    if names & set(_RETRYABLE):
        return "retry"
    code = _status(exc)
    if code is not None and (code == 429 or code == 408 or code >= 500):
        return "retry"
    if name == "APIError" and code is None:
        return "retry"
    return "fail"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The exception as one line, redacted, cut at a word boundary (with an ellipsis) past ``limit``."""
    msg = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
    if len(msg) > limit:
        msg = msg[:limit].rsplit(" ", 1)[0] + " …"
    return msg


_CONNECTION = re.compile(r"connection (error|refused|reset|aborted)|connect(ion)? ?error|cannot connect|"
                         r"failed to establish|remote end closed|server disconnected|name or service not known|"
                         r"nodename nor servname|all connection attempts failed", re.I)


def is_connection_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"APIConnectionError", "ConnectError", "ConnectionError", "ConnectionRefusedError",
                "RemoteProtocolError", "ServerDisconnectedError"}:
        return True
    return bool(_CONNECTION.search(str(exc)))


def connection_message(settings: "LLMSettings") -> str:
    """One whole line for a refused or closed connection: which URL, what to check."""
    if settings.api_base:
        where = ", ".join(public_url(b) for b in settings.api_base)
        return (f"cannot connect to {where} (connection refused or closed): is the server running and "
                f"listening there, and is --api-base right (an OpenAI-compatible server's URL usually ends in /v1)?")
    return (f"cannot connect to the provider of {settings.model} (connection refused or closed): check the "
            "network, or pass --api-base for a server of your own")


# providers that send an OpenAI-style key; a server of your own behind --api-base often needs none
_OPENAI_STYLE = {"openai": "OPENAI_API_KEY", "hosted_vllm": "HOSTED_VLLM_API_KEY", "openai_like": "OPENAI_API_KEY",
                 "text-completion-openai": "OPENAI_API_KEY", "lm_studio": "LM_STUDIO_API_KEY",
                 "llamafile": "LLAMAFILE_API_KEY"}
PLACEHOLDER_KEY = "sk-no-key-needed"


def placeholder_key(settings: "LLMSettings") -> str | None:
    """A placeholder key for an OpenAI-style model behind --api-base when the environment has none
    (local servers such as ollama, vLLM and llama.cpp accept any key, but the client refuses to send
    none); sent to those endpoints only, never to the provider's own API."""
    if not settings.api_base:
        return None
    env = _OPENAI_STYLE.get(settings.model.split("/", 1)[0])
    if env is None or os.environ.get(env):
        return None
    return PLACEHOLDER_KEY


# ----------------------------------------------------------------------------- client
class LLMClient:
    """Send requests through LiteLLM with a cache, a concurrency bound and retries."""

    def __init__(self, settings: LLMSettings, sleep: Callable[[float], Any] | None = None):
        from temacli.llm.cache import open_cache

        self.s = settings
        self.cache = open_cache(settings.cache, settings.use_cache)
        self.stats = RunStats()
        self._sleep = sleep or asyncio.sleep
        self._router = None
        self._rng = random.Random()

    # the params that decide a reply (they make the cache key)
    def _params(self, req: Request) -> dict[str, Any]:
        p: dict[str, Any] = {"temperature": self.s.temperature}
        if self.s.max_tokens is not None:
            p["max_tokens"] = self.s.max_tokens
        if req.schema is not None and self.s.response_format == "schema":
            p["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": req.schema_name, "schema": req.schema, "strict": False},
            }
        elif req.schema is not None and self.s.response_format == "json":
            p["response_format"] = {"type": "json_object"}
        return p

    def key(self, req: Request) -> str:
        from temacli.llm.cache import request_key

        return request_key(self.s.model, req.messages, self._params(req), endpoint=self._endpoint())

    def _endpoint(self) -> list[str]:
        """The endpoints as they enter the cache key (without credentials; sorted, so a fleet shares entries)."""
        return sorted(public_url(b).rstrip("/") for b in self.s.api_base)

    def _get_router(self, litellm):
        if self._router is None:
            model_list = [
                {
                    "model_name": "temacli",
                    "litellm_params": {"model": self.s.model, "api_base": b,
                                       **({"api_key": key} if (key := placeholder_key(self.s)) else {})},
                }
                for b in self.s.api_base
            ]
            self._router = litellm.Router(
                model_list=model_list,
                routing_strategy="simple-shuffle",
                num_retries=0,
                disable_cooldowns=True,
            )
        return self._router

    async def _acompletion(self, litellm, req: Request) -> str:
        kw = dict(self._params(req))
        kw.update(messages=req.messages, timeout=self.s.timeout, num_retries=0, max_retries=0)
        if self.s.is_local:
            # the local provider reads the schema from here (custom providers get no response_format)
            kw["extra_body"] = {"temacli_schema": req.schema} if req.schema is not None else {}
        if len(self.s.api_base) > 1:
            resp = await self._get_router(litellm).acompletion(model="temacli", **kw)
        else:
            if self.s.api_base:
                kw["api_base"] = self.s.api_base[0]
                key = placeholder_key(self.s)
                if key is not None:
                    kw["api_key"] = key
            resp = await litellm.acompletion(model=self.s.model, **kw)
        choice = resp.choices[0]
        text = getattr(choice.message, "content", None)
        if text is None:
            raise ValueError("reply has no message content")
        return text

    async def _call(self, litellm, req: Request) -> Result:
        attempts = 0
        while True:
            attempts += 1
            try:
                # the in-process local model runs in a thread that cannot be cancelled: a timeout would only
                # start a second generation behind the first (on a busy machine, every run timed out and was
                # retried while the abandoned ones kept the model's lock), so it gets none
                limit = None if self.s.is_local else self.s.timeout * 1.5 + 5
                text = await asyncio.wait_for(self._acompletion(litellm, req), timeout=limit)
                return Result(req.id, text, attempts=attempts)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - every backend error is classified below
                kind = classify(exc)
                if kind == "fatal":
                    raise TemacliError(
                        f"model {self.s.model}: {_one_line(exc)}; check the model name and the key in the "
                        "environment (e.g. OPENAI_API_KEY)"
                    ) from None
                if kind == "fail" or attempts > self.s.max_retries:
                    error = connection_message(self.s) if is_connection_error(exc) else _one_line(exc)
                    return Result(req.id, None, error=error, attempts=attempts)
                self.stats.retries += 1
                reason = type(exc).__name__
                self.stats.retry_reasons[reason] = self.stats.retry_reasons.get(reason, 0) + 1
                wait = retry_after(exc)
                if wait is None:
                    base = min(self.s.max_backoff, self.s.backoff * (2 ** (attempts - 1)))
                    wait = base * (0.5 + self._rng.random())  # full jitter around the exponential step
                else:
                    wait = min(wait, self.s.max_backoff) + self._rng.random() * 0.1 * max(self.s.backoff, 0.01)
                await self._sleep(wait)

    def run(self, requests: Iterable[Request], on_result: Callable[[Result], None]) -> RunStats:
        """Answer every request (cache first, then the model); ``on_result`` sees each as it completes.

        A reply is cached only when ``request.validate`` accepts it (or there is no validator), so a
        garbled reply from a flaky server is asked again on the next run. Ctrl-C raises
        :class:`Interrupted` after the finished replies are safely in the cache.
        """
        t0 = time.perf_counter()
        pending: list[tuple[Request, str]] = []
        for req in requests:
            self.stats.requests += 1
            k = self.key(req)
            text = self.cache.get(k)
            if text is not None:
                self.stats.cached += 1
                on_result(Result(req.id, text, cached=True))
            else:
                pending.append((req, k))
        if pending:
            try:
                asyncio.run(self._run_pending(pending, on_result))
            except KeyboardInterrupt:
                raise Interrupted(
                    f"{self.cache.writes} new replies are in the cache ({self.cache.path}); "
                    "run the same command again to resume"
                ) from None
        self.stats.seconds = time.perf_counter() - t0
        return self.stats

    async def _run_pending(self, pending, on_result) -> None:
        litellm = import_litellm()
        queue: asyncio.Queue = asyncio.Queue()
        for p in pending:
            queue.put_nowait(p)

        async def worker():
            while True:
                try:
                    req, k = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                res = await self._call(litellm, req)
                self.stats.called += 1
                if res.text is not None:
                    ok = True
                    if req.validate is not None:
                        try:
                            ok = bool(req.validate(res.text))
                        except Exception:  # noqa: BLE001 - a validator crash means "don't cache"
                            ok = False
                    if ok:
                        self.cache.put(k, self.s.model, res.text)
                    else:
                        self.stats.invalid += 1
                else:
                    self.stats.failed += 1
                on_result(res)

        n = min(self.s.concurrency, len(pending))
        tasks = [asyncio.create_task(worker()) for _ in range(n)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    def close(self) -> None:
        self.cache.close()


def messages(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
