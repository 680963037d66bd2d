"""``--config RECIPE.toml`` for a typer command, added from outside the command's module.

:func:`add_config_option` marks a registered command so that, each time typer builds it, it gets

- an eager ``--config PATH`` option: the file is read with :func:`temacli.recipe.load`, checked against
  the command's own parameters, and put in ``ctx.default_map``, so every option given on the command
  line still wins over the recipe, and the recipe wins over the built-in defaults;
- a wrapped callback that saves the resolved options as ``OUT/config.toml`` (``temacli.recipe.dump``).
  It is saved when this invocation got past the command's checks and started the run, i.e. when
  ``OUT/<marker>`` was written by it (``train`` writes ``config.json`` once its checks pass): so a
  finished, time-limited or interrupted run has its recipe beside it, and a refused one (an existing
  model without ``--force``, a bad option) leaves the folder as it was. Paths are saved absolute;
  options that describe one invocation rather than the recipe (``--out``, ``--force``, ``--resume``,
  ``--quiet``, ``--json``) are left out, as are options that are unset. Only the main process of a
  ``torchrun`` job (``RANK`` 0) writes.

Nothing here imports more than typer; the library part is :mod:`temacli.recipe`, imported when used.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

CONFIG_HELP = (
    "Recipe file (TOML): any of this command's options as `name = value` (e.g. batch_size = 256); "
    "options given on the command line override it. See examples/recipes/."
)
_META = "temacli.recipe"


def _click():
    """The click that typer uses: typer >= 0.25 vendors it as ``typer._click``."""
    try:
        from typer import _click as click  # type: ignore[attr-defined]
    except ImportError:  # older typer with the click package
        import click
    return click


# ----------------------------------------------------------------------------- the schema
def _kind(param: Any) -> tuple[str, tuple[str, ...] | None, str]:
    """(kind, choices, item kind) of a click/typer parameter."""
    from typing import get_args, get_origin

    desc = getattr(param, "type_descriptor", None)
    if desc is not None:  # typer >= 0.25: the annotation itself
        ann = desc.annotation
        choices = tuple(_choice_str(c) for c in desc.choices) if desc.choices else None
        if get_origin(ann) in (list, tuple):
            args = get_args(ann)
            return "list", choices, _py_kind(args[0] if args else str)
        if choices:
            return "str", choices, "str"
        if desc.is_path:
            return "path", None, "str"
        return _py_kind(ann), None, "str"
    # click parameter types
    click = _click()
    t = param.type
    if getattr(param, "is_flag", False) and getattr(param, "is_bool_flag", True):
        kind = "bool"
    elif isinstance(t, click.Choice):
        return ("list" if param.multiple or param.nargs != 1 else "str"), tuple(map(_choice_str, t.choices)), "str"
    elif isinstance(t, click.Path):
        kind = "path"
    else:
        kind = {"integer": "int", "float": "float", "boolean": "bool"}.get(getattr(t, "name", ""), "str")
    if param.multiple or param.nargs != 1:
        return "list", None, kind
    return kind, None, "str"


def _py_kind(ann: Any) -> str:
    from enum import Enum

    if ann is bool:
        return "bool"
    if ann is int:
        return "int"
    if ann is float:
        return "float"
    if isinstance(ann, type) and issubclass(ann, Path):
        return "path"
    if isinstance(ann, type) and issubclass(ann, Enum):
        return "str"
    return "str"


def _choice_str(c: Any) -> str:
    from enum import Enum

    return str(c.value) if isinstance(c, Enum) else str(c)


def schema_of(command: Any):
    """The :class:`temacli.recipe.Schema` of a built click/typer command (its options and arguments)."""
    from temacli.cli._options import RENAMED_ATTR
    from temacli.recipe import Param, Schema, normalise_key

    # old spellings (temacli.cli._options.Renamed): hidden options whose keys a recipe still accepts
    deprecated: dict[str, list[str]] = {}
    for p in command.params:
        dest = getattr(p, RENAMED_ATTR, None)
        if dest is not None:
            deprecated.setdefault(dest, []).extend(
                normalise_key(o) for o in getattr(p, "opts", ()) if o.startswith("--"))
    params = []
    for p in command.params:
        if not p.name or p.name == "config" or not getattr(p, "expose_value", True):
            continue
        if getattr(p, RENAMED_ATTR, None) is not None:
            continue
        longs = [o for o in getattr(p, "opts", ()) if o.startswith("--")]
        key = normalise_key(longs[0]) if longs else p.name
        kind, choices, item = _kind(p)
        params.append(
            Param(
                name=p.name, key=key, kind=kind, choices=choices, item=item,
                aliases=tuple(normalise_key(o) for o in longs[1:]),
                option=longs[0] if longs else p.name, deprecated=tuple(deprecated.get(p.name, ())),
            )
        )
    return Schema(command=command.name or "command", params=params)


# ----------------------------------------------------------------------------- the option
def _load_recipe(ctx: Any, param: Any, value: Optional[Path]) -> Optional[Path]:
    if value is None or ctx.resilient_parsing:
        return value
    from temacli.recipe import load

    from temacli.cli._console import err
    from temacli.cli._options import deprecation_note

    command = ctx.command_path.split(" ", 1)[-1]

    def note(key: str, p: Any) -> None:
        err(f"{deprecation_note(normalise_key(key), p.key, command)} (recipe {value})")

    from temacli.recipe import normalise_key

    values = load(value, schema_of(ctx.command), on_deprecated=note)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta[_META] = str(value)
    return value


def _config_param() -> Any:
    """A ``--config`` option built by typer itself (so it displays and completes like the others)."""

    def _placeholder(
        config: Optional[Path] = typer.Option(
            None, "--config", help=CONFIG_HELP, is_eager=True, expose_value=False, callback=_load_recipe,
        ),
    ) -> None:
        pass

    helper = typer.Typer(add_completion=False)
    helper.command()(_placeholder)
    built = typer.main.get_command(helper)
    return next(p for p in built.params if p.name == "config")


# ----------------------------------------------------------------------------- saving
def _save(ctx: Any, values: dict, out_param: str, marker: str, before: Optional[int], leave_out: tuple, filename: str) -> None:
    from temacli.cli._console import err

    out = values.get(out_param)
    if out is None or os.environ.get("RANK", "0") != "0":
        return
    out = Path(out)
    mark = out / marker
    try:
        if _stamp(mark) in (None, before):
            return  # the run never started (refused before its checks passed)
        from temacli import __version__
        from temacli.recipe import dump, saved_values

        schema = schema_of(ctx.command)
        source = ctx.meta.get(_META)
        header = (
            f"temacli {ctx.command_path.split(' ', 1)[-1]} recipe: the options of the run in this folder "
            f"(temacli {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S')})"
            + (f"\nread from {source}, then the command line" if source else "")
            + f"\nrerun: {ctx.command_path} --config {out / filename} --out NEW_FOLDER"
        )
        dump(saved_values(values, schema, leave_out), out / filename, header=header)
    except Exception as e:  # never lose a finished run over its recipe file
        err(f"warning: could not save {out / filename}: {e}")


def _stamp(path: Path) -> Optional[int]:
    """The file's modification time in ns and inode (None when absent): changes when it is rewritten."""
    try:
        st = path.stat()
    except OSError:
        return None
    return hash((st.st_mtime_ns, st.st_ino, st.st_size))


