"""The review of copyright scans (issue 16), owner of `copyright_reviews` and
`copyright_allowlist`; `copyright_scans` is media's (media/copyright/) and only read here.

A flagged scan is resolved as
- `violation`: the tracks that play the scanned audio (or those named) are taken down through
  actions.takedown (our labeler's `!takedown` and an audit row each), in the transaction of the
  review row that lists their action ids;
- `original_artist`: the artists of those tracks (or the uploader, before any track) are
  allow-listed for every reference the scan matched, so their scans leave those matches out;
- `false_positive`: the review row only.
The newest review of a scan is the decision in force. A match of the same bytes brought by a
later artist (`copier`) concerns only that artist's tracks: they are the default tracks of its
scan's review (the first artist's track is not taken down). Later scans of the audio or its
tracks record a match an earlier review decided as `decided` (media/copyright/matches.py): such
a flag is not in the unreviewed queue. The same functions serve the
`fm.plyr.moderation.listScans`/`resolveScan` methods and `plyr moderation review`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appview.labeler.store import LabelSigner
from appview.moderation import actions
from appview.moderation.actions import MAX_REASON_CHARS, iso
from appview.moderation.subjects import ModerationError, parse_subject
from core.db import Connection
from protocol.labels import Label

RESOLUTIONS = ("violation", "false_positive", "original_artist")
STATUSES = ("clear", "flagged", "error")
MAX_TRACKS = 50  # tracks named in one resolution
TRACK_COLLECTION = "fm.plyr.track"


@dataclass(frozen=True)
class Resolved:
    review: dict[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    allowlisted: list[int] = field(default_factory=list)  # reference ids


def _ms(seconds: Any) -> int:
    return max(0, int(round(float(seconds or 0) * 1000)))


def review_view(row: Any) -> dict[str, Any]:
    """fm.plyr.moderation.defs#scanReviewView of a `copyright_reviews` row."""
    return {
        "id": row["id"],
        "scanId": row["scan_id"],
        "resolution": row["resolution"],
        "trackUris": list(row["track_uris"]),
        "reviewer": row["reviewer"],
        "note": row["note"],
        "actionIds": [int(a) for a in row["action_ids"]],
        "createdAt": iso(row["created_at"]),
    }


def _match_view(m: dict[str, Any], references: dict[int, dict[str, Any]]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "offsetMs": _ms(m.get("offset_s")),
        "referenceOffsetMs": _ms(m.get("reference_offset_s")),
        "lengthMs": _ms(m.get("length_s")),
        "similarity": min(1000, _ms(m.get("similarity"))),  # thousandths
    }
    if m.get("reference_id") is not None:
        view["referenceId"] = int(m["reference_id"])
        if (ref := references.get(int(m["reference_id"]))) is not None:
            view["reference"] = ref
    if m.get("track_uri"):
        view["trackUri"] = m["track_uri"]
    if m.get("audio"):
        view["audio"] = m["audio"]
    if m.get("fingerprint_id") is not None:
        view["fingerprintId"] = int(m["fingerprint_id"])
    if m.get("copier"):
        view["copier"] = m["copier"]
    if isinstance(decided := m.get("decided"), dict):
        view["decidedReviewId"] = int(decided["review_id"])
        view["decidedResolution"] = decided["resolution"]
    if isinstance(found := m.get("recognition"), dict):
        view["recognition"] = {
            key: str(found[column])[:1000]
            for key, column in (("artist", "artist"), ("title", "title"), ("album", "album"),
                                ("releaseDate", "release_date"), ("label", "label"), ("isrc", "isrc"),
                                ("songLink", "song_link"))
            if found.get(column)
        }  # fmt: skip
        view["recognition"].setdefault("artist", "")
        view["recognition"].setdefault("title", "")
    return view


def concerns(m: dict[str, Any], did: str) -> bool:
    """Whether a match concerns a track of `did`: a copy of the same bytes concerns only the
    later artist's tracks (`copier`), every other match all the tracks of the audio."""
    return not m.get("copier") or m["copier"] == did


def undecided(matches: list[dict[str, Any]]) -> bool:
    """A flag asks for a review unless an earlier decision covers every match (`decided`)."""
    return any("decided" not in m for m in matches)


