"""Errors meant for people.

``TemacliError`` is bad input or usage: the CLI prints its message as one line and exits with code 2.
Any other exception is an internal failure (exit code 1).
"""


class TemacliError(Exception):
    """Bad input: one clear line saying what is wrong, where, and what to do."""

    exit_code = 2


class Interrupted(Exception):
    """Raised after a stage saved its state on Ctrl-C; the CLI exits with code 130."""

    exit_code = 130
