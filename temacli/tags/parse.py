"""Reading LLM replies: tolerant JSON extraction and tag normalisation.

A reply should be the JSON the prompt asked for, but backends without JSON mode wrap it in prose or
code fences, cut it off, or use another shape. ``extract_json`` finds the first complete JSON value
in the text; ``parse_tag_list`` accepts the shapes models actually write and falls back to one tag per
line; ``normalise_tag`` makes "Gluten-Free", " gluten  free " and "gluten_free" one tag.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

MAX_TAG_CHARS = 40  # one cap: the tag schema's maxLength, the parser, the local decoder
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_SEP = re.compile(r"[\s_\-/]+")
_EDGE = re.compile(r"^[^\w&']+|[^\w&')]+$")
_LINE = re.compile(
    r"^\s*(?P<mark>[-*\u2022]|\d+[.)])?\s*[\"']?(?P<tag>[^:\"'(\n]+?)[\"']?\s*(?:[:=(\-\u2013]\s*(?P<score>\d*\.?\d+)\s*\)?)?\s*,?\s*$"
)


def normalise_tag(text: Any, max_chars: int | None = MAX_TAG_CHARS) -> str | None:
    """Lowercase, NFKC, separators to single spaces, edge punctuation off; None when nothing is left
    (or when longer than ``max_chars``; None = no cap)."""
    if not isinstance(text, str):
        return None
    t = unicodedata.normalize("NFKC", text).lower().strip()
    t = t.lstrip("#")
    t = _SEP.sub(" ", t).strip()
    t = _EDGE.sub("", t).strip()
    if not t or (max_chars is not None and len(t) > max_chars):
        return None
    return t


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (code fences and prose around it allowed); None if none."""
    if not isinstance(text, str):
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    dec = json.JSONDecoder()
    for cand in candidates:
        s = cand.strip()
        try:
            return json.loads(s)
        except ValueError:
            pass
        for i, ch in enumerate(s):
            if ch in "{[":
                try:
                    val, _ = dec.raw_decode(s[i:])
                    return val
                except ValueError:
                    continue
    return None


def as_score01(value: Any) -> float | None:
    """A domain-tag score in [0, 1]; 1-100 scales are divided by 100; anything else is None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v) or v < 0:
        return None
    if v > 1:
        if v <= 100:
            return v / 100.0
        return None
    return v


def parse_tag_list(text: str, max_chars: int | None = MAX_TAG_CHARS) -> tuple[list[tuple[str, float | None]], str | None]:
    """``[(tag, score or None)]`` from a reply, and an error string when nothing could be read.

    Tags longer than ``max_chars`` are left out (None: kept, for the rules of ``tags generate`` to drop
    with a reason)."""
    data = extract_json(text)
    pairs: list[tuple[Any, Any]] = []
    if data is not None:
        if isinstance(data, dict):
            inner = None
            for k in ("tags", "tag_list", "Tags", "items", "list"):
                if k in data:
                    inner = data[k]
                    break
            data = inner if inner is not None else data
        if isinstance(data, dict):  # {"tag": score, ...}
            pairs = list(data.items())
        elif isinstance(data, list):
            for el in data:
                if isinstance(el, dict):
                    tag = el.get("tag", el.get("name", el.get("label")))
                    pairs.append((tag, el.get("score", el.get("relevance", el.get("weight")))))
                elif isinstance(el, (list, tuple)) and el:
                    pairs.append((el[0], el[1] if len(el) > 1 else None))
                elif isinstance(el, str):
                    pairs.append((el, None))
    if not pairs and isinstance(text, str) and data is None:
        for line in text.splitlines():
            m = _LINE.match(line)
            if (m and m.group("tag") and (m.group("mark") or m.group("score")) and len(m.group("tag")) <= MAX_TAG_CHARS and len(m.group("tag").split()) <= 5
                    and not line.strip().endswith(("{", "[", ":"))):
                pairs.append((m.group("tag"), m.group("score")))
    out: list[tuple[str, float | None]] = []
    seen: set[str] = set()
    for tag, score in pairs:
        t = normalise_tag(tag, max_chars)
        if t is None or t in seen:
            continue
        seen.add(t)
        out.append((t, as_score01(score) if score is not None else None))
    if not out:
        snippet = " ".join(str(text)[:80].split())
        return [], f"no tags could be read from the reply (starts: {snippet!r})"
    return out, None


def as_score100(value: Any) -> float | None:
    """An item-tag score: a finite number in [1, 100] (numeric strings allowed); else None."""
    if isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v) or v < 1 or v > 100:
        return None
    return v
