"""TIDs (timestamp identifiers): their syntax, conversion to and from timestamps, and a clock
that hands out strictly increasing ones."""

from __future__ import annotations

import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

from protocol.syntax.errors import InvalidSyntax, preview

_TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")

_B32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
_B32_VALUE = {c: i for i, c in enumerate(_B32_SORTABLE)}
_CLOCK_ID_BITS = 10
_CLOCK_ID_MAX = (1 << _CLOCK_ID_BITS) - 1
_MICROS_MAX = (1 << 53) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


def is_tid(value: str) -> bool:
    """Whether a string has the syntax of a TID (13 base32-sortable characters)."""
    return _TID_RE.fullmatch(value) is not None


def _encode_tid(n: int) -> str:
    chars = []
    for _ in range(13):
        chars.append(_B32_SORTABLE[n & 31])
        n >>= 5
    return "".join(reversed(chars))


def _decode_tid(tid: str) -> int:
    if not (isinstance(tid, str) and _TID_RE.fullmatch(tid)):
        raise InvalidSyntax(f"invalid TID {preview(tid)}")
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
