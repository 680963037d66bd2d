"""Shared rich consoles for the CLI: ``out`` for results (stdout), ``err`` for messages (stderr)."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def err(message: str) -> None:
    """One line on stderr, without markup interpretation (paths may contain brackets)."""
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    err_console.print(message, highlight=False)
