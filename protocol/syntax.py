"""AT Protocol string syntax: validators for the Lexicon string formats, and parsers for the
identifiers the rest of plyr works with (AT-URIs, NSIDs, TIDs, datetimes, language tags).

`is_valid(kind, value)` answers "does this string have the syntax of <kind>" for every Lexicon
string format. It never raises for bad input (only for an unknown kind) and is cheap enough to
run on every field of every record the indexer sees: each check is a length test plus one
precompiled, anchored regex, with a little extra work only where the spec asks for semantics
(datetimes, AT-URI parts).

Rules follow the atproto specs (handle, did, nsid, at-uri-scheme, tid, record-key, lexicon and
data-model) and are checked against the atproto interop vectors in the tests.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from protocol.errors import ProtocolError

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


class InvalidSyntax(ProtocolError, ValueError):
    """A string does not have the syntax (or meaning) its format requires."""


# --- identifiers -------------------------------------------------------------------------
# Patterns are used with fullmatch(): `$` would also accept a trailing newline. Character
# classes are spelled out ([0-9], not \d) because \d and \w match non-ASCII digits/letters.

_HANDLE_MAX = 253
_HANDLE_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)

_DID_MAX = 2048
_DID_RE = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")

# The spec also caps the authority at 253 characters, but the interop vectors (and the
# reference implementations) accept longer ones within the 317 total; we follow them.
_NSID_MAX = 317
# Groups: 1 = authority (the domain, reversed), 2 = name.
_NSID_RE = re.compile(
    r"([a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+)"
    r"\.([a-zA-Z][a-zA-Z0-9]{0,62})"
)

_TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")

_RKEY_RE = re.compile(r"[A-Za-z0-9._:~-]{1,512}")

# Loose CID syntax, as Lexicon `cid` strings allow any multibase CIDv1; the blessed subset
# (base32 dag-cbor/raw sha-256) is a data-model concern, not a string-format one.
_CID_RE = re.compile(r"[a-zA-Z0-9+=]{8,256}")

_URI_MAX = 8192
# RFC-3986 scheme, then something that is not whitespace (an authority or a path).
_URI_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:(?://)?[^\s/]\S*")

_AT_URI_MAX = 8192
# Restricted (Lexicon) AT-URI: authority, optional collection, optional rkey; no query or
# fragment. Parts are validated separately so errors can say which part is wrong.
_AT_URI_RE = re.compile(r"at://([^/?#\s]+)(?:/([^/?#\s]+)(?:/([^/?#\s]+))?)?")


def _is_handle(value: str) -> bool:
    return len(value) <= _HANDLE_MAX and _HANDLE_RE.fullmatch(value) is not None


def _is_did(value: str) -> bool:
    return len(value) <= _DID_MAX and _DID_RE.fullmatch(value) is not None


def _is_nsid(value: str) -> bool:
    if len(value) > _NSID_MAX:
        return False
    return _NSID_RE.fullmatch(value) is not None


def _is_tid(value: str) -> bool:
    return _TID_RE.fullmatch(value) is not None


def _is_record_key(value: str) -> bool:
    return _RKEY_RE.fullmatch(value) is not None and value != "." and value != ".."


def _is_at_identifier(value: str) -> bool:
    # A DID always starts with "did:" and a handle never contains ":", so one test decides.
    return _is_did(value) if value.startswith("did:") else _is_handle(value)


def _is_cid(value: str) -> bool:
    if _CID_RE.fullmatch(value) is None:
        return False
    # CIDv0 (bare base58btc sha-256 multihash, "Qm..." with 46 chars) is not allowed.
    return not (len(value) == 46 and value.startswith("Qm"))


def _is_uri(value: str) -> bool:
    if len(value) > _URI_MAX or (not value.isascii() and len(value.encode()) > _URI_MAX):
        return False
    return _URI_RE.fullmatch(value) is not None


# --- AT-URI ------------------------------------------------------------------------------


def _split_at_uri(value: str) -> tuple[str, str | None, str | None] | str:
    """The (authority, collection, rkey) of a restricted AT-URI, or a message saying why not."""
    if len(value) > _AT_URI_MAX:
        return f"longer than {_AT_URI_MAX} characters"
    m = _AT_URI_RE.fullmatch(value)
    if m is None:
        if not value.startswith("at://"):
            return "must start with 'at://'"
        if "?" in value or "#" in value:
            return "query and fragment parts are not allowed"
        if value.endswith("/"):
            return "trailing slash is not allowed"
        return "must be at://AUTHORITY[/COLLECTION[/RKEY]] with no empty parts or spaces"
    authority, collection, rkey = m.groups()
    if not _is_at_identifier(authority):
        return f"authority {authority!r} is not a valid DID or handle"
    if collection is not None and not _is_nsid(collection):
        return f"collection {collection!r} is not a valid NSID"
    if rkey is not None and not _is_record_key(rkey):
        return f"record key {rkey!r} is not valid"
    return authority, collection, rkey


def _is_at_uri(value: str) -> bool:
    return not isinstance(_split_at_uri(value), str)


@dataclass(frozen=True, slots=True)
class AtUri:
    """A restricted AT-URI: `at://AUTHORITY[/COLLECTION[/RKEY]]`.

    A handle authority is lowercased (handles are case-insensitive); DIDs, collections and
    record keys are case-sensitive and kept as given. `str()` gives the canonical form.
    """

    authority: str
    collection: str | None = None
    rkey: str | None = None

    @classmethod
    def parse(cls, value: str) -> AtUri:
        if not isinstance(value, str):
            raise InvalidSyntax(f"AT-URI must be a string, not {type(value).__name__}")
        parts = _split_at_uri(value)
        if isinstance(parts, str):
            raise InvalidSyntax(f"invalid AT-URI {_preview(value)}: {parts}")
        authority, collection, rkey = parts
        if not authority.startswith("did:"):
            authority = authority.lower()
        return cls(authority, collection, rkey)

    @property
    def did(self) -> str | None:
        """The authority when it is a DID (durable), else None (a handle)."""
        return self.authority if self.authority.startswith("did:") else None

    def __str__(self) -> str:
        if self.collection is None:
            return f"at://{self.authority}"
        if self.rkey is None:
            return f"at://{self.authority}/{self.collection}"
        return f"at://{self.authority}/{self.collection}/{self.rkey}"


def make_uri(did: str, collection: str, rkey: str) -> str:
    """The AT-URI of a record, after checking each part (raises InvalidSyntax)."""
    if not (isinstance(did, str) and _is_did(did)):
        raise InvalidSyntax(f"not a valid DID: {_preview(did)}")
    if not (isinstance(collection, str) and _is_nsid(collection)):
        raise InvalidSyntax(f"not a valid collection NSID: {_preview(collection)}")
    if not (isinstance(rkey, str) and _is_record_key(rkey)):
        raise InvalidSyntax(f"not a valid record key: {_preview(rkey)}")
    return f"at://{did}/{collection}/{rkey}"


# --- NSID --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nsid:
    """A namespaced identifier: `authority` is the reversed domain (`com.example`), `name` the
    final segment (`fooBar`). NSIDs are case-sensitive and are not normalized."""

    authority: str
    name: str

    @property
    def domain(self) -> str:
        """The authority as a domain name, for lexicon resolution (`example.com`)."""
        return ".".join(reversed(self.authority.split("."))).lower()

    def __str__(self) -> str:
        return f"{self.authority}.{self.name}"


def parse_nsid(value: str) -> Nsid:
    if not isinstance(value, str):
        raise InvalidSyntax(f"NSID must be a string, not {type(value).__name__}")
    if len(value) > _NSID_MAX:
        raise InvalidSyntax(f"invalid NSID {_preview(value)}: longer than {_NSID_MAX} characters")
    m = _NSID_RE.fullmatch(value)
    if m is None:
        raise InvalidSyntax(
            f"invalid NSID {_preview(value)}: must be a reversed domain name followed by a name"
            " segment of ASCII letters and digits (e.g. com.example.fooBar)"
        )
    authority, name = m.groups()
    return Nsid(authority, name)


# --- datetime ----------------------------------------------------------------------------

_DATETIME_MAX = 64  # generous (40 fractional digits); bounds the work on hostile input
_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The Gregorian calendar repeats every 400 years, so years below 400 (year 0000 is valid in
# atproto but absent from Python's datetime) are checked 400 years later.
_GREGORIAN_CYCLE = 400


def _check_datetime(value: str) -> tuple[datetime | None, int] | str:
    """(instant, shift) for a valid datetime, else a message saying why it is not.

    The instant is in UTC with its year raised by `shift` (non-zero for years below 400, as
    Python has no year 0000); it is None when the instant is past 9999-12-31 in UTC (valid,
    but not representable).
    """
    if len(value) > _DATETIME_MAX:
        return f"longer than {_DATETIME_MAX} characters"
    m = _DATETIME_RE.fullmatch(value)
    if m is None:
        return "must look like 1985-04-12T23:20:50.123Z (a timezone is required)"
    if value[-1] == "Z" and not value.startswith("0000"):
        # Fast path for the usual UTC form, once the regex has pinned the exact syntax: the C
        # parser checks the calendar and truncates the fraction to microseconds. Its errors
        # (and year 0000, which it cannot hold) take the slower path below for a message.
        try:
            return datetime.fromisoformat(value), 0  # tzinfo is already UTC
        except ValueError:
            pass
    year_s, month_s, day_s, hour_s, minute_s, second_s, frac, sign, tzh_s, tzm_s = m.groups()
    year, month, day = int(year_s), int(month_s), int(day_s)
    hour, minute, second = int(hour_s), int(minute_s), int(second_s)
    if not 1 <= month <= 12:
        return f"month {month_s} does not exist"
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= days:
        return f"day {day_s} does not exist in month {month_s}"
    if hour > 23 or minute > 59 or second > 59:
        return f"time {hour_s}:{minute_s}:{second_s} does not exist"
    offset = timedelta(0)
    if sign is not None:
        tzh, tzm = int(tzh_s), int(tzm_s)
        if tzh > 23 or tzm > 59:
            return f"timezone offset {sign}{tzh_s}:{tzm_s} does not exist"
        if sign == "-" and tzh == 0 and tzm == 0:
            return "negative zero timezone offset (-00:00) is not allowed"
        offset = timedelta(hours=tzh, minutes=tzm)
        if sign == "-":
            offset = -offset
    # Fractions beyond microseconds are truncated (never rounded up into the next second).
    micros = int((frac or "")[:6].ljust(6, "0"))
    shift = _GREGORIAN_CYCLE if year < _GREGORIAN_CYCLE else 0
    local = datetime(year + shift, month, day, hour, minute, second, micros)
    try:
        instant = local - offset
    except OverflowError:  # only past 9999-12-31 in UTC: years below 400 are shifted up
        return None, 0
    if instant.year - shift < 0:
        return "normalizes to a time before year 0000"
    return instant.replace(tzinfo=UTC), shift


def _is_datetime(value: str) -> bool:
    return not isinstance(_check_datetime(value), str)


def parse_datetime(value: str) -> datetime:
    """An aware UTC datetime for an atproto `datetime` string (fractions truncated to
    microseconds). Raises InvalidSyntax for invalid values, and for the few valid ones that
    Python cannot represent (instants in year 0000, or after 9999 in UTC)."""
    if not isinstance(value, str):
        raise InvalidSyntax(f"datetime must be a string, not {type(value).__name__}")
    checked = _check_datetime(value)
    if isinstance(checked, str):
        raise InvalidSyntax(f"invalid datetime {_preview(value)}: {checked}")
    instant, shift = checked
    if instant is None:
        raise InvalidSyntax(
            f"datetime {_preview(value)} is valid but after year 9999 in UTC, which Python"
            " datetimes cannot represent"
        )
    if shift:
        if instant.year - shift < 1:
            raise InvalidSyntax(
                f"datetime {_preview(value)} is valid but before year 0001, which Python"
                " datetimes cannot represent"
            )
        instant = instant.replace(year=instant.year - shift)
    return instant


# --- language ----------------------------------------------------------------------------
# RFC 5646 "well-formed" grammar, as atproto applies it: the primary language subtag is 2-3
# lowercase letters (4-8 letter and uppercase primaries are rejected by the interop vectors);
# other subtags are case-insensitive.

_GRANDFATHERED = frozenset(
    """en-GB-oed i-ami i-bnn i-default i-enochian i-hak i-klingon i-lux i-mingo i-navajo i-pwn
    i-tao i-tay i-tsu sgn-BE-FR sgn-BE-NL sgn-CH-DE art-lojban cel-gaulish no-bok no-nyn
    zh-guoyu zh-hakka zh-min zh-min-nan zh-xiang""".split()
)
_LANGTAG_RE = re.compile(
    r"(?P<language>[a-z]{2,3}(?:-[A-Za-z]{3}){0,3})"
    r"(?:-(?P<script>[A-Za-z]{4}))?"
    r"(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
    r"(?P<extensions>(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*)"
    r"(?:-(?P<private>[xX](?:-[A-Za-z0-9]{1,8})+))?"
)
_PRIVATE_TAG_RE = re.compile(r"[xX](?:-[A-Za-z0-9]{1,8})+")


def _is_language(value: str) -> bool:
    return (
        _LANGTAG_RE.fullmatch(value) is not None
        or _PRIVATE_TAG_RE.fullmatch(value) is not None
        or value in _GRANDFATHERED
    )


@dataclass(frozen=True, slots=True)
class LanguageTag:
    """A parsed BCP 47 tag. `language` is the primary subtag (with any extended language
    subtags); grandfathered and private-use-only tags keep the whole tag in `tag` with
    `language` set to the tag itself."""

    tag: str
    language: str
    script: str | None = None
    region: str | None = None
    variants: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    private_use: str | None = None

    def __str__(self) -> str:
        return self.tag


def parse_language(value: str) -> LanguageTag:
    """Parse a language tag that is well-formed *and* valid in the RFC 5646 sense that no
    variant or extension singleton repeats. Raises InvalidSyntax otherwise."""
    if not isinstance(value, str):
        raise InvalidSyntax(f"language tag must be a string, not {type(value).__name__}")
    if value in _GRANDFATHERED or _PRIVATE_TAG_RE.fullmatch(value):
        return LanguageTag(tag=value, language=value)
    m = _LANGTAG_RE.fullmatch(value)
    if m is None:
        raise InvalidSyntax(f"invalid language tag {_preview(value)}: not a well-formed BCP 47 tag")
    variants = tuple(v for v in m.group("variants").split("-") if v)
    seen = [v.lower() for v in variants]
    if len(set(seen)) != len(seen):
        raise InvalidSyntax(f"invalid language tag {_preview(value)}: a variant subtag repeats")
    extensions: list[str] = []
    for sub in m.group("extensions").split("-"):
        if len(sub) == 1:
            extensions.append(sub)
        elif sub:
            extensions[-1] += "-" + sub
    singletons = [e[0].lower() for e in extensions]
    if len(set(singletons)) != len(singletons):
        raise InvalidSyntax(
            f"invalid language tag {_preview(value)}: an extension singleton repeats"
        )
    return LanguageTag(
        tag=value,
        language=m.group("language"),
        script=m.group("script"),
        region=m.group("region"),
        variants=variants,
        extensions=tuple(extensions),
        private_use=m.group("private"),
    )


# --- TIDs --------------------------------------------------------------------------------

_B32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
_B32_VALUE = {c: i for i, c in enumerate(_B32_SORTABLE)}
_CLOCK_ID_BITS = 10
_CLOCK_ID_MAX = (1 << _CLOCK_ID_BITS) - 1
_MICROS_MAX = (1 << 53) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


def _encode_tid(n: int) -> str:
    chars = []
    for _ in range(13):
        chars.append(_B32_SORTABLE[n & 31])
        n >>= 5
    return "".join(reversed(chars))


def _decode_tid(tid: str) -> int:
    if not (isinstance(tid, str) and _TID_RE.fullmatch(tid)):
        raise InvalidSyntax(f"invalid TID {_preview(tid)}")
    n = 0
    for c in tid:
        n = (n << 5) | _B32_VALUE[c]
    return n


def tid_from_micros(micros: int, clock_id: int = 0) -> str:
    """The TID for a timestamp in microseconds since the UNIX epoch and a 10-bit clock id."""
    if not 0 <= micros <= _MICROS_MAX:
        raise ValueError(f"TID timestamp out of range (0..2^53-1 microseconds): {micros}")
    if not 0 <= clock_id <= _CLOCK_ID_MAX:
        raise ValueError(f"TID clock id out of range (0..{_CLOCK_ID_MAX}): {clock_id}")
    return _encode_tid((micros << _CLOCK_ID_BITS) | clock_id)


def tid_from_datetime(dt: datetime, clock_id: int = 0) -> str:
    """The TID for an aware datetime (naive datetimes are refused: their instant is unknown)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("tid_from_datetime needs an aware datetime (e.g. tzinfo=UTC)")
    return tid_from_micros((dt - _EPOCH) // _ONE_MICRO, clock_id)


def tid_to_micros(tid: str) -> int:
    """Microseconds since the UNIX epoch encoded in a TID (raises InvalidSyntax)."""
    return _decode_tid(tid) >> _CLOCK_ID_BITS


def tid_to_clock_id(tid: str) -> int:
    return _decode_tid(tid) & _CLOCK_ID_MAX


def tid_to_datetime(tid: str) -> datetime:
    """The UTC instant encoded in a TID (raises InvalidSyntax; note that TIDs are chosen by
    the record author and prove nothing about when a record was made)."""
    micros = tid_to_micros(tid)
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidSyntax(f"TID {tid} encodes a time after year 9999") from None


class TidClock:
    """Generates TIDs that strictly increase, even within one microsecond or when the wall
    clock steps backwards (then the timestamp runs ahead of the clock until it catches up).

    Thread-safe. The clock id is random per instance unless given.
    """

    def __init__(self, clock_id: int | None = None) -> None:
        if clock_id is None:
            clock_id = secrets.randbelow(_CLOCK_ID_MAX + 1)
        if not 0 <= clock_id <= _CLOCK_ID_MAX:
            raise ValueError(f"TID clock id out of range (0..{_CLOCK_ID_MAX}): {clock_id}")
        self.clock_id = clock_id
        self._last = 0
        self._lock = threading.Lock()

    def next_micros(self) -> int:
        with self._lock:
            now = time.time_ns() // 1000
            if now <= self._last:
                now = self._last + 1
            self._last = now
            return now

    def next(self) -> str:
        return _encode_tid((self.next_micros() << _CLOCK_ID_BITS) | self.clock_id)


# --- dispatch ----------------------------------------------------------------------------

_VALIDATORS: dict[str, Callable[[str], bool]] = {
    "handle": _is_handle,
    "did": _is_did,
    "nsid": _is_nsid,
    "at-uri": _is_at_uri,
    "tid": _is_tid,
    "record-key": _is_record_key,
    "datetime": _is_datetime,
    "cid": _is_cid,
    "language": _is_language,
    "uri": _is_uri,
    "at-identifier": _is_at_identifier,
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


def _preview(value: object, limit: int = 80) -> str:
    """repr() of a value, shortened so hostile input cannot flood an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
