"""The ``temacli`` command: a thin typer layer over the library.

Each command group or command lives in its own module here and exposes ``register(app)``; modules
present in this package are registered in the order below. Nothing here imports torch, litellm or
open_clip: command functions import the library inside their bodies, so ``temacli --help`` is fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import typer

from temacli import __version__

# module name -> (kind); groups first, then single commands, in the order users meet them
_MODULES = ("data", "tags", "features", "train", "eval", "recommend")

app = typer.Typer(
    name="temacli",
    help=(
        "TEMA-LLM cross-domain sequential recommendation, stage by stage.\n\n"
        "Each stage reads and writes Parquet/NPY files with a JSON manifest beside them, so stages "
        "can be chained, swapped and rerun.\n\n"
        "Example: temacli data split --interactions log.csv --items items.csv --domains food,kitchen --out runs/fk/data"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"temacli {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """TEMA-LLM cross-domain sequential recommendation."""


def _register_all() -> None:
    for name in _MODULES:
        modname = f"temacli.cli.{name}_cmd" if name == "eval" else f"temacli.cli.{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).register(app)


_register_all()


def _click_exceptions():
    """Click's exception classes: typer >= 0.25 vendors click as ``typer._click``."""
    try:
        from typer._click import exceptions as exc  # type: ignore[attr-defined]
    except ImportError:  # older typer with the click package
        from click import exceptions as exc
    return exc


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input or usage, 1 on an internal failure."""
    from temacli.cli._console import err
    from temacli.errors import Interrupted, TemacliError

    exc = _click_exceptions()
    try:
        app(args=argv, prog_name="temacli", standalone_mode=False)
    except TemacliError as e:
        err(f"error: {e}")
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err("aborted")
        sys.exit(130)
    except exc.ClickException as e:  # usage errors: unknown option, bad value, missing argument
        e.show()
        sys.exit(2)
    except Interrupted as e:
        err(f"interrupted: {e}")
        sys.exit(130)
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # an internal failure: say so, keep the traceback for TEMACLI_DEBUG=1
        if os.environ.get("TEMACLI_DEBUG"):
            raise
        err(f"internal error: {type(e).__name__}: {e} (set TEMACLI_DEBUG=1 for the traceback)")
        sys.exit(1)
    sys.exit(0)
