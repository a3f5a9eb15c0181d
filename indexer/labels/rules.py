"""The rules a received label is stored by, apart from the database so they can be tested alone.

specs/label.md keeps one coherent state per source, subject and value: the label with the
newest `cts` wins, and a negation is a label like any other (stored as a row with `neg`, so an
older label replayed later cannot revive what it negated). Two labels of one key with the same
`cts` (a label and its negation within one millisecond) are told apart by the labeler's stream
order: the later `seq` wins, and within one frame the later label.

Expired labels are stored like the others (the newest state may be an expired one); they are
not active, and views skip them (`exp > now()`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from protocol.labels import Label
from protocol.syntax import InvalidSyntax, parse_datetime
from protocol.syntax.identifiers import is_did

# Values by which a moderation labeler takes an account down (PLYR_MODERATION_LABELERS).
# `!hide` on an account is left to the views: it hides what is shown, it does not unlist.
ACCOUNT_TAKEDOWN_VALUES = frozenset({"!takedown", "!suspend"})

# timestamptz spans what Python datetimes do; the datetime syntax also allows year 0000 and
# times past 9999 in UTC, which are clamped (they stay ordered against every real time).
_EARLIEST = datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

Key = tuple[str, str, str]  # (uri, src, val): the primary key of `labels`


def label_time(value: str) -> datetime:
    """A label's `cts`/`exp` (already checked by protocol.labels.parse_label) as a UTC datetime."""
    try:
        return parse_datetime(value)
    except InvalidSyntax:
        return _EARLIEST if value < "5000" else _LATEST


def storable_problem(label: Label) -> str | None:
    """Why a valid label cannot be stored, or None. Postgres text refuses U+0000, which a
    `val` may carry (the spec bounds only its length): such a label is refused, not mangled."""
    if "\x00" in label.val:
        return "val contains U+0000, which the database cannot store"
    return None


@dataclass(frozen=True, slots=True)
class LabelRow:
    """A verified label with what it is ordered by: its `cts` and the stream `seq` it came in."""

    label: Label
    seq: int
    cts: datetime
    exp: datetime | None

    @classmethod
    def of(cls, label: Label, seq: int) -> LabelRow:
        exp = label_time(label.exp) if label.exp is not None else None
        return cls(label, seq, label_time(label.cts), exp)

    @property
    def key(self) -> Key:
        return (self.label.uri, self.label.src, self.label.val)

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.cts, self.seq)

    def view(self) -> dict[str, Any]:
        """What views return: the label's JSON form without `sig`, its strings exactly as signed."""
        return self.label.to_json(with_sig=False)


def newest(rows: Iterable[LabelRow], stored: Mapping[Key, tuple[datetime, int]]) -> list[LabelRow]:
    """The rows that change `labels`: per key, the newest of `rows` (the later one on a tie),
    kept only when it is newer than what is stored (`stored`: key -> (cts, seq))."""
    best: dict[Key, LabelRow] = {}
    for row in rows:
        held = best.get(row.key)
        if held is None or row.order >= held.order:
            best[row.key] = row
    return [row for key, row in best.items() if key not in stored or row.order > stored[key]]


def is_active(neg: bool, exp: datetime | None, now: datetime) -> bool:
    """A stored label applies: not a negation, not expired."""
    return not neg and (exp is None or exp > now)


def account_takedown_subjects(rows: Iterable[LabelRow], moderation: frozenset[str]) -> set[str]:
    """The accounts whose takedown state these rows may change: `!takedown`/`!suspend` on a
    DID by a moderation labeler (a label, its negation or an expiring one alike)."""
    return {
        row.label.uri
        for row in rows
        if row.label.src in moderation
        and row.label.val in ACCOUNT_TAKEDOWN_VALUES
        and is_did(row.label.uri)
    }
