"""The atproto `datetime` format: checking it (real instants only, year 0000 included) and
parsing it into an aware UTC datetime."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from protocol.syntax.errors import InvalidSyntax, preview

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


def is_datetime(value: str) -> bool:
    return not isinstance(_check_datetime(value), str)


def parse_datetime(value: str) -> datetime:
    """An aware UTC datetime for an atproto `datetime` string (fractions truncated to
    microseconds). Raises InvalidSyntax for invalid values, and for the few valid ones that
    Python cannot represent (instants in year 0000, or after 9999 in UTC)."""
    if not isinstance(value, str):
        raise InvalidSyntax(f"datetime must be a string, not {type(value).__name__}")
    checked = _check_datetime(value)
    if isinstance(checked, str):
        raise InvalidSyntax(f"invalid datetime {preview(value)}: {checked}")
    instant, shift = checked
    if instant is None:
        raise InvalidSyntax(
            f"datetime {preview(value)} is valid but after year 9999 in UTC, which Python"
            " datetimes cannot represent"
        )
    if shift:
        if instant.year - shift < 1:
            raise InvalidSyntax(
                f"datetime {preview(value)} is valid but before year 0001, which Python"
                " datetimes cannot represent"
            )
        instant = instant.replace(year=instant.year - shift)
    return instant
