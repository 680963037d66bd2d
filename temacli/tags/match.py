"""``temacli tags match``: a 1-100 relevance score for every (item, tag of its domain), then selection
and representation (Section III-D, Fig. 3; Tables IV-VI).

Scoring methods (``--method``):

* ``llm`` — the paper's: an LLM scores ``--batch-items`` items per prompt against the domain's tag
  list (``temacli/llm/prompts/match.txt``); the reply's JSON schema lists the tags as the only keys and
  the item ids as constants, so a reply can only select tags from the vocabulary. Replies are
  cached (SQLite), so a rerun or a resumed run makes no repeated calls.
* ``embedding`` — cosine similarity of the item text and the tag text (all-MiniLM-L6-v2 via
  ``temacli.features.text.encode_texts``), mapped linearly to 1-100: ``cos <= COS_LO`` -> 1,
  ``cos >= COS_HI`` -> 100.
* ``keyword`` — static keyword assignment without an LLM (Table IV's "Tag Embedding" row): the share
  of the tag's words (lowercase, plural ``s`` dropped, stop words ignored) found in the item text,
  mapped to 1-100 (all words found -> 100, none -> 1).

Selection (``--select``), over the tags of the item's domain ordered by score (ties: tag index);
a score of 1 means "unrelated" and is never selected; unscored tags (an LLM that left them out) neither:

* ``top-r``: the R best (``--top-r``, default 5);
* ``threshold``: every tag scoring more than θ (``--threshold``, default 70; strictly greater, as the
  paper keeps tags "exceeding" θ);
* ``hybrid``: the R best, then every further tag scoring more than θ, up to ``--max-tags`` (default 10).

Representation (``--represent``) turns the selected scores into the weights w of Eq. 3/7, through
``temacli.tags.represent`` (the one implementation, also used by ``train --tag-weights``); every
tagged item's weights sum to 1:

* ``onehot``: only the best tag (ties: the lower vocabulary index), weight 1 (Table V row 1);
* ``multihot``: the selected tags, equal weights 1/k (row 2);
* ``weighted``: the selected tags, weights score / sum(scores) (row 3, the paper's).

Output: ``item_tags.parquet`` (ITEM_TAGS: item, tag_index, score, weight; sorted by item, then weight
descending, then tag_index) and ``tag_vocab.parquet`` beside it (the union of the domains' lists in
the items table's domain order, each list in its file order; a tag in both lists is one entry), a
manifest, and ``item_tags.report.json`` (items without text, items whose scoring failed, unknown tags
and out-of-range scores in replies). Items that end without tags are counted, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from temacli import artifacts
from temacli.errors import TemacliError
from temacli.tags.flags import parse_shard  # noqa: F401 (re-exported)
from temacli.tags.represent import REPRESENTATIONS, represent
from temacli.tags.embed import COS_HI, COS_LO, cos_to_score  # noqa: F401 (the embedding score map)
from temacli.tags.store import ITEM_TAGS, TAG_VOCAB

STAGE = "tags match"
METHODS = ("embedding", "llm", "keyword")
SELECTIONS = ("hybrid", "top-r", "threshold")
MAX_ITEM_CHARS = 500
MAX_BATCH_ITEMS = 256


@dataclass
class Selection:
    select: str = "hybrid"
    top_r: int = 5
    threshold: float = 70.0
    max_tags: int = 10
    represent: str = "weighted"

    def __post_init__(self):
        if self.select not in SELECTIONS:
            raise TemacliError(f"--select '{self.select}' is unknown; choose {', '.join(SELECTIONS)}")
        if self.represent not in REPRESENTATIONS:
            raise TemacliError(f"--represent '{self.represent}' is unknown; choose {', '.join(REPRESENTATIONS)}")
        if self.top_r < 1:
            raise TemacliError(f"--top-r must be at least 1 (got {self.top_r})")
        if not 1 <= self.threshold <= 100:
            raise TemacliError(f"--threshold must be within 1..100 (got {self.threshold})")
        if self.max_tags < 1:
            raise TemacliError(f"--max-tags must be at least 1 (got {self.max_tags})")
        if self.select == "hybrid" and self.max_tags < self.top_r:
            raise TemacliError(f"--max-tags ({self.max_tags}) is below --top-r ({self.top_r}); raise it")

    def params(self) -> dict:
        return {"select": self.select, "top_r": self.top_r, "threshold": self.threshold,
                "max_tags": self.max_tags, "represent": self.represent}


# ----------------------------------------------------------------------------- selection
def select_and_weight(scores: np.ndarray, sel: Selection, tie: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and weights of the selected entries of ``scores`` (n, k); NaN = unscored.

    Ties are broken by ``tie`` (the columns' vocabulary indices; default: the column), the same rule as
    ``temacli.tags.represent`` uses, so one-hot here and one-hot in ``train`` pick the same tag.
    """
    n, k = scores.shape
    if n == 0 or k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    s = np.where(np.isnan(scores), -np.inf, scores)
    tie = np.arange(k) if tie is None else np.asarray(tie)
    # order by score descending, ties by the tie key
    order = np.lexsort((np.broadcast_to(tie, (n, k)), -s), axis=-1)
    ranked = np.take_along_axis(s, order, axis=1)
    valid = ranked > 1.0
    pos = np.arange(k)[None, :]
    if sel.represent == "onehot":
        keep = valid & (pos < 1)
    elif sel.select == "top-r":
        keep = valid & (pos < sel.top_r)
    elif sel.select == "threshold":
        keep = valid & (ranked > sel.threshold)
    else:  # hybrid
        keep = valid & ((pos < sel.top_r) | (ranked > sel.threshold))
        keep &= np.cumsum(keep, axis=1) <= sel.max_tags
    rows, ranks = np.nonzero(keep)
    cols = order[rows, ranks]
    vals = ranked[rows, ranks].astype(np.float64)
    return represent(rows, cols, vals, sel.represent)


