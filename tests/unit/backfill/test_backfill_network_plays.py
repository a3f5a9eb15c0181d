"""Backfill and resync extract network plays (teal.fm play records) with the plyr records, from
the same verified walk of the signed tree; other fm.teal.* records stay out."""

from __future__ import annotations

import random

from indexer.backfill.extract import extract_from_bytes
from tests.support.repo_builder import build_repo, post, tid, track

DID = "did:plc:abcdefghijklmnopqrstuvwx"


def test_plays_of_both_collections_are_extracted(index_cls) -> None:
    rng = random.Random(5)
    play = {"$type": "fm.teal.feed.play", "trackName": "Night Drive"}
    legacy = {"$type": "fm.teal.alpha.feed.play", "trackName": "Night Drive", "artistNames": ["A"]}
    records = [
        ("fm.plyr.track", tid(1), track(1)),
        ("fm.teal.feed.play", tid(2), play),
        ("fm.teal.alpha.feed.play", tid(3), legacy),
        ("fm.teal.alpha.actor.status", "self", {"$type": "fm.teal.alpha.actor.status", "time": "1"}),
        ("fm.teal.feed.playlist", tid(4), {"$type": "fm.teal.feed.playlist"}),  # a neighbour key range
    ]
    records += [("app.bsky.feed.post", tid(i), post(i, rng)) for i in range(10, 400)]
    built = build_repo(DID, records)
    snap = extract_from_bytes(built.car(), DID, built.key.public_key())
    got = {f"{r.collection}/{r.rkey}": r.value for r in snap.records}
    assert got == {
        f"fm.plyr.track/{tid(1)}": track(1),
        f"fm.teal.feed.play/{tid(2)}": play,
        f"fm.teal.alpha.feed.play/{tid(3)}": legacy,
    }
