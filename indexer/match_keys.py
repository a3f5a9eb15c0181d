"""The key two names are compared by when a network play is matched to a plyr track by its
metadata (indexer/network_plays.py): one function for plays and tracks alike."""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any

KEY_MAX_BYTES = 1024  # longer keys are stored as a digest (a btree entry holds ~2.7 KB)


def match_key(text: Any) -> str | None:
    """The form two names are compared in: NFKC, case-folded, punctuation, spaces and control
    characters collapsed to one space, trimmed. None for a non-string or a name with nothing
    left (it matches nothing). Keys longer than KEY_MAX_BYTES become a digest: equal names
    still give equal keys, and the column stays indexable."""
    if not isinstance(text, str):
        return None
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    out: list[str] = []
    gap = False
    for ch in folded:
        if unicodedata.category(ch)[0] in "PZC":  # punctuation, separators, control/format
            gap = True
            continue
        if gap and out:
            out.append(" ")
        gap = False
        out.append(ch)
    key = "".join(out)
    if not key:
        return None
    encoded = key.encode("utf-8", "surrogatepass")
    if len(encoded) > KEY_MAX_BYTES:
        return "sha256:" + hashlib.sha256(encoded).hexdigest()
    return key


PAIR_SEPARATOR = "\n"  # never in a key (control characters are gaps; digests are hex)


def pair_key(name_key: str | None, artist_key: str | None) -> str | None:
    """The (name, artist) pair a metadata match needs, as one key: what plays and tracks are
    found and locked by (writer/network_match.py)."""
    if not name_key or not artist_key:
        return None
    return name_key + PAIR_SEPARATOR + artist_key


def track_keys(record: dict[str, Any]) -> tuple[str, str]:
    """(title key, artist key) of a fm.plyr.track record for the tracks columns; '' when nothing
    is left of a name (NULL means "not computed yet": writer/network_match.fill_track_keys)."""
    return match_key(record.get("title")) or "", match_key(record.get("artist")) or ""
