"""Views: turn index rows into the lexicon view objects (fm.plyr.defs), in batches.

A page of tracks is hydrated by one query over `uri = ANY($1)` (track, artist, counts, labels)
plus, for an authenticated viewer, one more for their likes: the query count does not grow with
the page. Tracks of hidden actors (actors.visible = false) and tracks a moderation labeler
removed (appview/labels.py) never come out of here.

Labels are part of the view (appview/labels.py): the record's self labels in `labels`, the
active labels of every labeler on the track in `_labels` and on its artist's DID in
`author._labels` (present only when there are some); each request keeps those of its labelers.

With a `TrackViewCache` (PLYR_APPVIEW_VIEW_CACHE_SECONDS > 0) the views of recently served
tracks are reused for that long, so a page whose tracks were seen within the TTL costs no
hydration query at all, and only the misses are read otherwise. The price: counts, artist
details, labels, hiding and takedowns take up to the TTL to show (what the freshness header
already allows for): a view is never served more than the TTL after it was read, and a re-read
that no longer finds a track (deleted, hidden, removed) drops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from appview.labels import Moderation, hidden_labels
from appview.urls import servable_url, servable_url_sql
from core.db import Connection

log = logging.getLogger("plyr.appview")

ViewLoader = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]

# One track view (fm.plyr.defs#trackView) built by Postgres as JSON text: the rows never become
# Python objects column by column, which is most of the cost of a page in Python. The text is
# written out member by member with concat(), which skips NULL arguments: an optional member is
# `',"key":' || to_json(value)`, NULL (so absent) when the value is. That is what
# json_strip_nulls(json_build_object(...)) gave, without parsing every view a second time to
# strip it (measured: a fifth of the statement's time for a page of 50); to_json escapes
# strings exactly as json_build_object does. Times are UTC RFC 3339 with microseconds.
# Self labels become com.atproto.label.defs#label objects: src the author, uri/cid the record,
# cts the record's createdAt as published (read from the record only when there are labels;
# absent, like any member without a value, when the record has none).
_SELF_LABELS = """CASE WHEN cardinality(t.labels) = 0 THEN '[]'::json ELSE json_strip_nulls(
  (SELECT json_agg(json_build_object('ver', 1, 'src', t.did, 'uri', t.uri, 'cid', t.cid,
                                     'val', s.val, 'cts', t.record->>'createdAt') ORDER BY s.n)
   FROM unnest(t.labels) WITH ORDINALITY AS s(val, n))) END"""
_TIME = """to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
# A record's URL, or NULL unless http(s) (appview/urls.py): `javascript:` never leaves here.
_URL = servable_url_sql("({col})")
_AUDIO_URL = _URL.format(col="""CASE
      WHEN mm.url IS NOT NULL THEN mm.url
      WHEN t.audio_url <> '' THEN t.audio_url
      WHEN t.audio_blob_cid IS NOT NULL AND a.pds_url <> '' THEN
        rtrim(a.pds_url, '/') || '/xrpc/com.atproto.sync.getBlob?did=' || t.did
        || '&cid=' || t.audio_blob_cid
    END""")


def _member(key: str, value: str) -> str:
    """A concat() argument: `,"key":<value as JSON>`, or NULL (nothing) when `value` is NULL."""
    return f"""',"{key}":' || to_json({value})"""


TRACK_VIEW_SQL = f"""
concat(
  '{{"uri":', to_json(t.uri), ',"cid":', to_json(t.cid), ',"id":', t.short_id,
  ',"title":', to_json(t.title), ',"artist":', to_json(t.artist),
  {_member("album", "nullif(t.album, '')")}, {_member("description", "nullif(t.description, '')")},
  ',"author":{{"did":', to_json(t.did), {_member("handle", "nullif(a.handle, '')")},
  {_member("displayName", "nullif(a.display_name, '')")},
  {_member("avatar", _URL.format(col="coalesce(a.avatar_url, p.avatar_url)"))},
  ',"labels":[]', {_member("_labels", "lab.theirs")}, '}}',
  ',"fileType":', to_json(t.file_type), {_member("audioUrl", _AUDIO_URL)},
  {_member("imageUrl", _URL.format(col="t.image_url"))}, {_member("duration", "t.duration_s")},
  ',"likeCount":', coalesce(c.like_count, 0), ',"commentCount":', coalesce(c.comment_count, 0),
  ',"playCount":', coalesce(pc.play_count, 0), ',"networkPlayCount":', coalesce(npc.play_count, 0),
  ',"labels":', {_SELF_LABELS}, {_member("_labels", "lab.own")},
  ',"createdAt":"', {_TIME.format(col="t.created_at")},
  '","indexedAt":"', {_TIME.format(col="t.indexed_at")}, '"}}'
)"""