# ----------------------------------------------------------------------------- tag lists
def find_tag_files(tags: list[str | Path], domains: list[str]) -> list[Path]:
    """``--tags`` is folders (holding ``<domain>.parquet``) and/or files; one file per domain."""
    files: list[Path] = []
    for t in tags:
        p = Path(t)
        if p.is_dir():
            for d in domains:
                f = p / f"{d}.parquet"
                if f.is_file():
                    files.append(f)
        elif p.is_file():
            files.append(p)
        else:
            raise TemacliError(f"--tags {p}: no such file or folder; run `temacli tags generate` first")
    return files


def load_tag_lists(tags: list[str | Path], domains: list[str]) -> tuple[dict[str, list[str]], dict]:
    from temacli.tags.generate import read_domain_tags

    lists: dict[str, list[str]] = {}
    inputs = {}
    for f in find_tag_files(tags, domains):
        dom, tl, rec = read_domain_tags(f)
        if dom in lists:
            raise TemacliError(f"--tags: two tag lists for domain '{dom}' ({f} and another); pass one per domain")
        lists[dom] = tl
        inputs[f"tags_{dom}"] = rec
    missing = [d for d in domains if d not in lists]
    if missing:
        where = ", ".join(str(t) for t in tags)
        raise TemacliError(
            f"--tags {where}: no tag list for domain(s) {', '.join(missing)}; run "
            f"`temacli tags generate --domain {missing[0]} --items ITEMS --out TAGS/{missing[0]}.parquet`"
        )
    return lists, inputs


def fold_lists(lists: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[dict]]:
    """Each domain's list with one tag per canonical form (the first kept; e.g. a --literal list holding
    both ``pencil`` and ``pencils``), and the folds made."""
    from temacli.tags.canon import canonical

    out, folds = {}, []
    for d, tl in lists.items():
        seen: dict[str, str] = {}
        keep = []
        for t in tl:
            k = canonical(t) or t
            if k in seen:
                folds.append({"domain": d, "tag": t, "same_as": seen[k]})
                continue
            seen[k] = t
            keep.append(t)
        out[d] = keep
    return out, folds


def build_vocab(lists: dict[str, list[str]], domains: list[str]) -> tuple[list[tuple[str, str]], dict[str, np.ndarray]]:
    """Shared vocabulary [(tag, domain)] and, per domain, the vocabulary index of each tag of its list.

    A tag of two domains' lists (one canonical form: ``coffee`` and ``Coffee`` or ``coffees``) is one entry,
    shown as the first domain spells it."""
    from temacli.tags.canon import canonical

    vocab: list[tuple[str, str]] = []
    index: dict[str, int] = {}
    per_domain: dict[str, np.ndarray] = {}
    for d in domains:
        idx = []
        for t in lists[d]:
            k = canonical(t) or t
            if k not in index:
                index[k] = len(vocab)
                vocab.append((t, d))
            idx.append(index[k])
        per_domain[d] = np.asarray(idx, dtype=np.int64)
    return vocab, per_domain


# ----------------------------------------------------------------------------- scorers
def score_keyword(texts: list[str], tags: list[str]) -> np.ndarray:
    """Share of each tag's content words present in each text, mapped to 1..100 (float32 (n, k)).

    Words are compared in the canonical form of :mod:`temacli.tags.canon` (``&`` = ``and``, singular =
    plural), stop words of the tag are ignored."""
    from temacli.tags.canon import canonical, text_keys
    from temacli.tags.hygiene import content_keys

    tag_words = []
    for t in tags:
        key = canonical(t)
        tag_words.append(sorted(set(content_keys(key))) if key else [])
    out = np.ones((len(texts), len(tags)), dtype=np.float32)
    for i, text in enumerate(texts):
        have = text_keys(text)
        if not have:
            continue
        for j, ws in enumerate(tag_words):
            if ws:
                frac = sum(w in have for w in ws) / len(ws)
                out[i, j] = np.rint(1 + 99 * frac)
    return out


