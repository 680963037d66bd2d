"""Shared option vocabulary of the CLI: choice enums, and renamed options that keep their old spelling.

One flag, one meaning across commands (issue 15): ``train --arch`` is the model kind, ``--model DIR`` is a
model folder (``eval``, ``recommend``). A renamed option keeps its old spelling for one release:

    app.command("train", cls=renamed_command(Renamed("--model", "arch", short="-m")))(train)

The old spelling is a hidden option (not in ``--help``, not completed) of the same type as the new one;
when it is given, the value moves to the new option before the command runs and stderr gets one line,
``note: --model is deprecated for train; use --arch``. Giving both spellings is a usage error (exit 2).
A recipe (``--config``) accepts the old key the same way (:func:`temacli.cli._recipe.schema_of` reads
the rename from the hidden option), with the same note.

Nothing here imports more than typer and the standard library.
"""

from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass
from typing import Any, Optional

import typer

# ----------------------------------------------------------------------------- choices
# str enums: typer lists them in --help ([a|b|c]), shell completion offers them, a wrong value exits 2
# naming the choices. The library keeps its own checks (Python callers); tests/test_cli_flags.py checks
# that each enum has the library's values.


def choices(name: str, values: tuple[str, ...], doc: str = "") -> type[enum.Enum]:
    """A str enum whose members are ``values`` (member names = values), for typer options."""
    cls = enum.Enum(name, [(v, v) for v in values], type=str, module=__name__)
    cls.__doc__ = doc or f"choices of {name}"
    return cls


Arch = choices("Arch", ("tema", "sasrec", "gru4rec"))
Softmax = choices("Softmax", ("full", "sampled"))
TrainPositions = choices("TrainPositions", ("all", "last"))
Amp = choices("Amp", ("auto", "bf16", "off"))
TagWeights = choices("TagWeights", ("file", "weighted", "multihot", "onehot"))
Fusion = choices("Fusion", ("id", "all", "none"))
Attention = choices("Attention", ("multi", "single"))
Positions = choices("Positions", ("domain", "mixed"))
CrossWeights = choices("CrossWeights", ("symmetric", "literal"))
Log = choices("Log", ("none", "tensorboard"))
Split = choices("Split", ("test", "valid"), "An evaluation split.")
Protocol = choices("Protocol", ("sampled", "full"))
Layout = choices("Layout", ("paper", "llmcdsr"))
DataFormat = choices("DataFormat", ("log", "llmcdsr", "c2dsr"))
SplitMode = choices("SplitMode", ("loo", "c2dsr"))
# tags and features
MatchMethod = choices("MatchMethod", ("embedding", "llm", "keyword"))
Select = choices("Select", ("top-r", "threshold", "hybrid"))
Represent = choices("Represent", ("weighted", "multihot", "onehot"))
ResponseFormat = choices("ResponseFormat", ("schema", "json", "none"))
Ground = choices("Ground", ("keyword", "embedding"))
Pick = choices("Pick", ("coverage", "votes"))
Modality = choices("Modality", ("both", "image", "text"))
Dtype = choices("Dtype", ("float32", "float16"))
Precision = choices("Precision", ("auto", "float32", "bfloat16", "float16"))


def value(v: Any) -> Any:
    """An enum member's value (what the library takes); anything else as it is."""
    return v.value if isinstance(v, enum.Enum) else v


# ----------------------------------------------------------------------------- common options
DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:N."
SEED_DEFAULT = 42
QUIET_DECLS = ("--quiet", "-q")
DATA_DECLS = ("--data", "-d")


# ----------------------------------------------------------------------------- renamed options
def deprecation_note(old: str, new: str, command: str) -> str:
    """The one line printed when an old spelling is used (on the command line or as a recipe key)."""
    return f"note: {old} is deprecated for {command}; use {new}"


