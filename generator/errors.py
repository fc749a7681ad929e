"""User-facing errors: each prints as one line naming the spec key or file at fault, never as a traceback."""
from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class ConvscopeError(Exception):
    """An error caused by the user's input (spec, files, devices). `where` is a key path or a file name."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class SpecErrors(ConvscopeError):
    """Several problems found in one validation pass, reported together."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(source, "; ".join(errors))

    def lines(self) -> list[str]:
        return [f"{self.source}: {e}" for e in self.errors]


def did_you_mean(name: str, choices: Iterable[str], what: str = "") -> str:
    """' did you mean 'x'?' for the closest choice, else a short list of valid ones."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    if not choices:
        return f"there are no {what or 'choices'}"
    shown = ", ".join(repr(c) for c in choices[:12])
    more = f" (and {len(choices) - 12} more)" if len(choices) > 12 else ""
    return f"valid {what or 'choices'}: {shown}{more}"


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message': how an exception is shown on a page or in the terminal."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# A folder that cannot be written (disk full, quota, read-only, no permission): the whole build stops with one line
# naming the path and leaves the previous report as it was, instead of failing every result one by one.
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def cannot_write(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _CANNOT_WRITE
