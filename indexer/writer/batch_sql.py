"""A batch's rows, tombstones, counters and mirror requests in ONE statement (one round trip).

Each part is a data-modifying CTE over its own arrays (writer/statements.py, counts.py,
outbox.py); Postgres runs every such CTE exactly once, whether or not the statement reads it,
and an empty array writes nothing, so the text never changes and stays prepared. Parts never
touch the same row twice: deletes and upserts of a table are for distinct URIs (one winner per
URI), and foreign keys are checked at the end of the statement. `list_items` stay separate
statements (writer/winners.py): a list's old items must be gone before its new ones go in.

Round trips, not rows, are what a batch paid for on a busy machine: each one waits for both
processes to be scheduled (see docs/BENCHMARKS.md, "End to end into Postgres").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from indexer.network_plays import NETWORK_PLAY_COLLECTIONS
from indexer.records import COMMENT, LIKE, LIST, PROFILE, TRACK
from indexer.writer.counts import (
    ADD_ACTOR_COUNTS_CTES,
    ADD_TRACK_COUNTS,
    CountDeltas,
    count_columns,
)
from indexer.writer.outbox import INSERT_MIRRORS, MIRROR_OUTBOX_CHANNEL, MirrorRequest
from indexer.writer.statements import (
    TABLE,
    UPSERT_COMMENTS,
    UPSERT_LIKES,
    UPSERT_LISTS,
    UPSERT_NETWORK_PLAYS,
    UPSERT_PROFILES,
    UPSERT_TOMBSTONES,
    UPSERT_TRACKS,
)

_PARAM = re.compile(r"\$(\d+)")
# Network plays of both collections share one table (and one part): `group` names the part.
NETWORK_PLAYS = "network_plays"
_ORDER = (TRACK, LIKE, COMMENT, LIST, PROFILE, NETWORK_PLAYS)
_TABLES = {**TABLE, NETWORK_PLAYS: NETWORK_PLAYS}
# Arrays each part takes (the statement's parameter count).
_UPSERTS = {
    TRACK: (UPSERT_TRACKS, 20),
    LIKE: (UPSERT_LIKES, 10),
    COMMENT: (UPSERT_COMMENTS, 13),
    LIST: (UPSERT_LISTS, 12),
    PROFILE: (UPSERT_PROFILES, 10),
    NETWORK_PLAYS: (UPSERT_NETWORK_PLAYS, 16),
}
_WIDTH = {UPSERT_TOMBSTONES: 5, ADD_TRACK_COUNTS: 3, ADD_ACTOR_COUNTS_CTES: 7, INSERT_MIRRORS: 4}


def _shift(sql: str, offset: int) -> str:
    return _PARAM.sub(lambda m: f"${int(m[1]) + offset}", sql)


def _build() -> str:
    ctes: list[str] = []
    n = 0
    for collection in _ORDER:  # deletes first in the text; they run with the same snapshot
        n += 1
        ctes.append(f"del_{collection.rsplit('.', 1)[-1]} AS (DELETE FROM {_TABLES[collection]} "
                    f"WHERE uri = ANY(${n}::text[]))")  # fmt: skip
    ctes.append(f"tombs AS ({_shift(UPSERT_TOMBSTONES, n)})")
    n += _WIDTH[UPSERT_TOMBSTONES]
    for collection in _ORDER:
        sql, width = _UPSERTS[collection]
        ctes.append(f"up_{collection.rsplit('.', 1)[-1]} AS ({_shift(sql, n)})")
        n += width
    ctes.append(f"subject_counts AS ({_shift(ADD_TRACK_COUNTS, n)})")
    n += _WIDTH[ADD_TRACK_COUNTS]
    ctes.append(_shift(ADD_ACTOR_COUNTS_CTES, n))
    n += _WIDTH[ADD_ACTOR_COUNTS_CTES]
    ctes.append(f"mirrors AS ({_shift(INSERT_MIRRORS, n)})")
    n += _WIDTH[INSERT_MIRRORS]
    # Media is woken at commit when requests were queued.
    notify = f"SELECT pg_notify('{MIRROR_OUTBOX_CHANNEL}', '') WHERE cardinality(${n + 1}::text[]) > 0"
    return "WITH " + ",\n".join(ctes) + "\n" + notify


WRITE_BATCH_SQL = _build()


def group(collection: str) -> str:
    """The part of the statement a collection's rows are written by."""
    return NETWORK_PLAYS if collection in NETWORK_PLAY_COLLECTIONS else collection


@dataclass(slots=True)
class BatchWrites:
    """What apply_winners decided to write; `args()` gives WRITE_BATCH_SQL its arrays."""

    deletes: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in _ORDER})
    tombstones: list[tuple[str, str, str, str, str | None]] = field(default_factory=list)
    upserts: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _ORDER})
    counts: CountDeltas = field(default_factory=CountDeltas)
    mirrors: list[MirrorRequest] = field(default_factory=list)

    def args(self) -> list[list[Any]]:
        out: list[list[Any]] = [self.deletes[c] for c in _ORDER]
        out += _columns(self.tombstones, _WIDTH[UPSERT_TOMBSTONES])
        for collection in _ORDER:
            rows = self.upserts[collection]
            if collection == LIST:
                rows = [row for row, _items in rows]
            out += _columns(rows, _UPSERTS[collection][1])
        out += count_columns(self.counts)
        out += _columns(self.mirrors, _WIDTH[INSERT_MIRRORS])
        out.append([m[0] for m in self.mirrors])
        return out


def _columns(rows: list[Any], width: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]
