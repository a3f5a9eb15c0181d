"""AT Protocol string syntax: validators for the Lexicon string formats, and parsers for the
identifiers the rest of plyr works with (AT-URIs, NSIDs, TIDs, datetimes, language tags).

`is_valid(kind, value)` answers "does this string have the syntax of <kind>" for every Lexicon
string format. It never raises for bad input (only for an unknown kind) and is cheap enough to
run on every field of every record the indexer sees: each check is a length test plus one
precompiled, anchored regex, with a little extra work only where the spec asks for semantics
(datetimes, AT-URI parts).

Rules follow the atproto specs (handle, did, nsid, at-uri-scheme, tid, record-key, lexicon and
data-model) and are checked against the atproto interop vectors in the tests.

The modules, each importing only those listed before it: `errors`, `identifiers`, `datetimes`,
`language`, `tids` and `formats` (the `is_valid` dispatch).
"""

from protocol.syntax.datetimes import parse_datetime
from protocol.syntax.errors import InvalidSyntax
from protocol.syntax.formats import KINDS, is_valid
from protocol.syntax.identifiers import AtUri, Nsid, make_uri, parse_nsid
from protocol.syntax.language import LanguageTag, parse_language
from protocol.syntax.tids import (
    TidClock,
    tid_from_datetime,
    tid_from_micros,
    tid_to_clock_id,
    tid_to_datetime,
    tid_to_micros,
)

__all__ = [
    "KINDS",
    "AtUri",
    "InvalidSyntax",
    "LanguageTag",
    "Nsid",
    "TidClock",
    "is_valid",
    "make_uri",
    "parse_datetime",
    "parse_language",
    "parse_nsid",
    "tid_from_datetime",
    "tid_from_micros",
    "tid_to_clock_id",
    "tid_to_datetime",
    "tid_to_micros",
]
