"""Counters the writer keeps, in the transaction of the rows they count, so reads never count rows.

- `track_counts` (likes, comments per subject): rows of visible actors only;
- `actor_counts` (tracks, lists, likes, comments, track seconds per actor): all the actor's
  rows, whatever its visibility (a hidden actor has no profile to show them on);
- `network_play_counts` (matched network plays per track URI, visible listeners only):
  writer/network_match.py;
- `index_totals` (tracks, artists, track seconds, likes, comments): visible actors only. The
  figures are spread over TOTAL_SLOTS rows (one per transaction, by its id) so that concurrent
  writers rarely wait on each other; the total is their sum. Slots are upserted: a missing
  slot row is a zero.

An actor hidden or shown again moves its whole `actor_counts` row out of or into the totals,
and its likes/comments out of or into `track_counts`. `recount` rebuilds everything from the
rows (after a restore, or to check the counters: it must change nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.db import Connection
from indexer.writer.network_match import move_actor_plays

TOTAL_SLOTS = 16  # rows of index_totals (migrations/0005_counters_and_mirror_outbox.sql)

# One slot per transaction, the same for all its statements: two transactions never lock two
# slots in opposite orders.
_SLOT = f"(txid_current() % {TOTAL_SLOTS})"

# Sorted input: concurrent writers lock count rows in the same order (no deadlocks).
ADD_TRACK_COUNTS = """
INSERT INTO track_counts (subject_uri, like_count, comment_count)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
ON CONFLICT (subject_uri) DO UPDATE SET
  like_count = track_counts.like_count + excluded.like_count,
  comment_count = track_counts.comment_count + excluded.comment_count
"""

# The actors' counters, then the totals by what changed for visible actors: an actor is one of
# the "artists" while it has tracks (track_count - d.tracks is the count before this change).
# Top-level CTEs of writer/batch_sql.py's statement (data-modifying CTEs cannot nest).
ADD_ACTOR_COUNTS_CTES = f"""
actor_deltas AS (
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                       $6::numeric[], $7::bool[])
    AS d(did, tracks, lists, likes, comments, seconds, visible)
), actor_rows AS (
  INSERT INTO actor_counts AS c (did, track_count, list_count, like_count, comment_count,
                                 track_seconds)
  SELECT did, tracks, lists, likes, comments, seconds FROM actor_deltas
  ON CONFLICT (did) DO UPDATE SET
    track_count = c.track_count + excluded.track_count,
    list_count = c.list_count + excluded.list_count,
    like_count = c.like_count + excluded.like_count,
    comment_count = c.comment_count + excluded.comment_count,
    track_seconds = c.track_seconds + excluded.track_seconds
  RETURNING c.did, c.track_count
), totals AS (
  INSERT INTO index_totals AS x (slot, tracks, artists, track_seconds, likes, comments)
  SELECT {_SLOT}, coalesce(sum(d.tracks), 0), coalesce(sum((c.track_count > 0)::int
           - (c.track_count - d.tracks > 0)::int), 0),
         coalesce(sum(d.seconds), 0), coalesce(sum(d.likes), 0), coalesce(sum(d.comments), 0)
  FROM actor_deltas d JOIN actor_rows c USING (did) WHERE d.visible
  HAVING count(*) > 0
  ON CONFLICT (slot) DO UPDATE SET
    tracks = x.tracks + excluded.tracks, artists = x.artists + excluded.artists,
    track_seconds = x.track_seconds + excluded.track_seconds, likes = x.likes + excluded.likes,
    comments = x.comments + excluded.comments
)"""

# An actor's whole row into ($2 = 1) or out of ($2 = -1) the totals.
_MOVE_ACTOR_TOTALS = f"""
INSERT INTO index_totals AS x (slot, tracks, artists, track_seconds, likes, comments)
SELECT {_SLOT}, $2 * c.track_count, $2 * (c.track_count > 0)::int, $2 * c.track_seconds,
       $2 * c.like_count, $2 * c.comment_count
FROM actor_counts c WHERE c.did = $1
ON CONFLICT (slot) DO UPDATE SET
  tracks = x.tracks + excluded.tracks, artists = x.artists + excluded.artists,
  track_seconds = x.track_seconds + excluded.track_seconds, likes = x.likes + excluded.likes,
  comments = x.comments + excluded.comments