def _current_context() -> Any:
    try:
        from typer._click.globals import get_current_context  # type: ignore[import-not-found]
    except ImportError:  # older typer with the click package
        from click import get_current_context
    return get_current_context()


def _wrap(callback: Callable[..., Any], out_param: str, marker: str, leave_out: tuple, filename: str):
    def with_recipe(**kwargs: Any) -> Any:
        ctx = _current_context()
        out = kwargs.get(out_param)
        before = _stamp(Path(out) / marker) if out is not None else None
        try:
            return callback(**kwargs)
        finally:
            _save(ctx, kwargs, out_param, marker, before, leave_out, filename)

    with_recipe.__wrapped__ = callback  # type: ignore[attr-defined]
    with_recipe.__doc__ = callback.__doc__
    return with_recipe


def install(command: Any, *, out_param: str = "out", marker: str = "config.json",
            leave_out: tuple = ("out", "force", "resume", "quiet", "as_json"), filename: str = "config.toml") -> Any:
    """Give a built click/typer command ``--config`` and the saved ``OUT/config.toml``; returns it."""
    if any(p.name == "config" for p in command.params):
        return command
    command.params.insert(0, _config_param())
    command.callback = _wrap(command.callback, out_param, marker, tuple(leave_out), filename)
    return command


def add_config_option(app: typer.Typer, name: str, **options: Any) -> bool:
    """Make the registered command ``name`` of ``app`` get :func:`install` whenever typer builds it.

    Returns False when no such command is registered (its module is absent).
    """
    from typer.core import TyperCommand

    for info in app.registered_commands:
        cmd_name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else None)
        if cmd_name != name:
            continue
        base = info.cls or TyperCommand

        class RecipeCommand(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                install(self, **options)

        RecipeCommand.__name__ = f"Recipe{base.__name__}"
        info.cls = RecipeCommand
        return True
    return False
