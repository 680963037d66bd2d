"""Prompt templates (plain text, ``str.format`` fields). Their sha256 goes into each manifest."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from temacli.errors import TemacliError


def load(name: str, override: str | Path | None = None) -> str:
    """Template ``name`` (generate, match, system), or the text of ``override`` when given."""
    if override is not None:
        p = Path(override)
        if not p.is_file():
            raise TemacliError(f"--prompt-file {p}: file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TemacliError(
                f"--prompt-file {p}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                "save the template as UTF-8"
            ) from None
        except OSError as e:
            raise TemacliError(f"--prompt-file {p}: cannot be read ({e.strerror}); check the file") from None
    else:
        text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return text


def render(template: str, where: str, **fields) -> str:
    """Fill a template; a missing or unknown field is a one-line error naming the template."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise TemacliError(
            f"{where}: cannot fill the prompt template ({type(e).__name__}: {e}); it may use the fields "
            f"{', '.join('{' + k + '}' for k in fields)} and must write literal braces as {{{{ }}}}"
        ) from None