def score_embedding_vectors(item_vec: np.ndarray, tags: list[str], device: str = "cpu") -> np.ndarray:
    """1-100 scores from item vectors (unit rows) and the tags' vectors (float32 (n, k))."""
    from temacli.features.text import encode_texts

    tag_vec = encode_texts(list(tags), device=device)
    return cos_to_score(np.asarray(item_vec, dtype=np.float32) @ tag_vec.T)


def score_embedding(texts: list[str], tags: list[str], domain: str = "", device: str = "cpu", progress=None) -> np.ndarray:
    from temacli.features.text import encode_texts

    return score_embedding_vectors(encode_texts(texts, device=device, progress=progress), tags, device)


# ----------------------------------------------------------------------------- LLM scoring
def clean_item_text(text: str) -> str:
    """An item's text as it goes into a prompt: one line, no markers, at most MAX_ITEM_CHARS."""
    text = text.replace("<", " ").replace(">", " ")
    return " ".join(text.split())[:MAX_ITEM_CHARS]


def match_schema(tags: list[str], n_items: int) -> dict:
    score = {"type": "integer", "minimum": 1, "maximum": 100}
    entry = lambda k: {  # noqa: E731
        "type": "object",
        "properties": {
            "id": {"const": k},
            "scores": {"type": "object", "properties": {t: score for t in tags}, "required": list(tags),
                       "additionalProperties": False},
        },
        "required": ["id", "scores"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "prefixItems": [entry(k + 1) for k in range(n_items)],
                                 "minItems": n_items, "maxItems": n_items, "items": False}},
        "required": ["items"],
        "additionalProperties": False,
    }


REMINDER = ("Reminder: your previous reply numbered the items wrongly. Give exactly {n} entries, one per item, "
            "with the ids 1 to {last} exactly as in the <item id> markers above.")
ID_PROBLEMS = ("missing_ids", "extra_ids", "duplicate_ids", "shifted_ids")
DROP_REASONS = ("unknown_tag", "out_of_range", "not_a_number", "missing_item")


@dataclass
class ReplyStats:
    """What replies got wrong, counted by reason (the report's ``dropped_scores`` and ``rejected_replies``)."""

    dropped: dict = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})
    rejected: dict = field(default_factory=lambda: {r: 0 for r in ID_PROBLEMS + ("unreadable",)})
    rescaled_replies: int = 0
    mapped_keys: int = 0  # reply keys matched to a tag through the canonical form, not spelled exactly
    examples: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(what[:200])

    # the counters of earlier reports, kept under their names
    @property
    def unknown_tags(self) -> int:
        return self.dropped["unknown_tag"]

    @property
    def out_of_range(self) -> int:
        return self.dropped["out_of_range"] + self.dropped["not_a_number"]

    @property
    def unknown_ids(self) -> int:
        return self.rejected["extra_ids"] + self.rejected["shifted_ids"]


def _reply_entries(data) -> list[tuple[object, object]] | None:
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if isinstance(data, list):
        return [(e.get("id"), e.get("scores", e.get("tags"))) for e in data if isinstance(e, dict)]
    if isinstance(data, dict):  # {"1": {...}, "2": {...}}
        return list(data.items())
    return None


def _as_id(raw) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*\d+\s*", raw):
        return int(raw)
    return None


def check_reply_ids(ids: list[int | None], n_items: int) -> str | None:
    """None when ``ids`` are exactly 1..n_items, each once (in any order); else the problem.

    ``shifted_ids``: the ids are another run of n consecutive numbers (0..n-1 numbering, or off by k);
    taking them would move every score onto a neighbouring item, so the whole reply is refused."""
    want = set(range(1, n_items + 1))
    valid = [i for i in ids if i is not None]
    if len(valid) != len(set(valid)):
        return "duplicate_ids"
    got = set(valid)
    if got == want and len(valid) == len(ids):
        return None
    if len(valid) == len(ids) == n_items and got and max(got) - min(got) == n_items - 1:
        return "shifted_ids"
    if got - want or len(valid) != len(ids):
        return "extra_ids"
    return "missing_ids"


