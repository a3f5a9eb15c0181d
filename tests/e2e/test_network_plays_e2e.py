"""Network plays end to end: teal.fm play records written to a real PDS (`validate: false`, as
any client writes a lexicon its PDS does not know) are indexed by the real `plyr index` from the
PDS firehose, signatures checked, and count in the AppView's stats beside plyr's own plays.

One record names the track by metadata (legacy collection), one by its at:// URI, one by our
track page URL; a record the lexicon refuses is dead-lettered and not counted; a deleted play
leaves the count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appview.app import build_app
from appview.settings import AppviewSettings
from protocol.identity import IdentityResolver
from tests.support.identity import local_resolver

from .pds_client import PdsClient, rkey_of
from .pds_network import PdsNetwork, new_account
from .test_indexer_e2e import Indexer, eventually

pytestmark = pytest.mark.e2e

ALPHA = "fm.teal.alpha.feed.play"
PLAY = "fm.teal.feed.play"
PAGE_HOST = "appview.test"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
async def indexer(pds_network: PdsNetwork, database_url: str, tmp_path: Path) -> AsyncIterator[Indexer]:
    ix = Indexer(pds_network, database_url, tmp_path / "indexer.log")
    ix.env["PLYR_TRACK_PAGE_HOSTS"] = PAGE_HOST
    yield ix
    await ix.kill()


@pytest.fixture
async def appview(pds_network: PdsNetwork, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    resolver: IdentityResolver = local_resolver(pds_network.plc_url)
    settings = AppviewSettings(
        host="127.0.0.1", port=0, public_url=f"http://{PAGE_HOST}",
        service_did=f"did:web:{PAGE_HOST}", cors_origins=(), max_body_bytes=64 * 1024,
        microcache_seconds=0, top_cache_seconds=0, stats_cache_seconds=0,
        freshness_interval=0.05, play_dedupe_seconds=1800, public_max_age=0,
        view_cache_seconds=0, coalesce=False,
    )  # fmt: skip
    client = TestClient(TestServer(build_app(pool, settings, resolver=resolver, check_output=True), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()
    await resolver.close()


async def stats(client: TestClient, nsid: str, **params: str) -> dict[str, Any]:
    resp = await client.get("/xrpc/" + nsid, params=params)
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def test_teal_play_records_count_in_stats(
    pds: PdsClient, pds_network: PdsNetwork, indexer: Indexer, pool: asyncpg.Pool, appview: TestClient
) -> None:
    artist = await new_account(pds, pds_network, "artist")
    fan = await new_account(pds, pds_network, "fan")
    fan2 = await new_account(pds, pds_network, "fan2")
    fan3 = await new_account(pds, pds_network, "fan3")
    troll = await new_account(pds, pds_network, "troll")
    await indexer.start("--cursor", "0")

    track = {
        "title": "Night Drive", "artist": "E2E Artist", "fileType": "mp3", "duration": 200,
        "audioUrl": "https://cdn.example.com/a.mp3", "createdAt": now(),
    }  # fmt: skip
    track_uri, _ = await pds.create_record(artist, "fm.plyr.track", track)
    short_id = await eventually(
        lambda: pool.fetchval("SELECT short_id FROM tracks WHERE uri = $1", track_uri), "the track indexed"
    )

    # Metadata (legacy collection, as plyr.fm writes it), at:// URI, our page URL; one refused.
    by_name = await pds.create_record(fan, ALPHA, {
        "trackName": "night drive", "artists": [{"artistName": "e2e artist"}], "duration": 201,
        "musicServiceBaseDomain": "plyr.fm", "submissionClientAgent": "plyr.fm/1.0", "playedTime": now(),
    })  # fmt: skip
    await pds.create_record(fan2, PLAY, {"trackName": "Night Drive", "originUri": track_uri, "playedTime": now()})
    await pds.create_record(fan3, PLAY, {
        "trackName": "nd", "originUri": f"https://{PAGE_HOST}/track/{short_id}", "playedTime": now(),
    })  # fmt: skip
    refused = await pds.create_record(troll, PLAY, {"trackName": "", "originUri": track_uri})

    async def all_counted() -> bool:
        n = await pool.fetchval("SELECT play_count FROM network_play_counts WHERE track_uri = $1", track_uri)
        return n == 3

    await eventually(all_counted, "three network plays counted", within=90)
    methods = await pool.fetch("SELECT did, match_method FROM network_plays ORDER BY did")
    assert {r["did"]: r["match_method"] for r in methods} == {fan.did: "metadata", fan2.did: "url", fan3.did: "url"}
    await eventually(
        lambda: pool.fetchval("SELECT count(*) FROM dead_letters WHERE uri = $1", refused[0]), "the refused play"
    )
    assert await pool.fetchval("SELECT count(*) FROM network_plays WHERE did = $1", troll.did) == 0

    body = await stats(appview, "fm.plyr.stats.getTrackPlays", uri=track_uri)
    assert body["plays"] == {"count": 0, "countedBy": "plyr"}
    assert body["networkPlays"] == {"count": 3, "countedBy": "teal.fm records", "byUrl": 2, "byMetadata": 1}
    body = await stats(appview, "fm.plyr.stats.getArtistPlays", actor=artist.did)
    assert body["networkPlays"]["count"] == 3

    # The listener deletes their play: the count follows.
    await pds.delete_record(fan, ALPHA, rkey_of(by_name[0]))

    async def two_left() -> bool:
        body = await stats(appview, "fm.plyr.stats.getTrackPlays", uri=track_uri)
        return body["networkPlays"] == {"count": 2, "countedBy": "teal.fm records", "byUrl": 2, "byMetadata": 0}

    await eventually(two_left, "the deleted play uncounted", within=90)
    assert indexer.alive(), indexer.tail()
