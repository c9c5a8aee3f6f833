"""The errors that mean "what you gave is wrong", which the three commands print as one line with exit code 2.

Anything else that escapes a subcommand is a fault of the library and keeps its traceback. This module imports only
the standard library (``slm.arch`` and the command dispatch use it before anything heavy).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(Exception):
    """A mistake in the user's input (a name, a file, a setting); its message says what was given and expected."""


class UnknownNameError(InputError, KeyError):
    """A name that is not among the choices (a model, a preset); the message gives close matches and every choice.

    A ``KeyError`` too, so ``except KeyError`` around a registry lookup keeps working; unlike ``KeyError``, ``str()``
    is the message itself, not its quoted repr.
    """

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        choices = sorted(choices)
        close = difflib.get_close_matches(name, choices, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint} (choices: {', '.join(choices)})")
        self.kind, self.name, self.choices, self.close = kind, name, choices, close

    def __str__(self) -> str:
        return str(self.args[0])


def user_error(exc: BaseException) -> BaseException | None:
    """The user's mistake behind ``exc``: ``exc`` itself or the first of its causes (``raise … from``, or raised while
    handling) that is an :class:`InputError` or a missing/wrong file (``FileNotFoundError`` and its kin); else
    ``None``. Libraries that wrap errors (jsonargparse wraps a model's constructor error) keep the cause."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            return current
        current = current.__cause__ or current.__context__
    return None


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line; an OS error as ``PATH: reason`` rather than ``[Errno 2] …``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc)
    return " ".join(text.split())
