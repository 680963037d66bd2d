"""Recipes: a command's options in a TOML file.

A recipe is one flat TOML table whose keys are a command's option names without the leading dashes
(``batch-size`` and ``batch_size`` are the same key) and whose values have the option's type::

    # examples/recipes/cpu.toml
    softmax = "sampled"
    dim = 128
    max_len = 20

This module knows nothing of click or typer: the CLI describes the command's options as a list of
:class:`Param` (name, accepted keys, value kind, choices), :func:`load` reads and checks a file against
it, and :func:`dump` writes resolved values back as TOML (a small writer for flat scalar and list values;
the standard library reads TOML but does not write it). Every error is one line naming the file and
the key, raised as :class:`~temacli.errors.TemacliError`.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from temacli.errors import TemacliError

KINDS = ("int", "float", "bool", "str", "path", "list")

_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "path": "a path (a string)",
    "list": "a list",
}


@dataclass(frozen=True)
class Param:
    """One option of a command, as a recipe sees it.

    ``name`` is the command's parameter name (what the function receives), ``key`` the key a saved
    recipe uses (the long option name with underscores), ``aliases`` further accepted keys.
    ``kind`` is one of :data:`KINDS`; ``item`` the kind of a list's items; ``choices`` the allowed
    string values, if any.
    """

    name: str
    key: str
    kind: str = "str"
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    item: str = "str"
    option: str = ""  # how the command line spells it, for messages (e.g. --batch-size)
    deprecated: tuple[str, ...] = ()  # old keys still accepted for this release (with a note)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown recipe kind {self.kind!r} for {self.name}")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalise_key(k) for k in (self.key, self.name, *self.aliases, *self.deprecated)))


def normalise_key(key: str) -> str:
    """``batch-size``, ``--batch-size`` and ``batch_size`` are one key: ``batch_size``."""
    return key.strip().lstrip("-").replace("-", "_")


@dataclass
class Schema:
    """The options of one command, indexed by every key a recipe may use for them."""

    command: str
    params: Sequence[Param]
    _by_key: dict[str, Param] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for p in self.params:
            for k in p.keys:
                self._by_key.setdefault(k, p)

    def find(self, key: str) -> Param | None:
        return self._by_key.get(normalise_key(key))

    def suggest(self, key: str) -> str:
        close = difflib.get_close_matches(normalise_key(key), list(self._by_key), n=1, cutoff=0.6)
        return f"; did you mean '{self._by_key[close[0]].key}'?" if close else ""


# ----------------------------------------------------------------------------- reading
def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The TOML file's top-level table, or one line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise TemacliError(f"{path}: recipe file not found; give a TOML file such as examples/recipes/cpu.toml")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TemacliError(f"{path}: not valid TOML ({e}); fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TemacliError(f"{path}: cannot read the recipe ({e})") from None


def load(path: str | os.PathLike, schema: Schema,
         on_deprecated: Callable[[str, Param], None] | None = None) -> dict[str, Any]:
    """Read a recipe and check it against ``schema``: ``{parameter name: value}``.

    Refuses unknown keys, a key given twice (``batch-size`` and ``batch_size``), tables, and values of
    the wrong type or outside the choices. Integers are accepted for float options; paths are strings,
    relative to the current directory as on the command line. A deprecated key (``Param.deprecated``)
    is read as its option; ``on_deprecated(key, param)`` is called for it (the CLI prints one note).
    """
    return check(read_toml(path), schema, where=str(path), on_deprecated=on_deprecated)


def check(raw: Mapping[str, Any], schema: Schema, where: str = "<recipe>",
          on_deprecated: Callable[[str, Param], None] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in raw.items():
        p = schema.find(key)
        if p is None:
            if isinstance(value, dict):
                raise TemacliError(
                    f"{where}: [{key}] is a table; a recipe is one flat list of option = value lines for {schema.command}"
                )
            raise TemacliError(
                f"{where}: unknown key '{key}' ({schema.command} has no option --{normalise_key(key).replace('_', '-')})"
                f"{schema.suggest(key)}"
            )
        if p.name in seen:
            raise TemacliError(f"{where}: '{key}' and '{seen[p.name]}' are the same option; keep one")
        seen[p.name] = key
        if on_deprecated is not None and normalise_key(key) in {normalise_key(k) for k in p.deprecated}:
            on_deprecated(key, p)
        values[p.name] = _coerce(p, key, value, where)
    return values


def _coerce(p: Param, key: str, value: Any, where: str) -> Any:
    def wrong(kind: str, v: Any = value) -> TemacliError:
        return TemacliError(
            f"{where}: key '{key}' must be {_KIND_WORDS[kind]}, not {_describe(v)}"
            + (f" (e.g. {key} = {_example(p)})" if kind != "list" else "")
        )

    if p.kind == "list":
        if not isinstance(value, list):
            raise wrong("list")
        return [_scalar(p, key, v, where, p.item, lambda v, k=p.item: wrong(k, v)) for v in value]
    return _scalar(p, key, value, where, p.kind, lambda v, k=p.kind: wrong(k, v))


def _scalar(p: Param, key: str, value: Any, where: str, kind: str, wrong) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong(value)
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong(value)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong(value)
        return float(value)
    if not isinstance(value, str):  # str, path
        raise wrong(value)
    if p.choices is not None and value not in p.choices:
        lowered = {c.lower(): c for c in p.choices}
        if value.lower() in lowered:
            return lowered[value.lower()]
        raise TemacliError(f"{where}: key '{key}' must be one of {', '.join(p.choices)}, not '{value}'")
    return value


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return f"a boolean ({'true' if v else 'false'})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a number ({v})"
    if isinstance(v, str):
        return f"a string ({v!r})"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def _example(p: Param) -> str:
    if p.choices:
        return toml_value(p.choices[0])
    return {"int": "10", "float": "0.5", "bool": "true", "str": '"text"', "path": '"runs/x"'}.get(p.kind, '"..."')


# ----------------------------------------------------------------------------- writing
def plain(value: Any) -> Any:
    """A resolved option value as TOML can hold it: paths absolute strings, enums their value, tuples lists."""
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, os.PathLike):
        return str(Path(value).expanduser().absolute())
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return _toml_string(key)


def toml_value(value: Any) -> str:
    """One TOML value: booleans, integers, floats (nan/inf too), strings and flat lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"a recipe holds booleans, numbers, strings and lists, not {type(value).__name__}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(s: str) -> str:
    out = []
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def to_toml(values: Mapping[str, Any] | Iterable[tuple[str, Any]], header: str = "") -> str:
    """A flat TOML document: the header lines as comments, then one ``key = value`` line per entry."""
    items = values.items() if isinstance(values, Mapping) else values
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    for key, value in items:
        if value is None:  # TOML has no null: an option left unset is simply absent
            continue
        lines.append(f"{toml_key(key)} = {toml_value(plain(value))}")
    return "\n".join(lines) + "\n"


def dump(values: Mapping[str, Any] | Iterable[tuple[str, Any]], path: str | os.PathLike, header: str = "") -> Path:
    """Write a recipe atomically (a temporary file beside ``path``, then a rename)."""
    from temacli.artifacts import atomic_path

    text = to_toml(values, header)
    tomllib.loads(text)  # what we write, we can read back
    with atomic_path(path, suffix=".toml") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def saved_values(values: Mapping[str, Any], schema: Schema, leave_out: Iterable[str] = ()) -> list[tuple[str, Any]]:
    """``(recipe key, plain value)`` for every option in ``values`` that a saved recipe keeps, in the
    command's order; ``leave_out`` names parameters that describe one invocation, not the recipe."""
    skip = set(leave_out)
    out = []
    for p in schema.params:
        if p.name in skip or p.name not in values or values[p.name] is None:
            continue
        out.append((p.key, plain(values[p.name])))
    return out
