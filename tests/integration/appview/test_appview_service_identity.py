"""The AppView as an atproto service: its did:web document (what a PDS resolves to proxy
`atproto-proxy: <did>#plyr_appview`), and `atproto-repo-rev` on answers to a viewer."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from appview.xrpc import REPO_REV_HEADER
from tests.integration.appview.conftest import World

LATEST = "/xrpc/fm.plyr.feed.getLatestTracks"


async def test_did_json_names_the_appview(make_client: Any) -> None:
    client = await make_client(service_did="did:web:localhost%3A2584", public_url="http://localhost:2584")
    resp = await client.get("/.well-known/did.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert await resp.json() == {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": "did:web:localhost%3A2584",
        "service": [{"id": "#plyr_appview", "type": "PlyrAppView", "serviceEndpoint": "http://localhost:2584"}],
    }
    # A did:plc's document is the PLC directory's to publish, not ours.
    plc_client = await make_client(service_did="did:plc:ewvi7nxzyoun6zhxrhs64oiz")
    assert (await plc_client.get("/.well-known/did.json")).status == 404


async def test_repo_rev_for_a_viewer_only(client: TestClient, world: World, pool: asyncpg.Pool) -> None:
    ann = await world.account("ann")
    fan = await world.account("fan")
    await world.track(ann, "first light")
    await pool.execute("UPDATE actors SET repo_rev = '3lrev22222222' WHERE did = $1", fan.did)
    nsid = "fm.plyr.feed.getLatestTracks"

    anonymous = await client.get(LATEST)
    assert anonymous.status == 200 and REPO_REV_HEADER not in anonymous.headers
    viewer = await client.get(LATEST, headers=fan.auth(nsid))
    assert viewer.status == 200 and viewer.headers[REPO_REV_HEADER] == "3lrev22222222"
    # A page with no tracks still says it (no likes to read: the rev alone).
    empty = await client.get("/xrpc/fm.plyr.feed.getArtistTracks", params={"actor": fan.did},
                             headers=fan.auth("fm.plyr.feed.getArtistTracks"))
    assert empty.status == 200 and (await empty.json())["tracks"] == []
    assert empty.headers[REPO_REV_HEADER] == "3lrev22222222"
    # Methods that need auth (the rev is read alongside the handler).
    queue = await client.get("/xrpc/fm.plyr.viewer.getQueue", headers=fan.auth("fm.plyr.viewer.getQueue"))
    assert queue.status == 200 and queue.headers[REPO_REV_HEADER] == "3lrev22222222"
    # Someone the index does not know: no header (nothing to patch against).
    stranger = world.plc.register("stranger")
    unknown = await client.get(LATEST, headers=stranger.auth(nsid))
    assert unknown.status == 200 and REPO_REV_HEADER not in unknown.headers
    unknown_queue = await client.get("/xrpc/fm.plyr.viewer.getQueue",
                                     headers=stranger.auth("fm.plyr.viewer.getQueue"))
    assert unknown_queue.status == 200 and REPO_REV_HEADER not in unknown_queue.headers
