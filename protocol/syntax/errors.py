"""The error of a string that lacks the syntax its format requires, and how messages quote
such strings."""

from __future__ import annotations

from protocol.errors import ProtocolError


class InvalidSyntax(ProtocolError, ValueError):
    """A string does not have the syntax (or meaning) its format requires."""


def preview(value: object, limit: int = 80) -> str:
    """repr() of a value, shortened so hostile input cannot flood an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
