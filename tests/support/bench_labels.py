"""Labels for the AppView benchmarks: N labels of one labeler written straight into `labels`
(the table the label subscriber fills, migrations/0040_moderation.sql), spread the way a
moderation labeler's output is, and deleted again afterwards.

The labeler is configured for the AppView under test (`settings()`: subscribed to and
moderating), so its labels are in every view, its `!takedown`s remove content and, for anonymous
requests, its adult-content values hide items from lists (appview/labels.py). The rows are what
the subscriber would store: `view` is the label's JSON without `sig` (protocol.labels.Label), and
`sig` is 64 arbitrary bytes (views never check it; the subscriber did, on the way in).

The spread of N labels (each subject and value at most once: the table's key is uri/src/val):
- 90% content labels on tracks (random, uniformly): `spam`, `ai-generated`, `!warn`, `porn`,
  `nudity`, `sexual`, `graphic-media`; a third name the track's current cid;
- 1% `!takedown` on tracks, never on a track page the benchmark asks for (`spare`): those
  pages would answer 404, which the benchmark counts as a failure;
- 5% labels on accounts (artists' and likers' DIDs): `spam`, `!warn`, `impersonation`, `rude`
  (no account removal: the artist and likes pages of a removed account answer 404 too);
- 4% on comments: `spam`, `rude`, and a few `!hide` (removed from the comment lists);
- of all of them, 4% are negations (withdrawn), 3% expired, 3% expiring in the future.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from protocol.labels import Label

# One labeler, configured for the AppView under test; its rows are the only ones written here
# and the only ones deleted.
LABELER_DID = "did:plc:benchlabeleraaaaaaaaaaaa"

_TRACK_VALUES = {"spam": 25, "ai-generated": 20, "!warn": 10, "porn": 15, "nudity": 12, "sexual": 10,
                 "graphic-media": 8}  # fmt: skip
_ACCOUNT_VALUES = {"spam": 50, "!warn": 25, "impersonation": 15, "rude": 10}
_COMMENT_VALUES = {"spam": 60, "rude": 35, "!hide": 5}
_SHARES = {"track": 0.90, "takedown": 0.01, "account": 0.05, "comment": 0.04}
_NEGATED, _EXPIRED, _EXPIRING = 0.04, 0.03, 0.03
_COLUMNS = ("uri", "src", "val", "cid", "neg", "cts", "exp", "sig", "view", "seq")


def settings() -> dict[str, str]:
    """The AppView's settings that make it hear (and obey) the benchmark's labeler."""
    return {"PLYR_LABELERS": LABELER_DID, "PLYR_MODERATION_LABELERS": LABELER_DID}


@dataclass(frozen=True)
class Inserted:
    count: int
    by_kind: dict[str, int]
    negated: int
    expired: int
    active_takedowns: int

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in self.by_kind.items())
        return (f"labels: {self.count} inserted from {LABELER_DID} ({kinds}; {self.negated} negated, "
                f"{self.expired} expired; {self.active_takedowns} tracks taken down)")


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _weighted(rng: random.Random, values: dict[str, int]) -> str:
    return rng.choices(list(values), weights=list(values.values()))[0]


def draw_labels(n: int, tracks: list[tuple[str, str]], accounts: list[str], comments: list[str],
                spare: set[str], rng: random.Random) -> tuple[list[tuple[object, ...]], Counter[str]]:
    """`n` label rows (columns _COLUMNS) over these subjects (tracks as (uri, cid)), and how
    many of each kind and state they hold."""
    now = datetime.now(UTC)
    tally: Counter[str] = Counter()
    targets = [t for t in tracks if t[0] not in spare]
    keys: set[tuple[str, str]] = set()
    rows: list[tuple[object, ...]] = []
    kinds, weights = list(_SHARES), list(_SHARES.values())
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 20 * n + 1000:
            raise SystemExit(f"cannot place {n} distinct labels on this dataset (placed {len(rows)})")
        kind = rng.choices(kinds, weights)[0]
        cid: str | None = None
        if kind == "track":
            uri, track_cid = rng.choice(tracks)
            val = _weighted(rng, _TRACK_VALUES)
            cid = track_cid if rng.random() < 1 / 3 else None
        elif kind == "takedown":
            if not targets:
                continue
            uri, val = rng.choice(targets)[0], "!takedown"
        elif kind == "account":
            uri, val = rng.choice(accounts), _weighted(rng, _ACCOUNT_VALUES)
        else:
            if not comments:
                continue
            uri, val = rng.choice(comments), _weighted(rng, _COMMENT_VALUES)
        if (uri, val) in keys:
            continue
        keys.add((uri, val))
        cts = now - timedelta(seconds=rng.uniform(60, 90 * 86_400))
        state = rng.random()
        neg = state < _NEGATED
        exp = None
        if _NEGATED <= state < _NEGATED + _EXPIRED:
            exp = cts + timedelta(seconds=rng.uniform(1, (now - cts).total_seconds() - 1))  # passed
        elif _NEGATED + _EXPIRED <= state < _NEGATED + _EXPIRED + _EXPIRING:
            exp = now + timedelta(days=rng.uniform(1, 365))
        label = Label(src=LABELER_DID, uri=uri, val=val, cts=_iso(cts), cid=cid, neg=neg,
                      exp=_iso(exp) if exp else None)
        # The stored times are the label's strings parsed back (millisecond precision, as signed).
        cts_at = datetime.fromisoformat(label.cts.replace("Z", "+00:00"))
        exp_at = datetime.fromisoformat(label.exp.replace("Z", "+00:00")) if label.exp else None
        view = orjson.dumps(label.unsigned_object()).decode()
        rows.append((uri, LABELER_DID, val, cid, neg, cts_at, exp_at, rng.randbytes(64), view, len(rows) + 1))
        tally[kind] += 1
        tally["negated"] += neg
        tally["expired"] += exp_at is not None and exp_at < now
    return rows, tally


async def insert_labels(url: str, n: int, spare: set[str], seed: int) -> Inserted:
    """Write `n` labels of LABELER_DID (first deleting any left by an interrupted run)."""
    conn = await asyncpg.connect(url)
    try:
        tracks = [(r["uri"], r["cid"]) for r in await conn.fetch("SELECT uri, cid FROM tracks ORDER BY uri")]
        accounts = [r["did"] for r in await conn.fetch("SELECT did FROM actors ORDER BY did")]
        comments = [r["uri"] for r in await conn.fetch("SELECT uri FROM comments ORDER BY uri")]
        rows, tally = draw_labels(n, tracks, accounts, comments, spare, random.Random(seed))
        async with conn.transaction():
            await conn.execute("DELETE FROM labels WHERE src = $1", LABELER_DID)
            await conn.copy_records_to_table("labels", records=rows, columns=_COLUMNS)
        # As autovacuum would soon: the planner sees the table as it now is.
        await conn.execute("ANALYZE labels")
        taken = await conn.fetchval(
            "SELECT count(*) FROM labels l JOIN tracks t ON t.uri = l.uri WHERE l.src = $1 AND l.val = '!takedown'"
            " AND NOT l.neg AND (l.exp IS NULL OR l.exp > now())", LABELER_DID)  # fmt: skip
    finally:
        await conn.close()
    return Inserted(
        count=len(rows),
        by_kind={f"{k} labels": tally[k] for k in ("track", "takedown", "account", "comment")},
        negated=tally["negated"],
        expired=tally["expired"],
        active_takedowns=int(taken),
    )


async def delete_labels(url: str) -> int:
    """Delete every label of LABELER_DID; returns how many there were."""
    conn = await asyncpg.connect(url)
    try:
        status = await conn.execute("DELETE FROM labels WHERE src = $1", LABELER_DID)
        await conn.execute("ANALYZE labels")
    finally:
        await conn.close()
    return int(status.split()[-1])


@contextlib.contextmanager
def labelled(url: str, n: int, spare: set[str], seed: int) -> Iterator[Inserted]:
    """`n` labels in the database for the duration of the block, deleted afterwards whatever
    happens in it (an exception, Ctrl-C)."""
    import asyncio

    try:
        inserted = asyncio.run(insert_labels(url, n, spare, seed))
        yield inserted
    finally:
        removed = asyncio.run(delete_labels(url))
        print(f"labels: {removed} deleted", file=sys.stderr)