def parse_match_reply(text: str, n_items: int, tags: list[str], stats: ReplyStats | None = None,
                      problem: list | None = None) -> dict[int, dict[int, float]]:
    """{batch position (0-based): {tag position: score}} from a reply.

    The item ids must be exactly 1..n_items (see :func:`check_reply_ids`): otherwise the whole reply is
    refused ({} is returned, the reason counted in ``stats.rejected`` and appended to ``problem``).
    Reply keys are mapped to the tags through the canonical form (``pencil`` scores ``pencils``, ``and``
    is ``&``, case and separators don't matter). A reply whose every score lies in [0, 1] (not all 1)
    is on a 0-1 scale and is rescaled to 1 + 99·s (counted). Every score still dropped is counted by
    reason: unknown_tag, out_of_range, not_a_number.
    """
    from temacli.tags.canon import canonical
    from temacli.tags.parse import extract_json

    stats = stats if stats is not None else ReplyStats()
    problem = problem if problem is not None else []
    entries = _reply_entries(extract_json(text))
    if not entries:
        stats.rejected["unreadable"] += 1
        stats.note(f"unreadable reply (starts: {' '.join(str(text)[:60].split())!r})")
        problem.append("unreadable")
        return {}
    ids = [_as_id(raw) for raw, _ in entries]
    why = check_reply_ids(ids, n_items)
    if why is not None:
        stats.rejected[why] += 1
        stats.note(f"{why}: reply ids {[raw for raw, _ in entries][:12]!r}, expected 1..{n_items}")
        problem.append(why)
        return {}
    exact = {t: j for j, t in enumerate(tags)}
    lookup: dict[str, int] = {}
    for j, t in enumerate(tags):
        k = canonical(t)
        if k is not None:
            lookup.setdefault(k, j)
    parsed: list[tuple[int, list[tuple[int, object]]]] = []
    for raw_id, scores in entries:
        pos = _as_id(raw_id) - 1
        if isinstance(scores, list):  # [{"tag": .., "score": ..}]
            scores = {str(s.get("tag")): s.get("score") for s in scores if isinstance(s, dict)}
        if not isinstance(scores, dict):
            continue
        pairs = []
        for key, value in scores.items():
            j = exact.get(key)
            if j is None:
                j = lookup.get(canonical(key) or "")
                if j is not None:
                    stats.mapped_keys += 1
            if j is None:
                stats.dropped["unknown_tag"] += 1
                stats.note(f"unknown tag {str(key)[:60]!r}")
                continue
            pairs.append((j, value))
        parsed.append((pos, pairs))
    numbers = [v for _, pairs in parsed for _, v in pairs
               if not isinstance(v, bool) and isinstance(_num(v), float)]
    vals = [_num(v) for v in numbers]
    scale01 = bool(vals) and all(0.0 <= v <= 1.0 for v in vals) and any(v < 1.0 for v in vals)
    if scale01:
        stats.rescaled_replies += 1
    out: dict[int, dict[int, float]] = {}
    for pos, pairs in parsed:
        got = out.setdefault(pos, {})
        for j, value in pairs:
            v = _num(value) if not isinstance(value, bool) else None
            if v is None:
                stats.dropped["not_a_number"] += 1
                stats.note(f"score {str(value)[:20]!r} for tag {tags[j]!r} is not a number")
                continue
            if scale01:
                v = 1.0 + 99.0 * v
            if not 1.0 <= v <= 100.0:
                stats.dropped["out_of_range"] += 1
                stats.note(f"score {str(value)[:20]!r} for tag {tags[j]!r} is outside 1-100")
                continue
            got.setdefault(j, v)
        if not got:
            del out[pos]
    return out


