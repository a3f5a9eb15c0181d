"""Audio fingerprints for copyright scanning: Chromaprint of whole files, an inverted index in
Postgres, and matching with offsets (issue 16).

    fp = await fingerprint_file(path)                       # Fingerprint(values, duration_s, engine)
    fid = await store_fingerprint(conn, track_uri=uri, reference_id=None, fp=fp)
    ref = await add_reference(conn, path, artist=..., title=..., isrc=...)
    for m in await find_matches(conn, fp, exclude_track_uri=uri):  # Match(..., offset_s, length_s, ...)

Why ffmpeg's `chromaprint` muxer (compute.py): the project already ships and runs that ffmpeg
(imageio-ffmpeg, with `--enable-chromaprint`) for every upload, so fingerprints come from the
same decoder, the same local-files-only and named-demuxer rules (media/ffmpeg.py) and the same
kill-on-timeout handling, with nothing new to install. Debian's `fpcalc`
(libchromaprint-tools) is a system package our wheel-only install does not have, reads only the
first 120 s unless told otherwise (`-length`), and decodes with the distribution's FFmpeg;
PyPI's `pyacoustid` runs that `fpcalc` or loads a shared libchromaprint through ctypes with
`audioread` as decoder (the same 120 s default), and brings AcoustID web-service calls we do
not want. All three compute the same algorithm; the muxer gives the raw uint32 values directly
(`-fp_format raw`).

What it survives, measured on synthesized music (tests/integration/media/test_fingerprint_match.py,
docs/BENCHMARKS.md): re-encoding at another bitrate, a time shift (with the offset), a volume
change, a piece cut into a longer mix (its offset in the mix), and a 2 % tempo change
(`atempo`, the pitch kept) through the (speed, offset) vote. A 2 % speed change that also moves
the pitch (`asetrate`) matches only when it does not carry the notes across a chroma bin edge:
Chromaprint's 12 bins have their edges at A440's semitones, so in-tune synthetic notes sit on
the edges and fail both ways; notes 10-40 cents sharp survive +2 %, 60-90 cents sharp -2 %.
Matching cannot undo that: the pitch is in the values. Fingerprinting the query again,
resampled at a grid of rates, could; the grid would have to be finer than 0.5 % (a 0.5 % pitch
shift already leaves in-tune notes without one exact value), a dozen fingerprints per file.
"""

from media.fingerprint.compute import (
    ENGINE,
    FRAME_S,
    Fingerprint,
    FingerprintError,
    fingerprint_file,
)
from media.fingerprint.match import Match, find_matches
from media.fingerprint.store import add_reference, forget_track, remove_reference, store_fingerprint

__all__ = [
    "ENGINE",
    "FRAME_S",
    "Fingerprint",
    "FingerprintError",
    "Match",
    "add_reference",
    "find_matches",
    "fingerprint_file",
    "forget_track",
    "remove_reference",
    "store_fingerprint",
]
