"""`com.atproto.label.queryLabels`: our labels by subject, exact or by prefix, paged by seq.

What it returns is `own_labels` as it stands: the current label of each (subject, value), and
negations, which stay as rows. That is what Ozone's answer holds too (a negation replaces the
label it negates in its table and is returned): a consumer that scrolls with the cursor learns
of a retraction the same way a subscriber does. Signatures are included (`sig` as `$bytes`):
this is the endpoint where anyone may check them against our DID document.

Patterns: `*` alone is every label; `prefix*` matches URIs starting with `prefix` (a `*`
anywhere else is refused, as Ozone does); anything else is an exact URI. `%`, `_` and `\\` in a
prefix are matched literally. `sources` filters by labeler: only our DID has labels here.
The cursor is the seq of the last label returned (given whenever a page is not empty).
"""

from __future__ import annotations

from typing import Any

from appview.context import Call, Route
from appview.errors import invalid_request
from appview.labeler.store import LABEL_COLUMNS, row_label

MAX_PATTERNS = 50  # the lexicon sets none; each prefix is one OR-ed index range
MAX_SOURCES = 50


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with `prefix`, its wildcards made literal
    (backslash is LIKE's default escape character)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _where(patterns: list[str], args: list[Any]) -> str | None:
    """The SQL condition for `patterns` (parameters appended to `args`); None when `*` (all)."""
    if "*" in patterns:
        return None
    exact: list[str] = []
    terms: list[str] = []
    for pattern in patterns:
        star = pattern.find("*")
        if star == -1:
            exact.append(pattern)
        elif star != len(pattern) - 1:
            raise invalid_request(f"invalid pattern {pattern[:200]!r}: '*' may only end a pattern")
        else:
            # one LIKE per prefix, each its own parameter: a prefix LIKE can use the
            # text_pattern_ops index, a LIKE ANY(array) cannot
            args.append(like_prefix(pattern[:-1]))
            terms.append(f"uri LIKE ${len(args)}")
    if exact:
        args.append(exact)
        terms.append(f"uri = ANY(${len(args)}::text[])")
    return "(" + " OR ".join(terms) + ")"


def query_sql(patterns: list[str], after: int, limit: int) -> tuple[str, list[Any]]:
    """The statement (and its arguments) reading `limit` labels after seq `after` whose URI
    matches one of `patterns`; InvalidRequest for a malformed pattern."""
    args: list[Any] = [after, limit]
    condition = _where(patterns, args)
    sql = (
        f"SELECT {LABEL_COLUMNS} FROM own_labels WHERE seq > $1"
        + (f" AND {condition}" if condition else "")
        + " ORDER BY seq LIMIT $2"
    )
    return sql, args


async def query_labels(call: Call) -> dict[str, Any]:
    params = call.params
    patterns: list[str] = params["uriPatterns"]
    sources: list[str] = params.get("sources") or []
    if not patterns:
        raise invalid_request("uriPatterns must name at least one pattern")
    if len(patterns) > MAX_PATTERNS or len(sources) > MAX_SOURCES:
        raise invalid_request(f"at most {MAX_PATTERNS} uriPatterns and {MAX_SOURCES} sources")
    cursor_text = params.get("cursor")
    after = 0
    if cursor_text is not None:
        if not cursor_text.isascii() or not cursor_text.isdigit() or len(cursor_text) > 18:
            raise invalid_request("invalid cursor")
        after = int(cursor_text)
    sql, args = query_sql(patterns, after, params["limit"])
    signer = call.state.labeler
    assert signer is not None  # the route exists only with a key (app.py)
    if sources and signer.did not in sources:
        return {"labels": []}
    rows = await call.pool.fetch(sql, *args)
    result: dict[str, Any] = {"labels": [row_label(signer, row).to_json() for row in rows]}
    if rows:
        result["cursor"] = str(rows[-1]["seq"])
    return result


ROUTES: dict[str, Route] = {
    "com.atproto.label.queryLabels": Route(query_labels, auth="none"),
}