def _num(value) -> float | None:
    import math

    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def score_llm(
    texts: list[str],
    items: np.ndarray,
    domain_of: list[str],
    tag_lists: dict[str, list[str]],
    settings,
    batch_items: int,
    shard: tuple[int, int],
    progress,
    template: str,
    system: str,
) -> tuple[dict[int, np.ndarray], dict]:
    """Scores per item (array over its domain's list, NaN = unscored) for the shard's items, and a report."""
    from temacli.llm import prompts
    from temacli.llm.client import LLMClient, Request, messages

    # batches are formed over all items (per domain, in item order) before sharding, so a shard's
    # requests are the same requests as in an unsharded run: caches can be shared or merged
    batches: list[tuple[str, list[int]]] = []
    for d in tag_lists:
        rows = [int(i) for i in items if domain_of[i] == d and texts[i]]
        for s in range(0, len(rows), batch_items):
            batches.append((d, rows[s : s + batch_items]))
    si, sn = shard
    batches = [b for k, b in enumerate(batches) if k % sn == si]
    stats = ReplyStats()

    def request(d: str, rows: list[int], key) -> Request:
        tl = tag_lists[d]
        body = prompts.render(
            template, "match prompt",
            tags="\n".join(f"- {t}" for t in tl),
            items="\n".join(f'<item id="{k + 1}">{clean_item_text(texts[i])}</item>' for k, i in enumerate(rows)),
            domain=d,
        )
        if key[2] == "reminder":
            body += "\n" + REMINDER.format(n=len(rows), last=len(rows))
        return Request(
            key, messages(system, body), schema=match_schema(tl, len(rows)), schema_name="item_tag_scores",
            validate=lambda text, n=len(rows), tl=tl: bool(parse_match_reply(text, n, tl)),
        )

    result: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    client = LLMClient(settings)
    total = sum(len(r) for _, r in batches)
    bar = progress
    try:
        bar.start(total, "tags match (llm)")
        queue: list[tuple[str, list[int], str]] = []

        def on_result(res):
            d, rows, mode = res.id
            tl = tag_lists[d]
            problem: list[str] = []
            got = parse_match_reply(res.text, len(rows), tl, stats, problem) if res.text is not None else {}
            why = problem[0] if problem else None
            if why in ID_PROBLEMS and mode != "reminder":
                queue.append((d, rows, "reminder"))  # asked once more, with a reminder of the ids
                return
            if why == "unreadable" and mode == "batch" and len(rows) > 1:
                queue.extend((d, [i], "single") for i in rows)  # e.g. a batch reply cut off: item by item
                return
            done = 0
            for k, i in enumerate(rows):
                if k in got:
                    arr = np.full(len(tl), np.nan, dtype=np.float32)
                    for j, v in got[k].items():
                        arr[j] = v
                    result[i] = arr
                    failed.pop(i, None)
                    done += 1
                elif mode == "batch" and len(rows) > 1 and why is None:
                    queue.append((d, [i], "single"))
                else:
                    if res.text is None:
                        failed[i] = res.error or "the request failed"
                    elif why in ID_PROBLEMS:
                        failed[i] = f"the reply's item ids were wrong twice ({why}); its scores were not used"
                    elif why == "unreadable":
                        failed[i] = "the reply could not be read as JSON"
                    else:
                        failed[i] = "the reply gave no valid score for this item"
                    stats.dropped["missing_item"] += len(tl)
                    done += 1
            bar.advance(done, cached=done if res.cached else 0,
                        failed=sum(1 for i in rows if i in failed))

        todo = [(d, rows, "batch") for d, rows in batches]
        while todo:
            client.run((request(d, rows, (d, rows, mode)) for d, rows, mode in todo), on_result)
            todo = list(queue)
            queue.clear()
    finally:
        bar.finish()
        client.close()
    s = client.stats
    report = {
        "requests": s.requests, "cache_hits": s.cached, "llm_calls": s.called, "retries": s.retries,
        "retry_reasons": s.retry_reasons, "invalid_replies": s.invalid, "failed_requests": s.failed,
        "dropped_scores": dict(stats.dropped), "rejected_replies": dict(stats.rejected),
        "rescaled_replies": stats.rescaled_replies, "keys_mapped_by_canonical_form": stats.mapped_keys,
        "unknown_tags": stats.unknown_tags, "out_of_range_scores": stats.out_of_range,
        "unknown_item_ids": stats.unknown_ids, "reply_problems": stats.examples,
        "failed_items": {str(i): e for i, e in sorted(failed.items())},
        "seconds": round(s.seconds, 3),
    }
    return result, report


# ----------------------------------------------------------------------------- the stage
def items_record(items: Path) -> dict:
    """The items input of the manifest; a dataset's items.parquet must still match its dataset manifest."""
    fp = artifacts.fingerprint(items)
    ds_manifest = artifacts.manifest_path(items.parent)
    if items.name == "items.parquet" and ds_manifest.is_file():
        try:
            expected = json.loads(ds_manifest.read_text()).get("outputs", {}).get("items", {}).get("fingerprint")
        except ValueError:
            expected = None
        if expected is not None:
            artifacts.check_same("items table fingerprint", expected, fp, str(items),
                                 "the file was changed after `temacli data split`; rerun it")
    return artifacts.input_record(items, fp)


def default_item_tags_path(items: str | Path | None, out: str | Path | None) -> Path:
    """The item_tags.parquet that :func:`match_tags` and :func:`merge_shards` write for ``out``: ``out``
    itself when it ends in .parquet, else ``out``/item_tags.parquet; no ``out`` is DATASET/../tags/item_tags.parquet
    (DATASET: the folder of ``items``, an items.parquet or the dataset folder)."""
    if out is None:
        if items is None:
            raise TemacliError("no --out and no --items to place item_tags.parquet by; pass --out")
        items = Path(items)
        if items.is_dir():
            items = items / "items.parquet"
        out = items.parent.parent / "tags" / "item_tags.parquet"
    out = Path(out)
    return out if out.suffix == ".parquet" else out / "item_tags.parquet"


