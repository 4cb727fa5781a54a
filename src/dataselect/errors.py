"""Errors a user can act on.

The CLI prints a :class:`DataselectError` as one line and exits with code 2 (``--debug`` shows the
traceback). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class DataselectError(Exception):
    """A problem with the user's input, options or files; reported as one line, exit code 2."""


class InputError(DataselectError):
    """A bad row or file in user input, located as ``FILE:LINE`` (or ``FILE:row N`` for tables)."""

    def __init__(self, where: str, reason: str):
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class Interrupted(DataselectError):
    """Raised on SIGINT/SIGTERM so that long stages stop cleanly and say how to resume."""
