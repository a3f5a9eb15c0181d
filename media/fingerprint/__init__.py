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
change, a piece cut into a longer mix (its offset in the mix), a 2 % tempo change (`atempo`,
the pitch kept) through the (speed, offset) vote, and a 2 % speed change with the pitch (a plain
resample, `asetrate`) through the query's speed variants. Chromaprint's 12 chroma bins have
their edges at A440's semitones, so a pitch change carries in-tune notes across them and the
values change (the pitch is in the values: matching alone cannot undo it). A scan therefore
fingerprints its audio also as if played at QUERY_SPEEDS (0.98, 0.99, 1.01, 1.02; one ffmpeg
run, one decode) and looks those variants up too: a copy resampled by 1/0.98 has its notes back
in their bins in the 0.98 variant. The variants help within about 0.15 % of those speeds; in
between (a 1.5 % pitched copy) in-tune music is still missed, music off A440 sometimes found.
"""

from media.fingerprint.compute import (
    ENGINE,
    FRAME_S,
    QUERY_SPEEDS,
    Fingerprint,
    FingerprintError,
    Variant,
    fingerprint_file,
)
from media.fingerprint.match import Match, find_matches
from media.fingerprint.store import add_reference, forget_track, remove_reference, store_fingerprint

__all__ = [
    "ENGINE",
    "FRAME_S",
    "QUERY_SPEEDS",
    "Fingerprint",
    "FingerprintError",
    "Match",
    "Variant",
    "add_reference",
    "find_matches",
    "fingerprint_file",
    "forget_track",
    "remove_reference",
    "store_fingerprint",
]
