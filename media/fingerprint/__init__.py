"""STAND-IN of helper "fingerprint"'s package (issue 16), REPLACED AT MERGE.

The minimal fingerprint API of the copyright contract, so that the scan workflow
(media/copyright/) runs in this branch: `fingerprint_file` runs ffmpeg's `chromaprint` muxer and
returns its raw sub-fingerprints; `store_fingerprint` and `add_reference` keep fingerprints in
this process's memory only (no table: 0041 is the fingerprint helper's); `find_matches` finds
nothing (tests replace it with a function returning chosen `Match` values). Nothing outside
media/copyright/ and its tests uses this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PlyrError

ENGINE = "chromaprint-standin"
ITEM_S = 4096 / 3 / 11025  # seconds of audio per chromaprint sub-fingerprint (~0.124 s)


class FingerprintError(PlyrError):
    """The audio could not be fingerprinted (missing file, ffmpeg failed)."""


@dataclass(frozen=True)
class Fingerprint:
    values: array[int]  # uint32 sub-fingerprints
    duration_s: float
    engine: str


@dataclass(frozen=True)
class Match:
    fingerprint_id: int
    reference_id: int | None
    track_uri: str | None
    offset_s: float
    reference_offset_s: float
    length_s: float
    similarity: float


async def fingerprint_file(path: Path, *, ffmpeg: str | None = None) -> Fingerprint:
    if not path.is_file():  # noqa: ASYNC240 - one stat
        raise FingerprintError(f"no such audio file: {path}")
    if ffmpeg is None:
        from media.ffmpeg import ffmpeg_exe

        ffmpeg = ffmpeg_exe(None)
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-protocol_whitelist", "file,pipe",
        "-i", str(path), "-vn", "-f", "chromaprint", "-fp_format", "raw", "pipe:1",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-2:])[:300]
        raise FingerprintError(f"ffmpeg could not fingerprint the audio (exit {proc.returncode}): {tail}")
    values = array("I")
    values.frombytes(out[: len(out) // 4 * 4])
    if not values:
        raise FingerprintError("the audio is too short or silent to fingerprint")
    return Fingerprint(values=values, duration_s=len(values) * ITEM_S, engine=ENGINE)


_ids = itertools.count(1)
_stored: dict[int, tuple[str | None, int | None, Fingerprint]] = {}


async def store_fingerprint(conn: Any, *, track_uri: str | None, reference_id: int | None, fp: Fingerprint) -> int:
    fid = next(_ids)
    _stored[fid] = (track_uri, reference_id, fp)
    return fid


async def find_matches(
    conn: Any, fp: Fingerprint, *, exclude_track_uri: str | None = None, min_length_s: float = 10.0
) -> list[Match]:
    return []


async def add_reference(conn: Any, path: Path, *, artist: str, title: str, isrc: str | None) -> int:
    fp = await fingerprint_file(path)
    reference_id = next(_ids)
    await store_fingerprint(conn, track_uri=None, reference_id=reference_id, fp=fp)
    return reference_id
