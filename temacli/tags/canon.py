"""One canonical form of a tag, used by the vote, the vocabulary, the match parser and the keyword matcher.

Two texts name the same tag when their *canonical keys* are equal. The key is computed from the
surface form (:func:`temacli.tags.parse.normalise_tag`: NFKC, lowercase, ``-``/``_``/``/`` and runs of
spaces to one space, edge punctuation off) word by word:

* ``&`` is the word ``and`` (``arts & crafts`` = ``arts and crafts``);
* a possessive ``'s`` goes (``men's`` = ``men``) and apostrophes inside a word go (``dunkin'`` = ``dunkin``);
* singular and plural fold, by a small rule-based English stemmer that maps both forms to one key
  (the key need not be a word; people only ever see surface forms): a few irregular plurals
  (``knives`` -> ``knife``, ``children`` -> ``child``, ...), then ``-ies`` -> ``-i``, a final ``-s`` off
  (not after ``s``, ``u`` or ``i``: ``glass``, ``hummus``, ``analysis`` stay), a final ``-e`` off and a
  final ``-y`` -> ``-i``. So ``berries``/``berry`` -> ``berri``, ``movies``/``movie`` -> ``movi``,
  ``boxes``/``box`` -> ``box``, ``tomatoes``/``tomato`` -> ``tomato``, ``pencils``/``pencil`` -> ``pencil``.
  Words of three letters or fewer keep their ``s`` (``gas``, ``bus``), numbers are left alone.

The tag people see (``display``) is the most frequent surface form among the texts with one key
(ties: the one seen first).
"""

from __future__ import annotations

import re
import unicodedata

_IRREGULAR = {
    "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf", "loaves": "loaf",
    "halves": "half", "shelves": "shelf", "wolves": "wolf", "thieves": "thief", "children": "child",
    "men": "man", "women": "woman", "feet": "foot", "teeth": "tooth", "mice": "mouse", "geese": "goose",
    "people": "person", "dice": "die", "oxen": "ox",
}
_INVARIANT = {"news", "series", "species", "christmas", "always", "less", "was", "has", "this", "its"}
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def canon_word(w: str) -> str:
    """The canonical key of one lowercase word (see the module docstring)."""
    w = w.replace("\u2019", "'")
    if w == "&":
        return "and"
    if w.endswith("'s"):
        w = w[:-2]
    w = w.replace("'", "")
    if not w or not w.isalpha() or w in _INVARIANT:
        return w
    w = _IRREGULAR.get(w, w)
    if len(w) > 3:
        if w.endswith("ies"):
            w = w[:-3] + "i"
        elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
    if len(w) >= 3:
        if w.endswith("e"):
            w = w[:-1]
        elif w.endswith("y"):
            w = w[:-1] + "i"
    return w


def surface(text) -> str | None:
    """The normalised surface form of a tag (what is stored and shown); None when nothing is left."""
    from temacli.tags.parse import normalise_tag

    return normalise_tag(text)


def words_of(surface_form: str) -> list[str]:
    """The surface words of a normalised tag, ``&`` split off as its own word."""
    return surface_form.replace("&", " & ").split()


def canonical(text) -> str | None:
    """The canonical key of a tag text (raw or normalised); None when nothing is left."""
    s = surface(text)
    if s is None:
        return None
    key = " ".join(k for k in (canon_word(w) for w in words_of(s)) if k)
    return key or None


def text_keys(text: str) -> set[str]:
    """Canonical keys of the words of an item's text (for the keyword matcher)."""
    t = unicodedata.normalize("NFKC", text or "").lower().replace("\u2019", "'").replace("&", " and ")
    return {canon_word(w) for w in _WORD.findall(t)}


def choose_display(counts: dict[str, int], order: dict[str, int]) -> str:
    """The most frequent surface form; ties: the one seen first (smallest ``order``)."""
    return min(counts, key=lambda s: (-counts[s], order.get(s, 0), s))