# The labelers' labels on a track (`lab.own`: those naming another version left out) and on its
# artist's DID (`lab.theirs`), and whether a moderation labeler removes either (`lab.removed`):
# one probe of the labels primary key for both subjects, where per-view subqueries took three
# (measured: about a sixth of the statement for a page of 50, with 100k labels). The rows come
# in (uri, src, val) order from the sorted subquery (kept a subquery by its ORDER BY, which the
# index gives without a sort), the order views list labels in (as labels_sql's).
# `@removing(lb)` is Moderation.rows: a removing label of a moderation labeler, in force now.
_TRACK_LABELS_SQL = """
LEFT JOIN LATERAL (
  SELECT json_agg(lb.view) FILTER (WHERE lb.uri = t.uri AND (lb.cid IS NULL OR lb.cid = t.cid)) AS own,
         json_agg(lb.view) FILTER (WHERE lb.uri = t.did) AS theirs,
         coalesce(bool_or(@removing(lb)), false) AS removed
  FROM (SELECT l.uri, l.src, l.val, l.cid, l.neg, l.exp, l.view FROM labels l
        WHERE l.uri IN (t.uri, t.did) AND NOT l.neg AND (l.exp IS NULL OR l.exp > now())
        ORDER BY l.uri, l.src, l.val) lb
) lab ON true
"""

# The joins a track view needs; `t` must be a tracks row. Hidden artists drop out with
# `coalesce(a.visible, true)`, removed tracks with TRACK_KEPT_SQL (in the WHERE). Counts
# come from their owners' tables (likes/comments and network plays: the indexer; plays:
# appview/methods/plays.py),
# and a PDS blob plays from media's copy of it (media_mirrors) while the track still carries it.
TRACK_JOINS_SQL = f"""
LEFT JOIN actors a ON a.did = t.did
LEFT JOIN profiles p ON p.did = t.did
LEFT JOIN track_counts c ON c.subject_uri = t.uri
LEFT JOIN play_counts pc ON pc.track_uri = t.uri
LEFT JOIN network_play_counts npc ON npc.track_uri = t.uri
LEFT JOIN media_mirrors mm ON mm.track_uri = t.uri AND mm.blob_cid = t.audio_blob_cid
{_TRACK_LABELS_SQL}"""

# Neither the track nor its artist removed by a moderation labeler (TRACK_JOINS_SQL's `lab`).
TRACK_KEPT_SQL = "NOT lab.removed"

_TRACKS_SQL = f"""
SELECT t.uri, {TRACK_VIEW_SQL} AS view
FROM tracks t {TRACK_JOINS_SQL}
WHERE t.uri = ANY($1::text[]) AND coalesce(a.visible, true) AND {TRACK_KEPT_SQL}
"""

_VIEWER_LIKES_SQL = """
SELECT DISTINCT ON (subject_uri) subject_uri, uri FROM likes
WHERE did = $1 AND subject_uri = ANY($2::text[])
ORDER BY subject_uri, sort_at DESC
"""


