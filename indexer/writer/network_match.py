"""Which plyr track a network play names, decided in the writer's transaction, and its counters.

A play's match is a function of the stored state only (the play's columns, `tracks`, and
`track_page_hosts`), recomputed for every play the state change could affect:

- plays written by the batch;
- plays with a (name, artist) pair equal to the old or new (title, artist) of a track the batch
  creates, deletes or changes in what matching reads (title, artist, duration): a play that
  arrived before its track matches when the track comes; a second track with the same title and
  artist makes a metadata match ambiguous, and it is dropped. Plays are found by the pair, not
  by the title alone: a common title ("Intro") is shared by a great many plays;
- plays matched to such a track;
- (at start) plays naming a page of a host added to or removed from `track_page_hosts`, and
  plays sharing a key with tracks whose keys were filled;
- the legacy copy (`fm.teal.alpha.feed.play`, same listener, playedTime and track name) of a
  `fm.teal.feed.play` written or deleted: teal's migration copies legacy plays to the new
  collection (and deletes the old ones after); while both exist, only the new one is matched,
  so one listen never counts twice.

So the result does not depend on the order records arrive in. Concurrent writers (the live
indexer, a backfill) take a transaction lock per pair key before they write, so a play and a
track with the same pair never miss each other in two uncommitted transactions. Page URLs need no
lock: a page number exists only once its track is committed.

`network_play_counts` holds, per track URI, the matched plays of visible listeners; it changes
only here (and when an account is hidden, shown or deleted: `move_actor_plays`), in the
transaction that changes the plays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from core.db import Connection
from indexer.match_keys import pair_key, track_keys
from indexer.network_plays import DURATION_TOLERANCE_S

# classid of the per-name-key transaction locks (two-int advisory lock space); "plym".
MATCH_LOCK_CLASS = 0x706C796D

MATCH_SQL = """
WITH cand AS (  -- each part an index lookup: never a scan of the table (it grows with the network)
  SELECT p.uri, p.did, p.collection, p.played_at, p.track_uri AS old_track,
         p.match_method AS old_method, p.name_key, p.artist_keys, p.duration_s, p.url_track_uri,
         p.url_host, p.url_short_id
  FROM network_plays p WHERE p.uri = ANY($1::text[])
  UNION SELECT p.uri, p.did, p.collection, p.played_at, p.track_uri AS old_track,
         p.match_method AS old_method, p.name_key, p.artist_keys, p.duration_s, p.url_track_uri,
         p.url_host, p.url_short_id
  FROM network_plays p WHERE p.pair_keys && $2::text[] AND p.url_track_uri IS NULL
  UNION SELECT p.uri, p.did, p.collection, p.played_at, p.track_uri AS old_track,
         p.match_method AS old_method, p.name_key, p.artist_keys, p.duration_s, p.url_track_uri,
         p.url_host, p.url_short_id
  FROM network_plays p WHERE p.track_uri = ANY($3::text[])
  UNION SELECT p.uri, p.did, p.collection, p.played_at, p.track_uri AS old_track,
         p.match_method AS old_method, p.name_key, p.artist_keys, p.duration_s, p.url_track_uri,
         p.url_host, p.url_short_id
  FROM network_plays p WHERE p.url_host = ANY($4::text[]) AND p.url_track_uri IS NULL
  UNION SELECT p.uri, p.did, p.collection, p.played_at, p.track_uri AS old_track,
         p.match_method AS old_method, p.name_key, p.artist_keys, p.duration_s, p.url_track_uri,
         p.url_host, p.url_short_id
  FROM unnest($9::text[], $10::timestamptz[]) AS t(did, at)
  JOIN network_plays p ON p.did = t.did AND p.played_at = t.at
  WHERE p.collection = 'fm.teal.alpha.feed.play'
), found AS (
  SELECT c.uri, c.did, c.old_track, c.old_method,
         coalesce(c.url_track_uri, page.uri, meta.uri) AS track,
         CASE WHEN c.url_track_uri IS NOT NULL OR page.uri IS NOT NULL THEN 'url'
              WHEN meta.uri IS NOT NULL THEN 'metadata' END AS method,
         twin.found AS twin
  FROM cand c
  LEFT JOIN LATERAL (  -- LIMIT: one index probe per play, never a join over all tracks
    SELECT t.uri FROM tracks t
    WHERE t.short_id = c.url_short_id
      AND EXISTS (SELECT 1 FROM track_page_hosts h WHERE h.host = c.url_host)
    LIMIT 1
  ) page ON c.url_short_id IS NOT NULL
  LEFT JOIN LATERAL (
    SELECT CASE WHEN count(*) = 1 THEN min(x.uri) END AS uri FROM (
      SELECT t.uri FROM tracks t
      WHERE c.name_key IS NOT NULL AND t.match_key = c.name_key
        AND t.artist_key = ANY(c.artist_keys)
        AND (c.duration_s IS NULL OR t.duration_s IS NULL
             OR abs(c.duration_s::numeric - t.duration_s) <= $7)
      LIMIT 2) x
  ) meta ON true
  LEFT JOIN LATERAL (  -- a legacy play copied to fm.teal.feed.play: the copy counts, not both
    SELECT true AS found FROM network_plays n
    WHERE c.collection = 'fm.teal.alpha.feed.play' AND n.did = c.did AND n.played_at = c.played_at
      AND n.collection = 'fm.teal.feed.play' AND n.name_key IS NOT DISTINCT FROM c.name_key
    LIMIT 1
  ) twin ON c.played_at IS NOT NULL
), m AS (
  SELECT uri, did, old_track, old_method,
         CASE WHEN twin THEN NULL ELSE track END AS new_track,
         CASE WHEN twin THEN NULL ELSE method END AS new_method
  FROM found
), changed AS (
  UPDATE network_plays p SET track_uri = m.new_track, match_method = m.new_method
  FROM m
  WHERE p.uri = m.uri
    AND (p.track_uri IS DISTINCT FROM m.new_track OR p.match_method IS DISTINCT FROM m.new_method)
  RETURNING p.did, m.old_track, m.old_method, m.new_track, m.new_method
), moves AS (
  SELECT d.track, d.n, d.url FROM (
    SELECT did, old_track AS track, -1 AS n, -(old_method = 'url')::int AS url FROM changed
      WHERE old_track IS NOT NULL
    UNION ALL SELECT did, new_track, 1, (new_method = 'url')::int FROM changed
      WHERE new_track IS NOT NULL
  ) d LEFT JOIN actors a ON a.did = d.did
  WHERE coalesce(a.visible, true)
  UNION ALL SELECT * FROM unnest($5::text[], $6::bigint[], $8::bigint[])
), deltas AS (
  SELECT track, sum(n) AS n, sum(url) AS url FROM moves GROUP BY track
  HAVING sum(n) <> 0 OR sum(url) <> 0
)
INSERT INTO network_play_counts AS c (track_uri, play_count, url_count)
SELECT track, n, url FROM deltas ORDER BY track
ON CONFLICT (track_uri) DO UPDATE SET
  play_count = c.play_count + excluded.play_count, url_count = c.url_count + excluded.url_count
