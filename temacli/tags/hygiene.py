"""Vocabulary hygiene for ``tags generate`` (issue 13): rules, canonical vote, near-duplicate merge,
grounding in the domain's items.

The stages, in order (``--literal`` skips all of them and votes surface forms as Algorithm 1 does):

1. **Rules** the prompt states, per candidate of every parsed run (a broken rule drops the candidate
   before the vote; the reason is recorded):
   ``too_long`` (more than MAX_TAG_CHARS characters), ``not_printable`` (a character that is not
   printable), ``too_short`` (fewer than 3 letters in all: ``zj``, ``'``), ``too_many_words``
   (more than ``--max-words``, default 3), ``repeated_word`` (a word twice in one tag, canonically:
   ``dritz dritz``), ``echo`` (every word is an instruction word of the prompt, a word of the aspect
   list, the domain's name or a function word: ``tags description``, ``product types``, ``movies`` for
   domain movie, ``who``; or exactly a tag of the prompt's fixed example list, when it shows one).
2. **Canonical vote**: a run's candidates with one canonical key count once; votes(key) = runs whose
   list has the key; the shown tag is the most frequent surface form.
3. **Near-duplicates**: keys that are equal once a final ``-ing`` is dropped from each word
   (``beads``/``beading``, ``paper craft``/``paper crafting``; only where 4 or more letters remain), or
   whose tags have offline-encoder (all-MiniLM-L6-v2) cosine >= ``--merge-cos`` (default MERGE_COS,
   0.85; ``--merge-cos 0`` turns the cosine test off) are merged (votes summed, scores and ranks averaged over the
   votes); each merge is listed in the report.
4. **Grounding** (only with ``--items``): a tag *describes* an item when all its content words are
   in the item's text (``--ground keyword``, canonical words, the keyword matcher of ``tags match``),
   or when its embedding score exceeds θ (``--ground embedding``); ``not_grounded``: fewer than
   ``--min-items`` items; ``too_common``: more than ``--max-share`` of the domain's titled items.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temacli.errors import TemacliError
from temacli.tags.canon import canon_word, canonical, choose_display, text_keys, words_of
from temacli.tags.parse import MAX_TAG_CHARS

REASONS = ("too_long", "not_printable", "too_short", "too_many_words", "repeated_word", "echo",
           "not_grounded", "too_common")
MERGE_COS = 0.85
STOP = {"and", "or", "of", "for", "the", "a", "an", "with", "in", "on", "to", "by",
        # function words: a tag made only of these names nothing (the local model wrote "who", "what", "you")
        "who", "whom", "whose", "what", "where", "when", "why", "how", "which", "you", "your", "we", "our", "us",
        "i", "me", "my", "he", "she", "it", "its", "they", "them", "their", "this", "that", "these", "those",
        "is", "are", "be", "all", "any", "some", "more", "most", "very", "also", "not", "no", "yes"}
_STOP_KEYS = {canon_word(w) for w in STOP}


def load_echo_words(prompt_file: str | Path | None) -> tuple[set[str], str]:
    """Canonical instruction words of the prompt: ``<prompt>.echo.txt`` beside a custom prompt file when
    it exists, else the built-in ``prompts/generate.echo.txt``. Returns (keys, where they came from)."""
    from importlib import resources

    text, where = None, "built-in generate.echo.txt"
    if prompt_file is not None:
        p = Path(prompt_file)
        own = p.with_name(p.stem + ".echo.txt")
        if own.is_file():
            try:
                text, where = own.read_text(encoding="utf-8"), str(own)
            except UnicodeDecodeError:
                raise TemacliError(f"{own}: not UTF-8 text; save the echo word list as UTF-8") from None
    if text is None:
        text = resources.files("temacli.llm.prompts").joinpath("generate.echo.txt").read_text(encoding="utf-8")
    keys = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        for w in line.split():
            keys.add(canon_word(w))
    return keys, where


def content_keys(key: str) -> list[str]:
    """The canonical words of a key that carry meaning (stop words out, unless nothing else is left)."""
    ks = key.split()
    return [k for k in ks if k not in _STOP_KEYS] or ks


def rule_violation(tag: str, echo: set[str], domain_keys: set[str], example_keys: set[str],
                   max_words: int) -> str | None:
    """The first rule ``tag`` (a normalised surface form) breaks, or None."""
    if len(tag) > MAX_TAG_CHARS:
        return "too_long"
    if not all(c.isprintable() for c in tag):
        return "not_printable"
    if sum(c.isalpha() for c in tag) < 3:
        return "too_short"
    words = words_of(tag)
    if len(words) > max_words:
        return "too_many_words"
    keys = [canon_word(w) for w in words]
    keys = [k for k in keys if k]
    if len(set(keys)) < len(keys):
        return "repeated_word"
    key = " ".join(keys)
    meaning = [k for k in keys if k not in _STOP_KEYS]
    if key in example_keys or all(k in echo or k in domain_keys for k in meaning):
        return "echo"
    return None


@dataclass
class Candidate:
    key: str
    votes: int = 0
    scores: list = field(default_factory=list)
    ranks: list = field(default_factory=list)
    surfaces: dict = field(default_factory=dict)  # surface form -> count
    first_seen: dict = field(default_factory=dict)  # surface form -> order of first sight
    members: list = field(default_factory=list)  # keys merged into this one (itself first)
    fixed: str | None = None  # the shown tag of a merged group (its best ranked member's)

    @property
    def display(self) -> str:
        return self.fixed or choose_display(self.surfaces, self.first_seen)

    def row(self) -> dict:
        return {"tag": self.display, "votes": self.votes,
                "mean_score": float(np.mean(self.scores)) if self.scores else 0.0,
                "mean_rank": float(np.mean(self.ranks)) if self.ranks else 0.0}


def candidates_from_runs(runs: list[list[tuple[str, float | None]]], echo: set[str], domain: str,
                         example_keys: set[str], max_words: int) -> tuple[dict[str, Candidate], list[dict]]:
    """Apply the rules and count canonical votes. Returns ({key: Candidate}, dropped [{run, tag, reason}])."""
    domain_keys = set(text_keys(domain))
    cands: dict[str, Candidate] = {}
    dropped: list[dict] = []
    order = 0
    for r, tags in enumerate(runs):
        seen: set[str] = set()
        pos = 0
        for tag, score in tags:
            why = rule_violation(tag, echo, domain_keys, example_keys, max_words)
            if why is not None:
                dropped.append({"run": r, "tag": tag, "reason": why})
                continue
            key = canonical(tag)
            if key in seen:
                continue
            seen.add(key)
            c = cands.get(key)
            if c is None:
                c = cands[key] = Candidate(key, members=[key])
            c.votes += 1
            c.ranks.append(pos)
            pos += 1
            if score is not None:
                c.scores.append(score)
            c.surfaces[tag] = c.surfaces.get(tag, 0) + 1
            if tag not in c.first_seen:
                c.first_seen[tag] = order
                order += 1
    return cands, dropped


def rank(cands: list[Candidate]) -> list[Candidate]:
    """Votes, then mean score, then mean position in the runs' lists, then text (Algorithm 1's order)."""
    def k(c):
        row = c.row()
        return (-row["votes"], -round(row["mean_score"], 6), row["mean_rank"], row["tag"])
    return sorted(cands, key=k)


def stem_key(key: str) -> str:
    """A canonical key with a final ``-ing`` dropped from each word where 4 or more letters remain."""
    out = []
    for w in key.split():
        if w.endswith("ing") and len(w) >= 7:
            w = canon_word(w[:-3])
        out.append(w)
    return " ".join(out)


def merge_near_duplicates(cands: dict[str, Candidate], cos_min: float, encode) -> tuple[dict[str, Candidate], list[dict]]:
    """Merge candidates with one :func:`stem_key`, or whose shown tags have cosine >= ``cos_min`` (0: no
    cosine test), greedily, strongest pairs first, each into the better ranked one. ``encode(list[str])
    -> (n, d)`` unit vectors (called only when ``cos_min`` > 0). Returns the merged dict and the merges."""
    if len(cands) < 2:
        return cands, []
    ordered = rank(list(cands.values()))
    texts = [c.display for c in ordered]
    n = len(ordered)
    iu = np.triu_indices(n, 1)
    pairs = []
    stems = [stem_key(c.key) for c in ordered]
    for i, j in zip(*iu):
        if stems[i] == stems[j]:
            pairs.append((1.0, int(i), int(j), "same stem"))
    if 0 < cos_min <= 1:
        vec = np.asarray(encode(texts), dtype=np.float32)
        sim = vec @ vec.T
        for i, j in zip(*iu):
            if sim[i, j] >= cos_min and stems[i] != stems[j]:
                pairs.append((float(sim[i, j]), int(i), int(j), "cosine"))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    merges = []
    for s, i, j, why in pairs:
        a, b = find(i), find(j)
        if a == b:
            continue
        keep, gone = (a, b) if a < b else (b, a)  # the better ranked one stays
        parent[gone] = keep
        merges.append({"kept": texts[keep], "merged": texts[gone], "by": why,
                       **({"cosine": round(s, 4)} if why == "cosine" else {})})
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    out: dict[str, Candidate] = {}
    for root, idx in groups.items():
        base = ordered[root]
        m = Candidate(base.key, members=[], fixed=base.display)  # the better ranked one's shown tag stays
        for i in sorted(idx):
            c = ordered[i]
            m.votes += c.votes
            m.scores += c.scores
            m.ranks += c.ranks
            m.members += c.members
            for s_, cnt in c.surfaces.items():
                m.surfaces[s_] = m.surfaces.get(s_, 0) + cnt
                m.first_seen.setdefault(s_, c.first_seen[s_])
        out[base.key] = m
    return out, merges


def keyword_describes(keys: list[str], item_keys: list[set[str]]) -> np.ndarray:
    """Bool (n_items,): every content word of one of ``keys`` is in the item's words."""
    hit = np.zeros(len(item_keys), dtype=bool)
    for key in keys:
        need = set(content_keys(key))
        if need:
            hit |= np.fromiter((need <= have for have in item_keys), dtype=bool, count=len(item_keys))
    return hit


def item_word_keys(texts: list[str]) -> list[set[str]]:
    return [text_keys(t) for t in texts]