async def _references(conn: Connection, ids: set[int]) -> dict[int, dict[str, Any]]:
    """Artist, title and ISRC of catalog entries (0041's copyright_references), when it exists."""
    if not ids or not await conn.fetchval("SELECT to_regclass('copyright_references') IS NOT NULL"):
        return {}
    rows = await conn.fetch(
        "SELECT id, artist, title, isrc FROM copyright_references WHERE id = ANY($1::bigint[])", sorted(ids)
    )
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        ref = {"artist": r["artist"], "title": r["title"]}
        if r["isrc"]:
            ref["isrc"] = r["isrc"]
        out[int(r["id"])] = ref
    return out


def _scan_view(row: Any, references: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """fm.plyr.moderation.defs#scanView of a scan row with its tracks and newest review."""
    view: dict[str, Any] = {
        "id": row["id"],
        "audio": row["sha256"],
        "status": row["status"],
        "attempt": row["attempt"],
        "tracks": list(row["tracks"] or []),
        "matches": [_match_view(m, references) for m in row["matches"]],
        "createdAt": iso(row["created_at"]),
        "finishedAt": iso(row["finished_at"]),
    }
    for key, column in (("trackUri", "track_uri"), ("uploadedBy", "uploaded_by"), ("engine", "engine"),
                        ("error", "error")):  # fmt: skip
        if row[column] is not None:
            view[key] = row[column]
    if row["external"]:
        view["external"] = True
    if row["duration_s"] is not None:
        view["durationMs"] = _ms(row["duration_s"])
    if row["next_attempt_at"] is not None:
        view["nextAttemptAt"] = iso(row["next_attempt_at"])
    if row["review_id"] is not None:
        view["review"] = review_view({
            "id": row["review_id"], "scan_id": row["id"], "resolution": row["resolution"],
            "track_uris": row["review_tracks"], "reviewer": row["reviewer"], "note": row["note"],
            "action_ids": row["action_ids"], "created_at": row["reviewed_at"],
        })  # fmt: skip
    return view


_SCANS = """
SELECT s.id, s.sha256, s.status, s.attempt, s.track_uri, s.matches, s.engine, s.external, s.error, s.duration_s,
       s.created_at, s.finished_at, s.next_attempt_at, o.uploaded_by,
       (SELECT array_agg(a.track_uri) FROM copyright_audio_tracks(s.sha256) a) AS tracks,
       r.id AS review_id, r.resolution, r.track_uris AS review_tracks, r.reviewer, r.note, r.action_ids,
       r.created_at AS reviewed_at
FROM copyright_scans s
LEFT JOIN media_objects o ON o.sha256 = s.sha256
LEFT JOIN LATERAL (
    SELECT * FROM copyright_reviews cr WHERE cr.scan_id = s.id ORDER BY cr.id DESC LIMIT 1
) r ON true
"""


async def list_scans(
    conn: Connection,
    *,
    limit: int,
    before: int | None = None,
    status: str | None = None,
    unreviewed: bool = False,
) -> tuple[list[dict[str, Any]], int | None]:
    """Scans newest first (of one status; `unreviewed`: only those with no review, and no flag an
    earlier decision covers whole): views and the id to continue before."""
    if status is not None and status not in STATUSES:
        raise ModerationError(f"status is one of {', '.join(STATUSES)}")
    rows = await conn.fetch(
        _SCANS
        + """WHERE ($1::text IS NULL OR s.status = $1) AND ($2::bigint IS NULL OR s.id < $2)
               AND (NOT $3 OR (r.id IS NULL AND NOT (jsonb_array_length(s.matches) > 0 AND NOT EXISTS (
                   SELECT 1 FROM jsonb_array_elements(s.matches) m WHERE NOT m ? 'decided'))))
             ORDER BY s.id DESC LIMIT $4""",
        status, before, unreviewed, limit,
    )  # fmt: skip
    refs = {int(m["reference_id"]) for r in rows for m in r["matches"] if m.get("reference_id") is not None}
    references = await _references(conn, refs)
    views = [_scan_view(r, references) for r in rows]
    return views, (rows[-1]["id"] if len(rows) == limit else None)


async def get_scan(conn: Connection, scan_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(_SCANS + "WHERE s.id = $1", scan_id)
    if row is None:
        return None
    refs = {int(m["reference_id"]) for m in row["matches"] if m.get("reference_id") is not None}
    return _scan_view(row, await _references(conn, refs))


def _check_note(note: str) -> str:
    note = note.strip()
    if not note:
        raise ModerationError("a note is required: the review says why")
    if len(note) > MAX_REASON_CHARS:
        raise ModerationError(f"the note is longer than {MAX_REASON_CHARS} characters")
    return note


def _track_uris(tracks: list[str]) -> list[str]:
    if len(tracks) > MAX_TRACKS:
        raise ModerationError(f"at most {MAX_TRACKS} tracks in one resolution")
    out: list[str] = []
    for text in tracks:
        subject = parse_subject(text)
        if subject.is_account or subject.uri.split("/")[3] != TRACK_COLLECTION:
            raise ModerationError(f"not a track: {text[:200]!r} (at://DID/{TRACK_COLLECTION}/RKEY)")
        out.append(subject.uri)
    return list(dict.fromkeys(out))


async def resolve_scan(
    conn: Connection,
    signer: LabelSigner | None,
    *,
    scan_id: int,
    resolution: str,
    note: str,
    reviewer: str,
    tracks: list[str] | None = None,
) -> Resolved:
    """Decide on a flagged scan (see the module doc). `tracks`: the tracks the decision is about;
    default: the tracks that play the scanned audio now (and the one it was scanned for)."""
    if resolution not in RESOLUTIONS:
        raise ModerationError(f"resolution is one of {', '.join(RESOLUTIONS)}")
    note = _check_note(note)
    named = _track_uris(tracks) if tracks else None
    async with conn.transaction():
        scan = await conn.fetchrow(
            "SELECT s.id, s.sha256, s.status, s.track_uri, s.matches, o.uploaded_by FROM copyright_scans s "
            "LEFT JOIN media_objects o ON o.sha256 = s.sha256 WHERE s.id = $1",
            scan_id,
        )
        if scan is None:
            raise ModerationError(f"no copyright scan {scan_id}")
        if scan["status"] != "flagged":
            raise ModerationError(f"scan {scan_id} is {scan['status']}: only flagged scans are reviewed")
        if named is None:
            rows = await conn.fetch("SELECT track_uri, did FROM copyright_audio_tracks($1)", scan["sha256"])
            found = [r["track_uri"] for r in rows if any(concerns(m, r["did"]) for m in scan["matches"])]
            if scan["track_uri"] is not None and scan["track_uri"] not in found and any(
                concerns(m, parse_subject(scan["track_uri"]).did) for m in scan["matches"]
            ) and await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM tracks WHERE uri = $1)", scan["track_uri"]
            ):
                found.append(scan["track_uri"])
            named = found
        done: list[actions.Outcome] = []
        if resolution == "violation":
            if signer is None:
                raise LabelerMissing("no labeler signing key is configured (PLYR_LABELER_KEY): a violation is a takedown")
            if not named:
                raise ModerationError(f"no track plays the audio of scan {scan_id} now: name the tracks to take down")
            for uri in named:
                done.append(await actions.takedown(
                    conn, signer, parse_subject(uri), reason=f"copyright (scan {scan_id}): {note}"[:MAX_REASON_CHARS],
                    moderator=reviewer,
                ))  # fmt: skip
        action_ids = [o.action["id"] for o in done if o.action is not None]
        review = await conn.fetchrow(
            "INSERT INTO copyright_reviews (scan_id, resolution, track_uris, reviewer, note, action_ids) "
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            scan_id, resolution, named, reviewer, note, action_ids,
        )  # fmt: skip
        assert review is not None  # INSERT ... RETURNING: one row
        allowlisted: list[int] = []
        if resolution == "original_artist":
            references = sorted({int(m["reference_id"]) for m in scan["matches"] if m.get("reference_id") is not None})
            artists = sorted({parse_subject(uri).did for uri in named})
            if not artists and scan["uploaded_by"] is not None:
                artists = [scan["uploaded_by"]]
            if references and artists:
                await conn.execute(
                    "INSERT INTO copyright_allowlist (artist_did, reference_id, review_id) "
                    "SELECT a, r, $3 FROM unnest($1::text[]) a, unnest($2::bigint[]) r ON CONFLICT DO NOTHING",
                    artists, references, review["id"],
                )  # fmt: skip
                allowlisted = references
    return Resolved(
        review=review_view(review),
        actions=[o.action for o in done if o.action is not None],
        labels=[label for o in done for label in o.labels],
        allowlisted=allowlisted,
    )


class LabelerMissing(ModerationError):
    """A violation needs our labeler's key (the XRPC method answers 503)."""