"""


@dataclass(slots=True)
class MatchWork:
    """What a batch asks the match statement to decide (filled by writer/winners.py)."""

    plays: list[str] = field(default_factory=list)  # URIs of plays written
    pairs: set[str] = field(default_factory=set)  # (title, artist) pair keys of tracks changed
    locks: set[str] = field(default_factory=set)  # every pair key the batch writes (plays, tracks)
    tracks: list[str] = field(default_factory=list)  # URIs of tracks changed or deleted
    # track uri -> [-plays, -plays matched by URL] of visible listeners' plays deleted or hidden
    removed: dict[str, list[int]] = field(default_factory=dict)
    twins: set[tuple[str, datetime]] = field(default_factory=set)  # (did, playedTime) of PLAYs written

    def any(self) -> bool:
        return bool(self.plays or self.pairs or self.tracks or self.removed or self.twins)

    def twin(self, did: str, *played_at: datetime | None) -> None:
        """A fm.teal.feed.play written or deleted at these playedTimes (old and new): the legacy
        copy of the same listen, if any, is re-decided."""
        self.twins.update((did, at) for at in played_at if at is not None)

    def remove(self, track_uri: str, by_url: bool) -> None:
        delta = self.removed.setdefault(track_uri, [0, 0])
        delta[0] -= 1
        delta[1] -= by_url


def key_lock(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big", signed=True)


async def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Transaction locks on pair keys, in one order for every writer (no deadlocks). Taken
    before the batch writes anything: no row lock is held while waiting for one."""
    ordered = sorted({key_lock(k) for k in keys if k})
    if ordered:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, k) FROM unnest($2::int[]) AS k",
            MATCH_LOCK_CLASS,
            ordered,
        )


