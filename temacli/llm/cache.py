"""A persistent response cache in SQLite, keyed by model, prompt and parameters.

LiteLLM's own disk cache is gone from current releases, so temacli keeps its own: one table, one row
per successful reply, committed as soon as the reply arrives. A run that is interrupted (Ctrl-C or
``kill -9``) loses at most the replies in flight; the next run finds every finished reply here and
makes no repeated calls, so its output is the output of an uninterrupted run.

The key is ``sha256`` of the canonical JSON of everything that decides a reply: the model string,
the messages, temperature, max_tokens, the response format / JSON schema and the endpoints
(``--api-base``, without credentials, sorted): another server behind the same model string gets its
own entries, while a command that spreads one fleet of servers keeps its entries across runs.
Keys and headers never enter the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from temacli.errors import TemacliError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """``$TEMACLI_CACHE_DIR/llm-cache.sqlite``, else ``$XDG_CACHE_HOME/temacli/...``, else ``~/.cache/temacli/...``."""
    root = os.environ.get("TEMACLI_CACHE_DIR")
    if root:
        return Path(root) / "llm-cache.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "temacli" / "llm-cache.sqlite"


def request_key(model: str, messages: list[dict], params: dict[str, Any], endpoint: list[str] | None = None) -> str:
    """The cache key of one request (hex sha256 of its canonical JSON), endpoint included."""
    blob = json.dumps({"model": model, "messages": messages, "params": params, "endpoint": endpoint or []},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """``get(key) -> str | None`` and ``put(key, model, reply)``; safe to reopen after a crash."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise TemacliError(
                f"{self.path}: cannot open the LLM response cache ({e}); pass another --cache path or --no-cache"
            ) from None
        self.hits = 0
        self.writes = 0

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return row[0]

    def put(self, key: str, model: str, reply: str) -> None:
        # autocommit (isolation_level=None): the row is durable once this returns
        self._db.execute(
            "INSERT OR REPLACE INTO replies (key, model, reply, created) VALUES (?, ?, ?, ?)",
            (key, model, reply, time.time()),
        )
        self.writes += 1

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class NoCache:
    """Stands in for :class:`ResponseCache` under ``--no-cache``."""

    path = None
    hits = 0
    writes = 0

    def get(self, key: str) -> str | None:
        return None

    def put(self, key: str, model: str, reply: str) -> None:
        pass

    def close(self) -> None:
        pass


def open_cache(path: str | os.PathLike | None, enabled: bool = True) -> ResponseCache | NoCache:
    if not enabled:
        return NoCache()
    return ResponseCache(path if path is not None else default_cache_path())