def match_tags(
    items: str | Path,
    tags: list[str | Path],
    out: str | Path | None = None,
    method: str = "embedding",
    selection: Selection | None = None,
    settings=None,
    batch_items: int = 8,
    shard: str | None = None,
    device: str = "cpu",
    prompt_file: str | Path | None = None,
    progress=None,
    features: str | Path | None = None,
    max_failed_share: float | None = None,
) -> dict:
    """Score, select and weight; write item_tags.parquet + tag_vocab.parquet + manifest + report.

    ``features``: a ``features text`` folder whose text.npy the embedding method reuses (see
    :mod:`temacli.tags.embed`). ``max_failed_share``: with the llm method, exit 2 (the report written,
    no item tags) when more than this share of the items failed; None: only when every item failed.
    """
    from temacli.data.dataset import ITEMS, item_texts
    from temacli.tags.flags import in_range

    if method not in METHODS:
        raise TemacliError(f"--method '{method}' is unknown; choose {', '.join(METHODS)}")
    in_range("--batch-items", batch_items, 1, MAX_BATCH_ITEMS)
    if max_failed_share is not None:
        in_range("--max-failed-share", max_failed_share, 0.0, 1.0)
    if features is not None and method != "embedding":
        raise TemacliError(f"--features is used by --method embedding only (got --method {method}); leave it out")
    sel = selection or Selection()
    si, sn = parse_shard(shard)
    items = Path(items)
    if items.is_dir():
        items = items / "items.parquet"
    out = default_item_tags_path(items, out)
    artifacts.check_output(out, "file", "--out")
    if not items.is_file():
        raise TemacliError(f"--items {items}: not found; pass the items.parquet of a `temacli data split` folder")
    table = artifacts.read_table(items, ITEMS)
    in_items = {"items": items_record(items)}
    item_idx = table.column("item").to_numpy().astype(np.int64)
    n = len(item_idx)
    if n and not np.array_equal(np.sort(item_idx), np.arange(n)):
        raise TemacliError(f"{items}: item indices are not 0..{n - 1}; run `temacli data split` to rebuild it")
    domain_of_row = table.column("domain").to_pylist()
    domain_idx = table.column("domain_idx").to_numpy()
    domains = sorted(set(domain_of_row), key=lambda d: (int(domain_idx[domain_of_row.index(d)]), d))
    texts_row = item_texts(table)
    # arrays indexed by item index
    texts = [""] * n
    domain_of = [""] * n
    for r, i in enumerate(item_idx):
        texts[i] = texts_row[r]
        domain_of[i] = domain_of_row[r]
    lists, in_tags = load_tag_lists(tags, domains)
    lists = {d: lists[d] for d in domains}  # domain order decides batches and vocabulary indices
    lists, folds = fold_lists(lists)
    vocab, per_domain = build_vocab(lists, domains)

    from temacli.progress import SILENT

    bar = progress if progress is not None else SILENT
    all_items = np.arange(n)
    shard_items = all_items if sn == 1 else None
    scored: dict[int, np.ndarray] = {}
    report: dict = {"folded_tags": folds} if folds else {}
    params: dict = {"method": method, **sel.params(), "shard": f"{si}/{sn}"}
    if method == "llm":
        from temacli.llm import prompts
        from temacli.llm.client import LLMSettings

        settings = settings or LLMSettings()
        template = prompts.load("match", prompt_file)
        system = prompts.load("system")
        scored, report = score_llm(texts, all_items, domain_of, lists, settings, batch_items, (si, sn),
                                   bar, template, system)
        params.update(batch_items=batch_items, llm=settings.public(),
                      prompt_sha256=hashlib.sha256(template.encode()).hexdigest(),
                      system_prompt_sha256=hashlib.sha256(system.encode()).hexdigest(),
                      prompt_file=str(prompt_file) if prompt_file is not None else None)
        shard_items = _llm_shard_items(texts, domain_of, lists, batch_items, si, sn)
    else:
        if sn > 1:
            shard_items = all_items[all_items % sn == si]
        item_vec = None
        if method == "embedding":
            from temacli.tags.embed import item_text_vectors

            bar.start(n, "tags match (embedding: item texts)")
            try:
                item_vec, enc = item_text_vectors(items, texts, features, device, progress=lambda k: bar.advance(k))
            finally:
                bar.finish()
            params["encoder"] = "all-MiniLM-L6-v2"
            params["cos_range"] = [COS_LO, COS_HI]
            report["item_vectors"] = {k: v for k, v in enc.items() if k != "features_fingerprint"}
            if enc.get("features"):
                in_items["features_text"] = {"path": enc["features"], "fingerprint": enc["features_fingerprint"]}
        for d in domains:
            rows = [int(i) for i in shard_items if domain_of[i] == d and texts[i]]
            if not rows:
                continue
            if method == "keyword":
                mat = score_keyword([texts[i] for i in rows], lists[d])
            else:
                mat = score_embedding_vectors(item_vec[np.asarray(rows)], lists[d], device=device)
            for r, i in enumerate(rows):
                scored[i] = mat[r]
    # selection and weights, per domain (each domain has its own list)
    rows_i, rows_t, rows_s, rows_w = [], [], [], []
    for d in domains:
        ids = np.asarray(sorted(i for i in scored if domain_of[i] == d), dtype=np.int64)
        if not len(ids):
            continue
        mat = np.stack([scored[i] for i in ids])
        r, c, w = select_and_weight(mat, sel, tie=per_domain[d])
        rows_i.append(ids[r])
        rows_t.append(per_domain[d][c])
        rows_s.append(mat[r, c])
        rows_w.append(w)
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    it, tg, sc, wt = cat(rows_i, np.int32), cat(rows_t, np.int32), cat(rows_s, np.float32), cat(rows_w, np.float32)
    order = np.lexsort((tg, -wt, it))
    it, tg, sc, wt = it[order], tg[order], sc[order], wt[order]
    no_text = [int(i) for i in shard_items if not texts[i]]
    failed = report.get("failed_items", {})
    untagged = sorted(set(int(i) for i in shard_items) - set(it.tolist()) - set(no_text)
                      - {int(k) for k in failed})
    report.update({
        "items": int(len(shard_items)), "scored_items": len(scored), "tagged_items": int(len(np.unique(it))),
        "no_text_items": len(no_text), "no_text_item_indices": no_text[:1000],
        "failed_item_count": len(failed),
        "untagged_items": len(untagged), "untagged_item_indices": untagged[:1000],
    })
    report["dropped_score_reasons"] = list(DROP_REASONS)
    report_path = out.with_name(out.stem + ".report.json")
    if method == "llm":
        scorable = sum(1 for i in shard_items if texts[i])
        n_failed = len(failed)
        limit = max_failed_share
        too_many = (n_failed > limit * scorable) if limit is not None else (scorable > 0 and n_failed >= scorable)
        if too_many:
            artifacts.write_json(report, report_path)
            first = next(iter(failed.values()), "")
            raise TemacliError(
                f"tags match: {n_failed} of {scorable} items failed"
                + (f" (more than --max-failed-share {limit})" if limit is not None else " (all of them)")
                + f"; first problem: {first[:200]}; nothing written but the report {report_path}; "
                "check --llm and --api-base, then rerun (finished replies are cached)")
    # write: vocabulary, item tags, report, manifest
    vocab_path = out.parent / "tag_vocab.parquet"
    vt = pa.table({"tag_index": pa.array(np.arange(len(vocab)), pa.int32()),
                   "tag": pa.array([t for t, _ in vocab], pa.string()),
                   "domain": pa.array([d for _, d in vocab], pa.string())})
    artifacts.write_table(vt, vocab_path, TAG_VOCAB)
    artifacts.write_manifest(vocab_path, artifacts.build_manifest(
        "tags vocab", {}, inputs=in_tags, outputs={"tag_vocab": {"fingerprint": artifacts.fingerprint(vocab_path)}},
        counts={"tags": len(vocab), **{f"tags_{d}": len(lists[d]) for d in domains}}))
    t = pa.table({"item": pa.array(it, pa.int32()), "tag_index": pa.array(tg, pa.int32()),
                  "score": pa.array(sc, pa.float32()), "weight": pa.array(wt, pa.float32())})
    artifacts.write_table(t, out, ITEM_TAGS)
    artifacts.write_json(report, report_path)
    manifest = artifacts.build_manifest(
        STAGE, params, inputs={**in_items, **in_tags},
        outputs={"item_tags": {"path": out.name, "fingerprint": artifacts.fingerprint(out)},
                 "tag_vocab": {"path": vocab_path.name, "fingerprint": artifacts.fingerprint(vocab_path)},
                 "report": {"path": report_path.name}},
        counts={"items": int(len(shard_items)), "tagged_items": report["tagged_items"], "rows": int(len(it)),
                "tags": len(vocab), "no_text_items": len(no_text), "failed_items": len(failed),
                "untagged_items": len(untagged),
                "mean_tags_per_tagged_item": round(float(len(it) / max(report["tagged_items"], 1)), 3),
                **({k: report[k] for k in ("cache_hits", "llm_calls", "retries") if k in report})},
    )
    artifacts.write_manifest(out, manifest)
    manifest["path"] = str(out)
    manifest["report_path"] = str(report_path)
    return manifest


