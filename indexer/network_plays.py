"""Network plays: teal.fm play records (scrobbles) from listeners' repos, and what names a plyr track.

Two collections carry them: `fm.teal.alpha.feed.play` (the legacy one, still in many repos) and
`fm.teal.feed.play` (its successor); `lexicons/fm/teal/` holds both (see its README). A valid
record is stored whole in `network_plays` (migrations/0044_network_plays.sql) with derived
columns for matching it to a plyr track:

- by URL (certain): `originUrl` (legacy) or `originUri` names `at://<did>/fm.plyr.track/<rkey>`,
  or one of our track pages `http(s)://<host>/track/<n>` / `/embed/track/<n>` where `<host>` is
  one the index was told serves our pages (`track_page_hosts`, from PLYR_TRACK_PAGE_HOSTS);
- else by metadata (probable): the normalized `trackName` equals a track's normalized title, one
  of the play's artist names equals the track's artist, and when both give a duration they are
  within DURATION_TOLERANCE_S; exactly one track must fit, or the play matches nothing.

The matching itself is SQL (indexer/writer/network_match.py); this module derives the columns.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import orjson

from indexer.match_keys import match_key
from indexer.records import RecordOp, RowError, _datetime, storable_record
from protocol.syntax import is_valid

PLAY_ALPHA = "fm.teal.alpha.feed.play"
PLAY = "fm.teal.feed.play"
NETWORK_PLAY_COLLECTIONS = (PLAY_ALPHA, PLAY)
# Firehose op paths ("<collection>/<rkey>") of network plays: the frame filter's extra prefixes.
PATH_PREFIXES = tuple(f"{c}/" for c in NETWORK_PLAY_COLLECTIONS)

TRACK_COLLECTION = "fm.plyr.track"
DURATION_TOLERANCE_S = 3  # metadata match: durations (whole seconds) at most this far apart
MAX_ARTIST_KEYS = 32  # artist names a play is matched on (the record keeps all of them)
MAX_URL_CHARS = 8192  # longer strings are no URL of ours (an at-uri is at most 8 KB)

_TRACK_PAGE = re.compile(r"/(?:embed/)?track/([1-9][0-9]{0,17})/?")
_BIGINT_MAX = 2**63 - 1


def artist_names(record: dict[str, Any]) -> list[str]:
    """The artist names a play gives: `artists[].artistName`, then the deprecated `artistNames`."""
    names: list[str] = []
    artists = record.get("artists")
    if isinstance(artists, list):
        names += [a["artistName"] for a in artists if isinstance(a, dict) and isinstance(a.get("artistName"), str)]
    legacy = record.get("artistNames")
    if isinstance(legacy, list):
        names += [n for n in legacy if isinstance(n, str)]
    return names


def artist_keys(record: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for name in artist_names(record):
        key = match_key(name)
        if key is not None and key not in keys:
            keys.append(key)
            if len(keys) == MAX_ARTIST_KEYS:
                break
    return keys


def track_url(value: Any) -> tuple[str | None, str | None, int | None]:
    """What a URL names: (a fm.plyr.track at-uri, None, None), (None, host, page number) for a
    `/track/<n>` or `/embed/track/<n>` page of any host (the host decides whether it is ours),
    or (None, None, None)."""
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        return None, None, None
    if value.startswith("at://"):
        parts = value[5:].split("/")
        if (
            len(parts) == 3
            and parts[1] == TRACK_COLLECTION
            and is_valid("did", parts[0])
            and is_valid("record-key", parts[2])
        ):
            return value, None, None
        return None, None, None
    try:
        url = urlsplit(value)
        host, port = url.hostname, url.port
    except ValueError:
        return None, None, None
    if url.scheme.lower() not in ("http", "https") or not host or url.username or url.password:
        return None, None, None
    page = _TRACK_PAGE.fullmatch(url.path)
    if page is None:
        return None, None, None
    number = int(page[1])
    if number > _BIGINT_MAX:
        return None, None, None
    return None, host if port is None else f"{host}:{port}", number


def play_url(record: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
    """The first URL field of a play that names a track (legacy `originUrl`, then `originUri`)."""
    for field in ("originUrl", "originUri"):
        found = track_url(record.get(field))
        if found != (None, None, None):
            return found
    return None, None, None


def network_play_row(op: RecordOp) -> tuple[Any, ...]:
    """The `network_plays` row of a valid play record (UPSERT_NETWORK_PLAYS's columns)."""
    r, exact = storable_record(op.record or {})
    name = r.get("trackName")
    if not isinstance(name, str):
        raise RowError("trackName is not a string")
    duration = r.get("duration")  # any 64-bit integer (lexicon): the column is bigint
    if not (type(duration) is int and -(2**63) <= duration <= _BIGINT_MAX):
        duration = None
    url_track_uri, url_host, url_short_id = play_url(r)
    return (
        op.uri, op.did, op.rkey, op.collection, op.cid, op.rev, name, match_key(name),
        orjson.dumps(artist_keys(r)).decode(), duration, _datetime(r, "playedTime", required=False),
        url_track_uri, url_host, url_short_id, r, exact,
    )  # fmt: skip
