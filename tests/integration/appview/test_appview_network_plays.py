"""Network plays in the AppView's stats: beside plyr's own plays, each labelled with how it was
counted; hidden listeners, removed tracks and deleted plays leave the figures."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from indexer.records import RecordOp
from tests.support.frames import STRONG_CID

World = Any  # the `world` fixture (conftest.World)
ALPHA = "fm.teal.alpha.feed.play"
RECORD_PLAY = "fm.plyr.play.recordPlay"


def play_op(world: World, did: str, name: str, artist: str, **extra: Any) -> RecordOp:
    record = {"$type": ALPHA, "trackName": name, "artists": [{"artistName": artist}], **extra}
    return RecordOp("create", did, ALPHA, world.clock.next(), world.clock.next(), STRONG_CID, record)


async def get(client: TestClient, nsid: str, **params: Any) -> dict[str, Any]:
    resp = await client.get("/xrpc/" + nsid, params=params)
    data = await resp.json()
    assert resp.status == 200, data
    return data


async def test_track_and_artist_stats_show_network_plays(client: TestClient, world: World, pool: asyncpg.Pool) -> None:
    ann = await world.account("ann")
    fan = await world.account("fan")
    uri = await world.track(ann, "Night Drive", artist="Ann Artist", duration=180)
    other = await world.track(ann, "Other Song", artist="Ann Artist")
    # one plyr play, reported by a player
    resp = await client.post("/xrpc/" + RECORD_PLAY, json={"track": uri}, headers=fan.auth(RECORD_PLAY))
    assert resp.status == 200
    # three signed records: by metadata, by URL, and one naming nothing of ours
    p1 = play_op(world, fan.did, "night drive", "ann artist", duration=181)
    p2 = play_op(world, "did:plc:listener2", "whatever", "someone", originUrl=other)
    p3 = play_op(world, "did:plc:listener3", "Unknown", "Nobody")
    await world.write(p1, p2, p3)

    track = await get(client, "fm.plyr.stats.getTrackPlays", uri=uri)
    assert track["total"] == 1
    assert track["plays"] == {"count": 1, "countedBy": "plyr"}
    assert track["networkPlays"] == {"count": 1, "countedBy": "teal.fm records", "byUrl": 0, "byMetadata": 1}
    view = (await get(client, "fm.plyr.feed.getTrack", uri=uri))["track"]
    assert view["playCount"] == 1 and view["networkPlayCount"] == 1
    artist = await get(client, "fm.plyr.stats.getArtistPlays", actor=ann.did)
    assert artist["plays"]["count"] == 1 and artist["total"] == 1
    assert artist["networkPlays"] == {"count": 2, "countedBy": "teal.fm records", "byUrl": 1, "byMetadata": 1}

    # A hidden listener's plays leave the figures.
    await world.hide(fan)
    track = await get(client, "fm.plyr.stats.getTrackPlays", uri=uri)
    assert track["networkPlays"]["count"] == 0
    # A deleted play leaves them too.
    await world.write(RecordOp("delete", p2.did, ALPHA, p2.rkey, world.clock.next()))
    artist = await get(client, "fm.plyr.stats.getArtistPlays", actor=ann.did)
    assert artist["networkPlays"]["count"] == 0 and artist["networkPlays"]["byUrl"] == 0
