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
_MODULES = ("data", "tags", "features", "train", "eval", "recommend", "plot")

app = typer.Typer(
    name="temacli",
    help=(
        "TEMA-LLM cross-domain sequential recommendation, stage by stage.\n\n"
        "Each stage reads and writes Parquet/NPY files with a JSON manifest beside them, so stages "
        "can be chained, swapped and rerun.\n\n"
        "Example: temacli data split --interactions log.csv --items items.csv --domains food,kitchen --out runs/fk/data"
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (the shell is detected only when asked)
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

# `train --config RECIPE.toml`, and the resolved recipe saved as MODEL/config.toml (temacli/cli/_recipe.py)
from temacli.cli import _recipe  # noqa: E402

_recipe.add_config_option(app, "train")


def _show_flags_as_flags() -> None:
    """typer's rich help prints a type after boolean flags too (``--force <bool>``); a flag takes no value."""
    from typer.core import TyperOption

    show = getattr(TyperOption, "display_type_rich", None)
    if show is None or getattr(show, "_temacli", False):
        return

    def display_type_rich(self, ctx):  # type: ignore[no-untyped-def]
        if self.is_flag and not self.count and self.metavar is None:
            return None
        return show(self, ctx)

    display_type_rich._temacli = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_show_flags_as_flags()


def _click_exceptions():
    """Click's exception classes: typer >= 0.25 vendors click as ``typer._click``."""
    try:
        from typer._click import exceptions as exc  # type: ignore[attr-defined]
    except ImportError:  # older typer with the click package
        from click import exceptions as exc
    return exc


# the kind of each command's --out: a folder or a file (checked before the command runs)
_OUT_KIND = {
    ("data", "split"): "dir",
    ("features", "clip"): "dir",
    ("features", "text"): "dir",
    ("train",): "dir",
    ("plot",): "dir",
}
_OUT_FLAG = "--out"


def _guard_outputs(group, path: tuple[str, ...] = ()) -> None:
    """Wrap each command so its ``--out`` (whatever its parameter's name) is checked (:func:`temacli.artifacts.check_output`) before it runs.

    A folder output (data split, features, train) must not be an existing file and must be writable;
    any other output is a file: not an existing folder, in a writable folder. Stages check again in
    the library with their own rules; this makes every stage refuse an unwritable --out before work.
    """
    import functools

    for name, cmd in getattr(group, "commands", {}).items():
        sub = path + (name,)
        if hasattr(cmd, "commands"):
            _guard_outputs(cmd, sub)
            continue
        if cmd.callback is None or getattr(cmd.callback, "_temacli_guarded", False):
            continue
        params = {p.name: p for p in cmd.params}
        names = [p.name for p in cmd.params if _OUT_FLAG in getattr(p, "opts", ())]
        if not names:
            continue
        kind = _OUT_KIND.get(sub, "file")

        def make(orig, names=names, kind=kind, params=params):
            @functools.wraps(orig)
            def guarded(*args, **kwargs):
                from temacli.artifacts import check_output

                for n in names:
                    value = kwargs.get(n)
                    if value is not None and str(value) != "":
                        flag = max((o for o in params[n].opts if o.startswith("--")), key=len, default="--" + n)
                        check_output(str(value), kind, flag)
                return orig(*args, **kwargs)

            guarded._temacli_guarded = True  # type: ignore[attr-defined]
            return guarded

        cmd.callback = make(cmd.callback)


def _command():
    """The click command of the app, with output checks around every command."""
    import typer.main

    cmd = typer.main.get_command(app)
    _guard_outputs(cmd)
    return cmd


_OS_USER_ERRNOS = {
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EROFS": "read-only file system",
    "ENOSPC": "no space left on the device",
    "EDQUOT": "disk quota exceeded",
    "EISDIR": "is a folder, expected a file",
    "ENOTDIR": "a part of the path is not a folder",
    "ENAMETOOLONG": "file name too long",
    "EFBIG": "file too large for the file system",
}


def os_error_line(e: OSError) -> str | None:
    """One line for an OSError on a path that the user chose (permissions, space, a file where a folder
    is wanted); None when it is not such an error (then it stays an internal failure)."""
    import errno as _errno

    name = _errno.errorcode.get(e.errno or -1)
    path = e.filename
    if name not in _OS_USER_ERRNOS or path is None:
        return None
    what = _OS_USER_ERRNOS[name]
    if name in ("ENOSPC", "EDQUOT", "EFBIG"):
        fix = "free some space or write the output elsewhere (another --out)"
    elif name in ("EACCES", "EPERM", "EROFS"):
        fix = "fix the permissions, or for an output choose a folder you can write (another --out)"
    else:
        fix = "check the path"
    target = f"{path} -> {e.filename2}" if e.filename2 else str(path)
    return f"{target}: {what}; {fix}"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def _tidy_alloc_message(text: str) -> str:
    """torch's ``[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: ... 281474976710656 bytes``
    -> ``DefaultCPUAllocator: ... 256.0 TiB``."""
    import re

    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*[^.]*\.\s*", "", text)
    return re.sub(r"(\d{4,}) bytes", lambda m: _human_bytes(int(m.group(1))), text)


def memory_error_line(e: BaseException) -> str | None:
    """One line for running out of memory (host MemoryError, torch's CPU/CUDA allocator); else None."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, MemoryError):
        detail = text or "an allocation failed"
    elif isinstance(e, ValueError) and text.startswith("array is too big"):  # numpy: larger than addressable
        detail = text
    elif type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower() or "not enough memory" in text.lower())
    ):
        detail = text
    else:
        return None
    detail = _tidy_alloc_message(detail).rstrip(". ")
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return (
        f"not enough memory: {detail}; use smaller sizes (--dim, --batch-size, fewer items) "
        "or a machine or device with more memory"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input or usage, 1 on an internal failure.

    Bad input is a :class:`TemacliError`; running out of memory and an OSError on a path the user
    chose (permission denied, read-only, no space, a file where a folder is wanted) are reported the
    same way, one line and exit 2. Anything else is an internal failure: exit 1.
    """
    from temacli.cli._console import err_console
    from temacli.errors import Interrupted, TemacliError

    def err(message: str) -> None:  # one plain line: no markup, no highlighting, no :emoji: codes (cuda:x:)
        err_console.print(message, markup=False, highlight=False, emoji=False, soft_wrap=True)

    exc = _click_exceptions()
    try:
        _command().main(args=argv, prog_name="temacli", standalone_mode=False)
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
        line = memory_error_line(e) or (os_error_line(e) if isinstance(e, OSError) else None)
        if line is not None and not os.environ.get("TEMACLI_DEBUG"):
            err(f"error: {line}")
            sys.exit(2)
        if os.environ.get("TEMACLI_DEBUG"):
            raise
        err(f"internal error: {type(e).__name__}: {e} (set TEMACLI_DEBUG=1 for the traceback)")
        sys.exit(1)
    sys.exit(0)
