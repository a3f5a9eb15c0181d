"""`is_valid(kind, value)`: one entry point for every Lexicon string format."""

from __future__ import annotations

from collections.abc import Callable

from protocol.syntax.datetimes import is_datetime
from protocol.syntax.identifiers import (
    is_at_identifier,
    is_at_uri,
    is_cid,
    is_did,
    is_handle,
    is_nsid,
    is_record_key,
    is_uri,
)
from protocol.syntax.language import is_language
from protocol.syntax.tids import is_tid

_VALIDATORS: dict[str, Callable[[str], bool]] = {
    "handle": is_handle,
    "did": is_did,
    "nsid": is_nsid,
    "at-uri": is_at_uri,
    "tid": is_tid,
    "record-key": is_record_key,
    "datetime": is_datetime,
    "cid": is_cid,
    "language": is_language,
    "uri": is_uri,
    "at-identifier": is_at_identifier,
}

KINDS: frozenset[str] = frozenset(_VALIDATORS)


def is_valid(kind: str, value: object) -> bool:
    """Whether `value` is a string with the syntax of the Lexicon string format `kind`.

    Datetimes must also be real instants (no month 13, not before year 0000); language tags
    need only be well-formed (use parse_language to also reject repeated subtags).
    """
    try:
        check = _VALIDATORS[kind]
    except KeyError:
        raise ValueError(
            f"unknown string format {kind!r}; known: {', '.join(sorted(_VALIDATORS))}"
        ) from None
    return isinstance(value, str) and check(value)
