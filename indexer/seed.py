"""The records of `plyr seed-demo`: a realistic synthetic network, written the way the indexer
writes what it receives.

Every record is built as a repo would hold it (valid per our lexicons: `tid` keys, strong refs,
datetimes) and goes through the one write path, `apply_batch` (validation, row builders of
indexer/records.py, counters, mirror requests), in large set-based batches. Only what is not a
record - the actors' identity (handle, display name, PDS) - is written directly, once.

Shapes that matter for the read paths: artists with skewed catalogue sizes, likes and comments
concentrated on popular tracks (a power law), times spread over a year with every like/comment
after its track. `SeededTrack`s are handed back so that plays (the AppView's) can follow them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.db import Connection
from indexer.records import COMMENT, LIKE, LIST, PROFILE, TRACK, RecordOp
from indexer.writer import apply_batch, default_lexicons
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.syntax import tid_from_micros

BATCH = 5_000  # ops per apply_batch: large enough for set-based statements to pay off
LIST_ITEMS = 8
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_WORDS = ("Midnight Velvet Neon Echo Silver Paper Golden Hollow Electric Quiet Northern Crystal "
          "Broken Summer Winter Wild Lunar Static Amber Ocean Glass Fading Distant Secret Burning "
          "Gentle Cosmic Rusty Lost Daydream").split()  # fmt: skip
_NOUNS = ("Hearts Lights Waves Rivers Machines Gardens Signals Dreams Streets Skies Mirrors Tides "
          "Engines Forests Voices Shadows Harbors Circuits Letters Satellites Horses Windows Bells "
          "Clouds Embers").split()  # fmt: skip
_COMMENTS = ("love this part", "the drop here!", "chills", "what a bassline", "this melody",
             "perfect transition", "on repeat", "the vocals here")  # fmt: skip
_SELF_LABELS = "com.atproto.label.defs#selfLabels"


@dataclass(frozen=True)
class RecordSize:
    tracks: int
    artists: int
    likes: int
    comments: int


@dataclass(frozen=True)
class SeededTrack:
    uri: str
    did: str
    created_at: datetime
    duration_s: int


class _Ids:
    """Well-formed identifiers, distinct per seeding (`salt`)."""

    def __init__(self, salt: str) -> None:
        self.salt = salt  # 8 base32 characters
        self._tid_micros = int(time.time() * 1_000_000)
        self.rev = self.tid()  # one commit rev for the whole seeding: every record is new

    def did(self, n: int) -> str:
        tail = "".join(_B32[(n >> (5 * k)) & 31] for k in range(16))
        return f"did:plc:{self.salt}{tail}"

    def tid(self) -> str:
        # Distinct and increasing: one microsecond apart (rkeys carry no meaning here).
        self._tid_micros += 1
        return tid_from_micros(self._tid_micros)

    @staticmethod
    def cid(key: str) -> str:
        return cid_to_str(cid_for_cbor(key.encode()))


def artist_name(n: int) -> str:
    return f"The {_WORDS[(n * 7 + 3) % 30]} {_NOUNS[(n * 11 + 5) % 25]} {n}"


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _op(ids: _Ids, did: str, collection: str, rkey: str, record: dict[str, Any]) -> RecordOp:
    uri = f"at://{did}/{collection}/{rkey}"
    return RecordOp("create", did, collection, rkey, ids.rev, ids.cid(uri), record)


def _profiles(ids: _Ids, artists: int, now: datetime) -> Iterator[RecordOp]:
    for n in range(1, artists + 1):
        bio = f"Songs about {_NOUNS[n % 25].lower()} and {_NOUNS[(n + 3) % 25].lower()}"
        record = {"$type": PROFILE, "bio": bio, "createdAt": _iso(now - timedelta(days=400))}
        yield _op(ids, ids.did(n), PROFILE, "self", record)


def _tracks(
    ids: _Ids, rng: random.Random, size: RecordSize, now: datetime, out: list[SeededTrack]
) -> Iterator[RecordOp]:
    for i in range(1, size.tracks + 1):
        artist = 1 + int(rng.random() ** 2 * size.artists)  # skewed catalogue sizes
        did = ids.did(artist)
        created = now - timedelta(seconds=rng.random() * 365 * 86400)
        duration = 60 + (i * 7919) % 420
        title = f"{_WORDS[i % 30]} {_NOUNS[(i // 30) % 25]}"
        if i % 4 == 0:
            title += f" ({_WORDS[(i // 7) % 30]} Mix)"
        record: dict[str, Any] = {
            "$type": TRACK, "title": title, "artist": artist_name(artist), "fileType": "mp3",
            "audioUrl": f"https://cdn.plyr.test/audio/{i}.mp3",
            "imageUrl": f"https://cdn.plyr.test/covers/{i}.jpg",
            "duration": duration, "createdAt": _iso(created),
        }  # fmt: skip
        if i % 3 == 0:
            record["album"] = f"Album {i % 997}"
        if i % 50 == 0:
            record["labels"] = {"$type": _SELF_LABELS, "values": [{"val": "explicit"}]}
        op = _op(ids, did, TRACK, ids.tid(), record)
        out.append(SeededTrack(op.uri, did, created, duration))
        yield op


def popular(rng: random.Random, tracks: Sequence[SeededTrack]) -> SeededTrack:
    """A track, engagement concentrated on a few (a power law)."""
    return tracks[int(rng.random() ** 3 * len(tracks))]


def _engagement(
    ids: _Ids, rng: random.Random, size: RecordSize, now: datetime,
    tracks: Sequence[SeededTrack], cids: dict[str, str],
) -> Iterator[RecordOp]:  # fmt: skip
    for kind, count in ((LIKE, size.likes), (COMMENT, size.comments)):
        for i in range(count):
            did = ids.did(1 + int(rng.random() * size.artists))
            track = popular(rng, tracks)
            f = rng.random()
            at = track.created_at + f * (now - track.created_at)  # after its track
            record: dict[str, Any] = {
                "$type": kind, "subject": {"uri": track.uri, "cid": cids[track.uri]},
                "createdAt": _iso(at),
            }  # fmt: skip
            if kind == COMMENT:
                record["text"] = _COMMENTS[i % 8]
                record["timestampMs"] = int(f * track.duration_s * 1000)
            yield _op(ids, did, kind, ids.tid(), record)


def _lists(
    ids: _Ids, artists: int, now: datetime, tracks: Sequence[SeededTrack], cids: dict[str, str]
) -> Iterator[RecordOp]:
    """One list per two artists, of LIST_ITEMS tracks spread over the catalogue."""
    for n in range(1, max(artists // 2, 1) + 1):
        items = [
            {"subject": {"uri": t.uri, "cid": cids[t.uri]}}
            for t in (tracks[((n * LIST_ITEMS + p) * 7919) % len(tracks)] for p in range(LIST_ITEMS))
        ]
        record = {
            "$type": LIST, "name": f"{_WORDS[n % 30]} {_NOUNS[n % 25]}",
            "listType": "album" if n % 2 == 0 else "playlist", "items": items,
            "createdAt": _iso(now - timedelta(days=n % 300)),
        }  # fmt: skip
        yield _op(ids, ids.did(n), LIST, ids.tid(), record)


async def _write(
    conn: Connection, ops: Iterator[RecordOp], lexicons: Any, on_batch: Callable[[], None]
) -> int:
    written = 0
    batch: list[RecordOp] = []
    for op in ops:
        batch.append(op)
        if len(batch) == BATCH:
            written += await _apply(conn, batch, lexicons)
            batch = []
            on_batch()
    if batch:
        written += await _apply(conn, batch, lexicons)
    return written


async def _apply(conn: Connection, ops: list[RecordOp], lexicons: Any) -> int:
    result = await apply_batch(conn, ops, lexicons=lexicons, source="seed-demo")
    if result.invalid:  # a generator bug: the seed must be valid data
        raise RuntimeError(f"seed-demo made {result.invalid} invalid records")
    return result.applied


_IDENTITY = """
UPDATE actors a SET handle = i.handle, display_name = i.name, avatar_url = i.avatar,
  pds_url = 'https://pds.plyr.test', handle_check_wanted = 0  -- synthetic: nothing to look up
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS i(did, handle, name, avatar)
WHERE a.did = i.did
"""


async def seed_records(
    conn: Connection,
    size: RecordSize,
    *,
    salt: str,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[SeededTrack]:
    """Write the demo network's records through the writer; returns the tracks written."""
    rng = random.Random(salt)
    ids = _Ids(salt)
    lexicons = default_lexicons()
    now = datetime.now(UTC)
    await conn.execute("SET synchronous_commit = off")  # a crash only loses demo data

    progress(f"profiles: {size.artists}")
    await _write(conn, _profiles(ids, size.artists, now), lexicons, lambda: None)
    dids = [ids.did(n) for n in range(1, size.artists + 1)]
    await conn.execute(
        _IDENTITY,
        dids,
        [f"artist{n}-{salt}.plyr.test" for n in range(1, size.artists + 1)],
        [artist_name(n) for n in range(1, size.artists + 1)],
        [f"https://cdn.plyr.test/avatars/{n}.jpg" for n in range(1, size.artists + 1)],
    )

    progress(f"tracks: {size.tracks}")
    tracks: list[SeededTrack] = []
    await _write(conn, _tracks(ids, rng, size, now, tracks), lexicons, lambda: None)
    cids = {t.uri: ids.cid(t.uri) for t in tracks}  # as _op made them
    if not tracks:
        return tracks

    done = [0]

    def tick() -> None:
        done[0] += BATCH
        if done[0] % 100_000 == 0:
            progress(f"likes and comments: {done[0]} of {size.likes + size.comments}")

    progress(f"likes: {size.likes}, comments: {size.comments}")
    await _write(conn, _engagement(ids, rng, size, now, tracks, cids), lexicons, tick)
    progress("lists")
    await _write(conn, _lists(ids, size.artists, now, tracks, cids), lexicons, lambda: None)
    await conn.execute("RESET synchronous_commit")
    return tracks