class TrackViewCache:
    """Track views by URI, served for at most `ttl` seconds after they were read.

    A view older than half the TTL is still served, and queued for a background re-read (one
    batched query for all such views, `loader`): pages that keep being asked for never wait on
    an expiry, and never all miss at once. Views handed out are shared: callers copy a view
    before changing it (add_viewer_state does). Bounded: when full, expired entries go, and if
    that is not enough, everything (the next pages simply read their views again).
    """

    REFRESH_BATCH = 500

    def __init__(self, ttl: float, max_entries: int = 50_000, loader: ViewLoader | None = None) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.loader = loader
        self._views: dict[str, tuple[float, dict[str, Any]]] = {}  # uri -> (read at, view)
        self._pending: set[str] = set()  # queued or being re-read
        self._queue: list[str] = []
        self._refresher: asyncio.Task[None] | None = None

    def lookup(self, uris: Sequence[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The views among `uris` read within the TTL, and the URIs that must be read now."""
        now = time.monotonic()
        fresh_after = now - self.ttl
        refresh_before = now - self.ttl / 2
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        get = self._views.get
        for uri in uris:
            hit = get(uri)
            if hit is not None and hit[0] > fresh_after:
                found[uri] = hit[1]
                if hit[0] < refresh_before and uri not in self._pending:
                    self._pending.add(uri)
                    self._queue.append(uri)
            else:
                missing.append(uri)
        if self._queue and self.loader is not None and (self._refresher is None or self._refresher.done()):
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())
        return found, missing

    def store(self, views: dict[str, dict[str, Any]]) -> None:
        if len(self._views) + len(views) > self.max_entries:
            fresh_after = time.monotonic() - self.ttl
            self._views = {k: v for k, v in self._views.items() if v[0] > fresh_after}
            if len(self._views) + len(views) > self.max_entries:
                self._views.clear()
        now = time.monotonic()
        for uri, view in views.items():
            self._views[uri] = (now, view)

    async def _refresh(self) -> None:
        assert self.loader is not None
        while self._queue:
            batch, self._queue = self._queue[: self.REFRESH_BATCH], self._queue[self.REFRESH_BATCH :]
            try:
                views = await self.loader(batch)
            except Exception as exc:  # the views expire as usual; the next reads retry
                log.warning("could not refresh track views", extra={"error": str(exc)[:200]})
                self._pending.difference_update(batch)
                self._pending.difference_update(self._queue)
                self._queue = []
                return
            self.store(views)
            for uri in batch:
                if uri not in views:  # deleted, or its artist hidden: gone from pages now
                    self._views.pop(uri, None)
            self._pending.difference_update(batch)

    async def close(self) -> None:
        if self._refresher is not None and not self._refresher.done():
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    def clear(self) -> None:
        self._views.clear()


# The likes of several (viewer, track) pairs at once: the lookups of concurrent requests.
# Plus, in the same round trip, each viewer's repo rev as indexed (subject_uri NULL, uri = the
# rev): the `atproto-repo-rev` header of their response (read-after-write, see xrpc.py); and
# their `hiddenLabels` preference as JSON text (subject_uri '', uri NULL when they set
# preferences without it): which labelled items their lists leave out (appview/labels.py).
_BATCH_VIEWER_LIKES_SQL = """
(SELECT DISTINCT ON (l.did, l.subject_uri) l.did, l.subject_uri, l.uri
 FROM unnest($1::text[], $2::text[]) AS q(did, subject_uri)
 JOIN likes l ON l.did = q.did AND l.subject_uri = q.subject_uri
 ORDER BY l.did, l.subject_uri, l.sort_at DESC)
UNION ALL
SELECT a.did, NULL, a.repo_rev FROM actors a WHERE a.did = ANY($3::text[]) AND a.repo_rev IS NOT NULL
UNION ALL
SELECT v.did, '', (v.value -> 'hiddenLabels')::text FROM viewer_state v
WHERE v.did = ANY($3::text[]) AND v.kind = 'preferences'
"""


@dataclass(frozen=True)
class ViewerState:
    """What one statement tells about a viewer: their likes among the tracks asked about
    ({track uri: like uri}), their repo rev as indexed (None: not in the index), and the
    values they hide (appview/labels.py's default when they never said)."""

    liked: dict[str, str]
    rev: str | None
    hidden: frozenset[str]


class ViewerLikes:
    """"Which of these tracks did this viewer like" (and their rev and hidden labels), for
    every request asking at about the same time, in one statement. Each answer is exactly what
    the request's own query would have read (no reuse across time); under load, many requests
    share one database round trip, which is most of the cost of a small query. One statement
    runs at a time; requests arriving while it runs form the next one."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._queue: list[tuple[str, list[str], asyncio.Future[ViewerState]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def of(self, viewer: str, uris: list[str]) -> dict[str, str]:
        """{track uri: like uri} for the tracks among `uris` that `viewer` liked."""
        return (await self.lookup(viewer, uris)).liked

    async def lookup(self, viewer: str, uris: list[str]) -> ViewerState:
        future: asyncio.Future[ViewerState] = asyncio.get_running_loop().create_future()
        self._queue.append((viewer, uris, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # let the requests woken in this loop iteration join
            batch, self._queue = self._queue, []
            # Each pair once, in index order: the lookups walk likes_by_actor_subject in order.
            pairs = sorted({(viewer, u) for viewer, uris, _f in batch for u in uris})
            dids = [p[0] for p in pairs]
            subjects = [p[1] for p in pairs]
            viewers = sorted({viewer for viewer, _u, _f in batch})
            try:
                # Ahead of single requests when the pool can (fairpool.py): many wait on this.
                fetch = getattr(self.pool, "fetch_first", self.pool.fetch)
                rows = await fetch(_BATCH_VIEWER_LIKES_SQL, dids, subjects, viewers)
            except Exception as exc:  # each waiting request fails as its own query would have
                for _v, _u, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: the request re-raises it
                continue
            liked: dict[tuple[str, str], str] = {}
            revs: dict[str, str] = {}
            hidden: dict[str, str | None] = {}
            for r in rows:
                if r["subject_uri"] is None:
                    revs[r["did"]] = r["uri"]
                elif r["subject_uri"] == "":
                    hidden[r["did"]] = r["uri"]
                else:
                    liked[(r["did"], r["subject_uri"])] = r["uri"]
            for viewer, uris, future in batch:
                if not future.done():
                    future.set_result(ViewerState(
                        {u: liked[(viewer, u)] for u in uris if (viewer, u) in liked},
                        revs.get(viewer),
                        hidden_labels(hidden.get(viewer)),
                    ))

    async def close(self) -> None:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner


async def read_track_views(
    conn: Connection | asyncpg.Pool, uris: list[str], moderation: Moderation, *, first: bool = False
) -> dict[str, dict[str, Any]]:
    """Views of the (visible, not removed) tracks among `uris`, by URI: one query (`first`:
    ahead of the requests waiting for a connection, when the pool can do that, see
    fairpool.py)."""
    fetch = getattr(conn, "fetch_first", conn.fetch) if first else conn.fetch
    return {r["uri"]: orjson.loads(r["view"]) for r in await fetch(moderation.sql(_TRACKS_SQL), uris)}


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def with_labels(view: dict[str, Any], labels: list[dict[str, Any]] | None) -> dict[str, Any]:
    """`view` with its labels as appview/labels.py wants them from a statement: `labels` (no
    self labels outside tracks) and the labelers' active labels, if any, in `_labels`."""
    view["labels"] = []
    if labels:
        view["_labels"] = labels
    return view


def artist_view(
    did: str,
    handle: str | None,
    display_name: str | None,
    avatar: str | None,
    labels: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An artistView; `labels`: the active labels on the account (labels_sql of the DID)."""
    view: dict[str, Any] = {"did": did}
    if handle:
        view["handle"] = handle
    if display_name:
        view["displayName"] = display_name
    avatar = servable_url(avatar)
    if avatar:
        view["avatar"] = avatar
    return with_labels(view, labels)


async def hydrate_tracks(
    conn: Connection | asyncpg.Pool,
    uris: Sequence[str],
    viewer: str | None,
    moderation: Moderation,
    cache: TrackViewCache | None = None,
    likes: ViewerLikes | None = None,
) -> list[dict[str, Any]]:
    """Track views for `uris`, in that order; unknown, removed tracks and hidden artists are
    left out. At most one hydration query (none when every view is cached), plus one for a
    viewer."""
    if not uris:
        return []
    wanted = list(dict.fromkeys(uris))
    if cache is not None and cache.ttl > 0:
        views, missing = cache.lookup(wanted)
        if missing:
            read = await read_track_views(conn, missing, moderation)
            cache.store(read)
            views.update(read)
    else:
        views = await read_track_views(conn, wanted, moderation)
    ordered = [views[u] for u in wanted if u in views]
    if viewer is not None and ordered:
        await add_viewer_state(conn, ordered, viewer, likes)
    return ordered


async def add_viewer_state(
    conn: Connection | asyncpg.Pool,
    views: list[dict[str, Any]],
    viewer: str,
    likes: ViewerLikes | None = None,
) -> str | None:
    """Give each view in `views` the viewer's state, replacing the list's items by copies:
    the views themselves may be shared (TrackViewCache) and must stay viewer-free. One query
    (`conn`), or a share of one batched with concurrent requests (`likes`), which also
    returns the viewer's indexed repo rev (None otherwise)."""
    uris = [v["uri"] for v in views]
    rev = None
    if likes is not None:
        state = await likes.lookup(viewer, uris)
        liked, rev = state.liked, state.rev
    else:
        liked = {r["subject_uri"]: r["uri"] for r in await conn.fetch(_VIEWER_LIKES_SQL, viewer, uris)}
    for i, view in enumerate(views):
        like = liked.get(view["uri"])
        views[i] = {**view, "viewer": {"like": like} if like else {}}
    return rev