"""


@dataclass(slots=True)
class ActorDelta:
    tracks: int = 0
    lists: int = 0
    likes: int = 0
    comments: int = 0
    seconds: int = 0

    def any(self) -> bool:
        return bool(self.tracks or self.lists or self.likes or self.comments or self.seconds)


@dataclass(slots=True)
class CountDeltas:
    """What a batch changes in the counters. `likes`/`comments` are per subject and only for
    visible actors; `actors` per DID for all; `visible` says which DIDs the totals include."""

    likes: dict[str, int] = field(default_factory=dict)
    comments: dict[str, int] = field(default_factory=dict)
    actors: dict[str, ActorDelta] = field(default_factory=dict)
    visible: dict[str, bool] = field(default_factory=dict)

    def actor(self, did: str, visible: bool) -> ActorDelta:
        self.visible[did] = visible
        delta = self.actors.get(did)
        if delta is None:
            delta = self.actors[did] = ActorDelta()
        return delta

    def subject(self, counts: dict[str, int], subject: str, n: int) -> None:
        counts[subject] = counts.get(subject, 0) + n


def count_columns(deltas: CountDeltas) -> list[list[Any]]:
    """The arrays of ADD_TRACK_COUNTS then ADD_ACTOR_COUNTS_CTES, sorted by key: concurrent
    writers lock count rows in the same order."""
    likes, comments = deltas.likes, deltas.comments
    subjects = sorted(s for s in set(likes) | set(comments) if likes.get(s) or comments.get(s))
    dids = sorted(did for did, d in deltas.actors.items() if d.any())
    rows = [deltas.actors[did] for did in dids]
    return [
        subjects,
        [likes.get(s, 0) for s in subjects],
        [comments.get(s, 0) for s in subjects],
        dids,
        [d.tracks for d in rows],
        [d.lists for d in rows],
        [d.likes for d in rows],
        [d.comments for d in rows],
        [d.seconds for d in rows],
        [deltas.visible.get(did, True) for did in dids],
    ]


async def add_track_counts(
    conn: Connection, like_delta: Mapping[str, int], comment_delta: Mapping[str, int]
) -> None:
    subjects = sorted(
        s for s in set(like_delta) | set(comment_delta) if like_delta.get(s) or comment_delta.get(s)
    )
    if subjects:
        await conn.execute(
            ADD_TRACK_COUNTS,
            subjects,
            [like_delta.get(s, 0) for s in subjects],
            [comment_delta.get(s, 0) for s in subjects],
        )


async def move_actor(conn: Connection, did: str, sign: int) -> None:
    """Add (sign=1) or remove (sign=-1) the actor's rows from the counts of visible actors:
    its likes and comments in `track_counts`, everything in the totals."""
    rows = await conn.fetch(
        """SELECT subject_uri, sum(l) AS likes, sum(c) AS comments FROM (
             SELECT subject_uri, 1 AS l, 0 AS c FROM likes WHERE did = $1
             UNION ALL SELECT subject_uri, 0, 1 FROM comments WHERE did = $1) s
           GROUP BY subject_uri ORDER BY subject_uri""",
        did,
    )
    if rows:
        await add_track_counts(
            conn,
            {r["subject_uri"]: sign * int(r["likes"]) for r in rows},
            {r["subject_uri"]: sign * int(r["comments"]) for r in rows},
        )
    await conn.execute(_MOVE_ACTOR_TOTALS, did, sign)
    await move_actor_plays(conn, did, sign)  # its network plays (writer/network_match.py)


async def forget_actor(conn: Connection, did: str) -> None:
    """The actor's rows are gone (a deleted account): so are its counters."""
    await conn.execute("DELETE FROM actor_counts WHERE did = $1", did)


# Rebuilds from the rows, with the writers held off (EXCLUSIVE still lets reads through). A
# writer that wrote rows but not yet counts waits on the lock and then adds its change to the
# rebuilt figures, which did not see its uncommitted rows: the result is exact either way.
RECOUNT_SQL = """
LOCK TABLE track_counts, actor_counts, index_totals, network_play_counts IN EXCLUSIVE MODE;
UPDATE track_counts SET like_count = 0, comment_count = 0
  WHERE like_count <> 0 OR comment_count <> 0;
INSERT INTO track_counts (subject_uri, like_count, comment_count)
SELECT subject_uri, sum(l), sum(c) FROM (
  SELECT x.subject_uri, 1 AS l, 0 AS c FROM likes x
    LEFT JOIN actors a ON a.did = x.did WHERE coalesce(a.visible, true)
  UNION ALL SELECT x.subject_uri, 0, 1 FROM comments x
    LEFT JOIN actors a ON a.did = x.did WHERE coalesce(a.visible, true)) s
GROUP BY subject_uri
ON CONFLICT (subject_uri) DO UPDATE SET
  like_count = excluded.like_count, comment_count = excluded.comment_count;
DELETE FROM actor_counts;
INSERT INTO actor_counts (did, track_count, list_count, like_count, comment_count, track_seconds)
SELECT did, sum(t), sum(li), sum(l), sum(c), sum(s) FROM (
  SELECT did, 1 AS t, 0 AS li, 0 AS l, 0 AS c, coalesce(duration_s, 0)::numeric AS s FROM tracks
  UNION ALL SELECT did, 0, 1, 0, 0, 0 FROM lists
  UNION ALL SELECT did, 0, 0, 1, 0, 0 FROM likes
  UNION ALL SELECT did, 0, 0, 0, 1, 0 FROM comments) r
GROUP BY did;
DELETE FROM index_totals;
INSERT INTO index_totals (slot, tracks, artists, track_seconds, likes, comments)
SELECT 0, coalesce(sum(c.track_count), 0), count(*) FILTER (WHERE c.track_count > 0),
       coalesce(sum(c.track_seconds), 0), coalesce(sum(c.like_count), 0),
       coalesce(sum(c.comment_count), 0)
FROM actor_counts c LEFT JOIN actors a ON a.did = c.did WHERE coalesce(a.visible, true);
UPDATE network_play_counts SET play_count = 0, url_count = 0 WHERE play_count <> 0 OR url_count <> 0;
INSERT INTO network_play_counts (track_uri, play_count, url_count)
SELECT p.track_uri, count(*), count(*) FILTER (WHERE p.match_method = 'url')
FROM network_plays p LEFT JOIN actors a ON a.did = p.did
WHERE p.track_uri IS NOT NULL AND coalesce(a.visible, true) GROUP BY p.track_uri
ON CONFLICT (track_uri) DO UPDATE SET play_count = excluded.play_count, url_count = excluded.url_count;
"""


async def recount(conn: Connection) -> None:
    """Rebuild track_counts' likes/comments, actor_counts, index_totals and network_play_counts
    from the rows (network plays' matches are kept as stored)."""
    async with conn.transaction():
        await conn.execute(RECOUNT_SQL)