@dataclass(frozen=True)
class Renamed:
    """An option renamed to the parameter ``dest``; ``old`` (and ``short``) still work, hidden."""

    old: str
    dest: str
    short: Optional[str] = None

    @property
    def param_name(self) -> str:
        return "_deprecated_" + self.old.lstrip("-").replace("-", "_")


RENAMED_ATTR = "_temacli_renamed_to"  # on the hidden option: the name of the parameter it feeds


def _hidden_option(r: Renamed, new: Any) -> Any:
    """The old spelling as a hidden typer option, of the new option's type (built by typer itself)."""
    annotation = getattr(getattr(new, "type_descriptor", None), "annotation", str)
    decls = [r.old] + ([r.short] if r.short else [])
    info = typer.Option(None, *decls, hidden=True, case_sensitive=False)

    def _placeholder(**kwargs: Any) -> None:
        pass

    _placeholder.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(r.param_name, inspect.Parameter.KEYWORD_ONLY, default=info,
                           annotation=Optional[annotation])]
    )
    _placeholder.__annotations__ = {r.param_name: Optional[annotation]}
    helper = typer.Typer(add_completion=False)
    helper.command()(_placeholder)
    param = next(p for p in typer.main.get_command(helper).params if p.name == r.param_name)
    setattr(param, RENAMED_ATTR, r.dest)
    return param


def _parameter_source():
    try:
        from typer._click.core import ParameterSource  # type: ignore[import-not-found]
    except ImportError:  # older typer with the click package
        from click.core import ParameterSource
    return ParameterSource


def _click_exceptions():
    try:
        from typer._click import exceptions  # type: ignore[import-not-found]
    except ImportError:  # older typer with the click package
        from click import exceptions
    return exceptions


def _mentions(r: Renamed, args: list[str]) -> bool:
    """Whether the command line gives ``r``'s old spelling (``--old``, ``--old=v``, ``-o``, ``-ov``)."""
    for a in args:
        if a == "--":
            return False
        if a == r.old or a.startswith(r.old + "=") or (r.old[1] != "-" and a.startswith(r.old)):
            return True
        if r.short and a.startswith(r.short) and not a.startswith("--"):
            return True
    return False


def renamed_command(*renames: Renamed, base: Any = None) -> type:
    """A typer command class whose options in ``renames`` keep their old spelling (hidden, with a note)."""
    from typer.core import TyperCommand

    base_cls = base or TyperCommand

    class RenamedCommand(base_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            by_name = {p.name: p for p in self.params}
            for r in renames:
                if r.param_name not in by_name:
                    self.params.append(_hidden_option(r, by_name[r.dest]))

        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            # a required option may come by its old spelling: then click's own check waits until the value
            # moved (only then, so that --help still marks the option required)
            dests = {r.dest for r in renames if _mentions(r, args)}
            required = [p for p in self.params if p.name in dests and p.required]
            for p in required:
                p.required = False
            try:
                rest = super().parse_args(ctx, args)
            finally:
                for p in required:
                    p.required = True
            self._move_renamed(ctx)
            for p in required:
                if ctx.params.get(p.name) in (None, ()):
                    raise _click_exceptions().MissingParameter(ctx=ctx, param=p)
            return rest

        def _move_renamed(self, ctx: Any) -> None:
            source = _parameter_source()
            for r in renames:
                old = ctx.params.pop(r.param_name, None)
                if old is None:
                    continue
                new = next(p for p in self.params if p.name == r.dest)
                new_flag = max((o for o in new.opts if o.startswith("--")), key=len)
                if ctx.get_parameter_source(r.dest) == source.COMMANDLINE:
                    raise typer.BadParameter(f"give {new_flag} only ({r.old} is its old spelling)", ctx=ctx)
                from temacli.cli._console import err

                err(deprecation_note(r.old, new_flag, ctx.command_path.split(" ", 1)[-1]))
                ctx.params[r.dest] = old

    RenamedCommand.__name__ = f"Renamed{base_cls.__name__}"
    return RenamedCommand