def _batched_items(texts, domain_of, lists, batch_items):
    for d in lists:
        rows = [i for i in range(len(texts)) if domain_of[i] == d and texts[i]]
        for s in range(0, len(rows), batch_items):
            yield rows[s : s + batch_items]


def _llm_shard_items(texts, domain_of, lists, batch_items, si, sn) -> np.ndarray:
    """The items of shard si/sn under the LLM method (whole batches; items without text by index)."""
    keep: list[int] = []
    for b, rows in enumerate(_batched_items(texts, domain_of, lists, batch_items)):
        if b % sn == si:
            keep.extend(rows)
    no_text = [i for i in range(len(texts)) if not texts[i] and i % sn == si]
    return np.asarray(sorted(keep + no_text), dtype=np.int64)


def merge_shards(parts: list[str | Path], out: str | Path) -> dict:
    """Join the outputs of ``tags match --shard i/n`` (i = 0..n-1) into one item_tags.parquet.

    Selection is per item, so the shards' rows are final; merging checks that the parts come from one
    run (same items, tag lists, vocabulary and parameters except the shard) and cover every shard once.
    """
    from temacli.tags.store import load_item_tags

    if not parts:
        raise TemacliError("tags merge: no shard files given")
    out = default_item_tags_path(None, out)
    manifests, tables = [], []
    for p in parts:
        p = Path(p)
        if p.is_dir():
            p = p / "item_tags.parquet"
        load_item_tags(p, allow_empty=True)  # validates the table, the vocabulary and their fingerprints
        m = artifacts.read_manifest(p, stage=STAGE, fix=ITEM_TAGS.fix)
        manifests.append((p, m))
        tables.append(artifacts.read_table(p, ITEM_TAGS))
    first_p, first = manifests[0]
    ref = {k: v for k, v in first["params"].items() if k != "shard"}
    n_shards = int(str(first["params"].get("shard", "0/1")).split("/")[1])
    seen: dict[int, Path] = {}
    for p, m in manifests:
        params = {k: v for k, v in m["params"].items() if k != "shard"}
        if params != ref:
            diff = sorted(k for k in set(params) | set(ref) if params.get(k) != ref.get(k))
            raise TemacliError(f"{p}: made with other parameters than {first_p} ({', '.join(diff)}); rerun the shard")
        for key in ("items",):
            artifacts.check_same("items fingerprint", first["inputs"][key]["fingerprint"],
                                 m["inputs"][key]["fingerprint"], str(p), "all shards must tag the same items.parquet")
        artifacts.check_same("tag vocabulary fingerprint", first["outputs"]["tag_vocab"]["fingerprint"],
                             m["outputs"]["tag_vocab"]["fingerprint"], str(p), "all shards must use the same tag lists")
        i, n = (int(x) for x in str(m["params"]["shard"]).split("/"))
        if n != n_shards:
            raise TemacliError(f"{p}: shard {i}/{n}, but {first_p} is one of {n_shards}; merge shards of one run")
        if i in seen:
            raise TemacliError(f"{p}: shard {i}/{n} given twice (also {seen[i]})")
        seen[i] = p
    missing = sorted(set(range(n_shards)) - set(seen))
    if missing:
        raise TemacliError(f"tags merge: shard(s) {', '.join(f'{i}/{n_shards}' for i in missing)} missing; "
                           "run `temacli tags match --shard i/n` for them")
    t = pa.concat_tables(tables)
    it = t.column("item").to_numpy()
    owners = [set(tb.column("item").to_numpy().tolist()) for tb in tables]
    if sum(len(o) for o in owners) != len(set().union(*owners)):
        raise TemacliError("tags merge: an item has rows in two shards; the parts are not shards of one run")
    order = np.lexsort((t.column("tag_index").to_numpy(), -t.column("weight").to_numpy(), it))
    t = t.take(pa.array(order))
    vocab_src = first_p.parent / "tag_vocab.parquet"
    vocab_path = out.parent / "tag_vocab.parquet"
    if vocab_src.resolve() != vocab_path.resolve():
        artifacts.write_table(artifacts.read_table(vocab_src, TAG_VOCAB), vocab_path, TAG_VOCAB)
    artifacts.write_table(t, out, ITEM_TAGS)
    counts: dict = {}
    for _, m in manifests:
        for k, v in m.get("counts", {}).items():
            if isinstance(v, (int, float)) and k not in ("tags", "mean_tags_per_tagged_item"):
                counts[k] = counts.get(k, 0) + v
    counts["tags"] = first["counts"].get("tags")
    counts["rows"] = t.num_rows
    params = dict(ref, shard="merged", shards=n_shards)
    inputs = {k: v for k, v in first["inputs"].items()}
    for i in sorted(seen):
        inputs[f"shard_{i}"] = artifacts.input_record(seen[i])
    manifest = artifacts.build_manifest(
        STAGE, params, inputs=inputs,
        outputs={"item_tags": {"path": out.name, "fingerprint": artifacts.fingerprint(out)},
                 "tag_vocab": {"path": vocab_path.name, "fingerprint": artifacts.fingerprint(vocab_path)}},
        counts=counts,
    )
    artifacts.write_manifest(out, manifest)
    manifest["path"] = str(out)
    return manifest
