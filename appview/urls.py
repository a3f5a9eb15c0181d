"""Which URLs from records we ever serve: absolute http(s) URLs, nothing else.

The lexicon `uri` format accepts any scheme, so a record may carry `javascript:` or `data:`
URLs; rendered into `<img src>`, `og:image` or an oEmbed `thumbnail_url`, or handed to a client
as `imageUrl`, those run script or spoof content. Every view and page turns a record's URL into
a servable one here: in Python (`servable_url`) or, for views built by Postgres, in SQL
(`servable_url_sql`), both from the one pattern below.
"""

from __future__ import annotations

import re

# http or https (any case), "://", a non-empty authority, then anything but control characters
# and spaces. Written in the syntax shared by Python's re and Postgres's ARE (no quotes, no
# braces, no hex digit right after an \x escape).
SERVABLE_URL_PATTERN = r"^https?://[^\x01-\x20\x7f/?#\\]+(?:[/?#][^\x01-\x20\x7f]*)?$"
_SERVABLE = re.compile(SERVABLE_URL_PATTERN, re.IGNORECASE)


def servable_url(value: object) -> str | None:
    """`value` when it is an http(s) URL we may hand out or render, else None."""
    if isinstance(value, str) and "\x00" not in value and _SERVABLE.fullmatch(value):
        return value
    return None


# The same pattern for a case-sensitive match: only the scheme matches letters (the rest are
# classes of control characters and punctuation), so spelling their cases out is the whole of
# what IGNORECASE does to it. Postgres matches this with `~` about twice as fast as the pattern
# with `~*`, which folds the case of every character it reads (a page of 50 track views checks
# 150 URLs). tests/unit/appview checks that the two agree.
_SCHEME = "^https?"
assert SERVABLE_URL_PATTERN.startswith(_SCHEME)
SERVABLE_URL_PATTERN_CASED = "^[hH][tT][tT][pP][sS]?" + SERVABLE_URL_PATTERN[len(_SCHEME):]


def servable_url_sql(expr: str) -> str:
    """SQL for `expr` when it is a servable URL, else NULL. A CASE over `~` (about 1 us a URL)
    rather than regexp_match (about 8 us: it builds an array), though `expr` runs twice."""
    return f"CASE WHEN ({expr}) ~ '{SERVABLE_URL_PATTERN_CASED}' THEN ({expr}) END"
