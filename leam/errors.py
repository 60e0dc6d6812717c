"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations


class LeamError(Exception):
    """A problem the user can fix (bad input, bad parameter, missing file).

    Stage entry points catch it and print ``error: <message>`` on one line.
    The message must name the bad value and, where there are any, the valid choices.
    """


class ChecksumError(LeamError):
    """A file's sha256 does not match the expected value."""


def check_choice(name: str, value, choices) -> None:
    """Raise a LeamError naming the parameter, its bad value and the valid choices."""
    if value not in choices:
        raise LeamError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")