async def apply_matches(conn: Connection, work: MatchWork, hosts: Collection[str] = ()) -> None:
    """Re-decide the matches `work` can change and move the counters (one statement)."""
    if not (work.any() or hosts):
        return
    removed = sorted(work.removed)
    await conn.execute(
        MATCH_SQL,
        work.plays,
        sorted(work.pairs),
        work.tracks,
        sorted(hosts),
        removed,
        [work.removed[t][0] for t in removed],
        DURATION_TOLERANCE_S,
        [work.removed[t][1] for t in removed],
        [did for did, _at in sorted(work.twins)],
        [at for _did, at in sorted(work.twins)],
    )


_ACTOR_PLAYS = """
INSERT INTO network_play_counts AS c (track_uri, play_count, url_count)
SELECT track_uri, $2 * count(*), $2 * count(*) FILTER (WHERE match_method = 'url')
FROM network_plays WHERE did = $1 AND track_uri IS NOT NULL GROUP BY track_uri ORDER BY track_uri
ON CONFLICT (track_uri) DO UPDATE SET
  play_count = c.play_count + excluded.play_count, url_count = c.url_count + excluded.url_count
"""


async def move_actor_plays(conn: Connection, did: str, sign: int) -> None:
    """A listener hidden (sign -1) or shown again (+1): its matched plays leave or rejoin the
    counters (writer/counts.py move_actor)."""
    await conn.execute(_ACTOR_PLAYS, did, sign)


async def lock_actor_tracks(conn: Connection, did: str) -> MatchWork:
    """Before an account's tracks are deleted (writer/accounts.py): their pair keys locked, and
    the work that re-decides the plays they matched or made ambiguous once they are gone."""
    rows = await conn.fetch(
        """SELECT uri, nullif(match_key, '') || E'\n' || nullif(artist_key, '') AS pair
           FROM tracks WHERE did = $1""",
        did,
    )
    pairs = {r["pair"] for r in rows if r["pair"] is not None}
    await lock_keys(conn, pairs)
    return MatchWork(pairs=pairs, tracks=[r["uri"] for r in rows])


async def delete_actor_plays(conn: Connection, did: str, repo_rev: str | None) -> None:
    """A deleted account's plays: rows removed, tombstoned at max(their rev, the repo's newest
    rev) like its other records (its counters were moved out before: move_actor)."""
    await conn.execute(
        """WITH gone AS (DELETE FROM network_plays WHERE did = $1 RETURNING uri, collection, rev)
           INSERT INTO tombstones (uri, did, collection, rev)
           SELECT uri, $1, collection,
                  CASE WHEN $2::text IS NOT NULL AND $2::text COLLATE "C" > rev THEN $2::text ELSE rev END
           FROM gone
           ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, deleted_at = now()
           WHERE tombstones.rev < excluded.rev""",
        did,
        repo_rev,
    )


async def sync_page_hosts(conn: Connection, hosts: Collection[str]) -> set[str]:
    """Make `track_page_hosts` exactly `hosts` (lowercased) and re-match the plays naming pages of
    the hosts that came or went; returns those hosts."""
    wanted = {h.strip().lower() for h in hosts if h.strip()}
    async with conn.transaction():
        await conn.execute("LOCK TABLE track_page_hosts IN EXCLUSIVE MODE")
        stored = {r["host"] for r in await conn.fetch("SELECT host FROM track_page_hosts")}
        changed = wanted ^ stored
        if changed:
            await conn.execute("DELETE FROM track_page_hosts WHERE host <> ALL($1::text[])", sorted(wanted))
            await conn.execute(
                "INSERT INTO track_page_hosts (host) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                sorted(wanted),
            )
            await apply_matches(conn, MatchWork(), changed)
    return changed


async def fill_track_keys(conn: Connection, chunk: int = 1000) -> int:
    """Title and artist keys of tracks indexed before matching existed (NULL keys), computed
    from their records, then the plays those keys can match; returns the tracks filled."""
    filled = 0
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT uri, record FROM tracks WHERE match_key IS NULL ORDER BY uri LIMIT $1", chunk
            )
            if not rows:
                return filled
            keys = {r["uri"]: track_keys(r["record"]) for r in rows}
            pairs = {p for k in keys.values() if (p := pair_key(*k)) is not None}
            await lock_keys(conn, pairs)
            uris = list(keys)
            await conn.execute(
                """UPDATE tracks t SET match_key = u.k, artist_key = u.a
                   FROM unnest($1::text[], $2::text[], $3::text[]) AS u(uri, k, a)
                   WHERE t.uri = u.uri AND t.match_key IS NULL""",
                uris,
                [keys[u][0] for u in uris],
                [keys[u][1] for u in uris],
            )
            await apply_matches(conn, MatchWork(pairs=pairs, tracks=uris))
            filled += len(rows)
