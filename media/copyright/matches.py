"""Which matches a scan records, and what they say: the fingerprint matches a moderator has to
see, the same audio brought by a later artist, and earlier decisions that already cover a match.

- Left out: this audio itself (its tracks, its earlier fingerprints); other audio whose first
  artist is this audio's first artist (an artist's own re-upload, re-encoded or not); other
  audio we first held after this one (the later one is the copy: it is flagged, not the
  original); references allow-listed for every artist of the audio (original artists).
- Copies of the same bytes (`copier`): the first artist who brought an audio owns it
  (store.first_artist); every later artist who uploaded the same bytes, or whose PDS blob is
  them, gets a match against the first artist's track, which concerns only that artist's
  tracks (copyright_track_status, and the default tracks of a review).
- Decisions carry over (`decided`): a match of a reference, an audio, a copier or an external
  recognition that a moderator already resolved for this audio or for one of its tracks (the
  newest review of an earlier flagged scan that held the same match) is recorded with that
  review: still a flag, but no new review is asked for.
"""

from __future__ import annotations

from typing import Any

from core.db import Connection
from media import fingerprint
from media.copyright import store

Tracks = list[tuple[str, str]]  # (track uri, artist DID)


def did_of(uri: str | None) -> str | None:
    if uri is None or not uri.startswith("at://"):
        return None
    return uri[5:].split("/", 1)[0] or None


def match_json(m: fingerprint.Match, *, track_uri: str | None, audio: str | None) -> dict[str, Any]:
    return {
        "reference_id": m.reference_id,
        "track_uri": track_uri,
        "audio": audio,  # the sha-256 of the other audio we hold, for a match that is no reference
        "fingerprint_id": m.fingerprint_id,
        "offset_s": round(m.offset_s, 3),
        "reference_offset_s": round(m.reference_offset_s, 3),
        "length_s": round(m.length_s, 3),
        "similarity": round(m.similarity, 4),
    }


async def artists_of(conn: Connection, sha256: str) -> tuple[Tracks, set[str], str | None]:
    """(the tracks that play the audio, every artist of it, its first artist)."""
    tracks = await store.tracks_of(conn, sha256)
    artists = {did for _, did in tracks}
    first = await store.first_artist(conn, sha256)
    if first is not None:
        artists.add(first)
    artists.update(await store.later_artists(conn, sha256))
    return tracks, artists, first


async def kept_matches(
    conn: Connection,
    found: list[fingerprint.Match],
    *,
    sha256: str,
    fingerprint_id: int,
    tracks: Tracks,
    artists: set[str],
    first: str | None,
) -> list[dict[str, Any]]:
    """The fingerprint matches a moderator has to see (see the module doc), in audio order."""
    same_tracks = {uri for uri, _ in tracks}
    other_audio = await store.audio_of_fingerprints(conn, [m.fingerprint_id for m in found if m.reference_id is None])
    allowed = await store.allowlisted(conn, artists, [m.reference_id for m in found if m.reference_id is not None])
    seen = await store.first_seen(conn, [sha256, *set(other_audio.values())])
    kept: list[dict[str, Any]] = []
    for m in found:
        if m.fingerprint_id == fingerprint_id or (m.track_uri is not None and m.track_uri in same_tracks):
            continue  # this audio itself
        if m.reference_id is not None:
            if artists and all((artist, m.reference_id) in allowed for artist in artists):
                continue  # the original artist's own work
            kept.append(match_json(m, track_uri=m.track_uri, audio=None))
            continue
        other = other_audio.get(m.fingerprint_id)
        if other == sha256:
            continue  # an older fingerprint of this audio
        other_tracks: Tracks = []
        other_first = did_of(m.track_uri)
        if other is not None:
            other_tracks, other_artists, known_first = await artists_of(conn, other)
            other_first = known_first or other_first
            if first is None and artists & other_artists:
                continue  # no first artist known here: any artist in common
            if (mine := seen.get(sha256)) is not None and (theirs := seen.get(other)) is not None and theirs > mine:
                continue  # we held this audio first: the other one is the copy
        if other_first is not None and other_first in ({first} if first is not None else artists):
            continue  # the same artist's audio again: theirs to publish twice
        track = m.track_uri or next((uri for uri, did in other_tracks if did == other_first), None)
        track = track or (other_tracks[0][0] if other_tracks else None)
        kept.append(match_json(m, track_uri=track, audio=other))
    kept.sort(key=lambda j: (j["offset_s"], j["reference_offset_s"]))
    return kept


async def copy_matches(
    conn: Connection, *, sha256: str, fingerprint_id: int, duration_s: float, tracks: Tracks, first: str | None
) -> list[dict[str, Any]]:
    """The same bytes brought by artists after the first (see the module doc): one match each."""
    if first is None:
        return []
    later = [did for did in await store.later_artists(conn, sha256) if did != first]
    later += sorted({did for _, did in tracks if did != first and did not in later})
    original = next((uri for uri, did in tracks if did == first), None)
    return [
        {
            "reference_id": None,
            "track_uri": original,
            "audio": sha256,
            "fingerprint_id": fingerprint_id,
            "offset_s": 0.0,
            "reference_offset_s": 0.0,
            "length_s": round(duration_s, 3),
            "similarity": 1.0,
            "copier": did,
            "first_artist": first,
        }
        for did in later
    ]


def match_keys(m: dict[str, Any]) -> list[tuple[str, str]]:
    """What a match is a match of, for carrying decisions over."""
    if m.get("copier"):
        return [("copier", str(m["copier"]))]
    if m.get("reference_id") is not None:
        return [("reference", str(m["reference_id"]))]
    if (ext := m.get("recognition")) is not None:
        return [("recognition", f"{str(ext.get('artist', '')).casefold()}\x00{str(ext.get('title', '')).casefold()}")]
    keys = [("audio", str(m["audio"]))] if m.get("audio") else []
    return keys + ([("track", str(m["track_uri"]))] if m.get("track_uri") else [])


async def carry_decisions(conn: Connection, *, sha256: str, tracks: Tracks, matches: list[dict[str, Any]]) -> None:
    """Mark the matches an earlier review already decided (`decided`: its id and resolution)."""
    if not matches:
        return
    rows = await conn.fetch(
        """SELECT r.id, r.resolution, s.matches FROM copyright_scans s
           CROSS JOIN LATERAL (
               SELECT id, resolution, track_uris FROM copyright_reviews cr WHERE cr.scan_id = s.id
               ORDER BY cr.id DESC LIMIT 1
           ) r
           WHERE s.status = 'flagged' AND (s.sha256 = $1 OR r.track_uris && $2::text[])
           ORDER BY r.id""",
        sha256, [uri for uri, _ in tracks],
    )  # fmt: skip
    decided: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        for old in row["matches"]:
            for key in match_keys(old):
                decided[key] = {"review_id": int(row["id"]), "resolution": row["resolution"]}
    for m in matches:
        for key in match_keys(m):
            if key in decided:
                m["decided"] = decided[key]
                break
