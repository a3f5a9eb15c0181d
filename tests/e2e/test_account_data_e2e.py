"""Account data deletion end to end (issue 17): `plyr up` following a real PDS; a user who
uploaded (with a token from their PDS), published, played and queued runs
`plyr publish delete-account-data --delete-records`, typing their handle: their records leave
their PDS, and everything plyr held about them beyond the repo leaves every table and storage.
The session is an `atproto.Client` logged in on the real PDS (the `PdsSession` interface of
publish/session.py); the procedure is called with a real getServiceAuth token, then again
through the PDS (`atproto-proxy`), where it removes nothing more."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import atproto
import pytest
from click.testing import CliRunner, Result
from integration.erasure.holdings import ALWAYS, DELETED, REPO, holdings

from media.auth import LXM_UPLOAD_AUDIO
from publish.cli import delete_account_data

from .pds_client import PdsClient
from .pds_network import PASSWORD, PdsNetwork, new_account
from .test_indexer_e2e import eventually, now
from .test_service_proxy_e2e import (  # noqa: F401  (http, stack: fixtures)
    Stack,
    http,
    indexed,
    job_events,
    make_tone,
    stack,
    track_record,
    via_pds,
    write,
)

pytestmark = pytest.mark.e2e


class LoggedIn:
    """A logged-in session on the real PDS with the interface of publish/session.py's PdsSession."""

    def __init__(self, pds_url: str, handle: str, password: str) -> None:
        self.client = atproto.Client(base_url=pds_url)
        session = self.client.login(handle, password, fetch_bsky_profile=False)
        self.did = session.did if session is not None else self.client._session.did  # type: ignore[union-attr]
        self.handle = handle
        self.pds_url = pds_url

    def service_auth(self, aud: str, lxm: str, expires_in_s: int = 120) -> str:
        params = {"aud": aud, "lxm": lxm, "exp": int(time.time()) + expires_in_s}
        return self.client.com.atproto.server.get_service_auth(params).token  # type: ignore[arg-type]


def run_cli(session: LoggedIn, args: list[str], typed: str | None = None) -> Result:
    return CliRunner().invoke(delete_account_data, args, obj={"pds_session": session},
                              input=None if typed is None else typed + "\n")  # fmt: skip


async def test_delete_account_data_through_the_cli(
    stack: Stack, pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool, tmp_path: Path  # noqa: F811
) -> None:
    user = await new_account(pds, pds_network, "eraser")
    # An upload with a token from the user's PDS, transcoded; the track record naming it.
    wav = await asyncio.to_thread(make_tone, tmp_path / "tone.wav")
    token = await pds.get_service_auth(user, stack.media_did, LXM_UPLOAD_AUDIO)
    async with stack.http.post(f"{stack.media_url}/upload/audio", data=wav,
                               headers={"Authorization": f"Bearer {token}"}) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()
        uploaded = await resp.json()
    events = await job_events(stack.http, f"{stack.media_url}/jobs/{uploaded['jobId']}/events", token)
    assert events[-1][0] == "done", events
    uri, cid, _ = await write(pds, user, "fm.plyr.track", track_record(f"Erase me {uuid.uuid4().hex[:8]}",
                                                                       uploaded["streamUrl"]))  # fmt: skip
    like_uri, _, _ = await write(pds, user, "fm.plyr.like", {"subject": {"uri": uri, "cid": cid}, "createdAt": now()})
    await indexed(pool, "tracks", uri)
    await indexed(pool, "likes", like_uri)
    # A play and a queue, through the PDS.
    played = await via_pds(stack.http, pds_network, user, "fm.plyr.play.recordPlay", proxy=stack.proxy,
                           body={"track": uri})  # fmt: skip
    assert played.status == 200 and played.body["counted"], played.body
    queued = await via_pds(stack.http, pds_network, user, "fm.plyr.viewer.putQueue", proxy=stack.proxy,
                           body={"queue": {"items": [uri]}, "revision": 0})  # fmt: skip
    assert queued.status == 200, queued.body

    session = await asyncio.to_thread(LoggedIn, pds_network.pds_url, user.handle, PASSWORD)
    assert session.did == user.did
    appview_url = stack.settings["PLYR_PUBLIC_URL"]

    # A handle typed wrong: nothing happens.
    wrong = await asyncio.to_thread(run_cli, session, ["--appview", appview_url, "--delete-records"],
                                    user.handle.upper() + "x")  # fmt: skip
    assert wrong.exit_code == 1 and "nothing was deleted" in str(wrong.exception or wrong.output), wrong.output
    assert await pool.fetchval("SELECT count(*) FROM plays WHERE listener_did = $1", user.did) == 1
    assert len(await pds.list_records(user.did, "fm.plyr.track")) == 1

    # Typed right: the records go from the PDS, then plyr's data, with a real service-auth token.
    result = await asyncio.to_thread(run_cli, session, ["--appview", appview_url, "--delete-records"], user.handle)
    assert result.exit_code == 0, (result.output, result.exception, stack.process.tail(2000))
    out = result.output
    assert "fm.plyr.track: 1/1 records deleted" in out and "fm.plyr.like: 1/1 records deleted" in out, out
    assert "(done)" in out and "removed      1 plays" in out and "removed      1 queue" in out, out
    assert "removed      1 audioObjects" in out and "deleted file audio/" in out, out
    assert await pds.list_records(user.did, "fm.plyr.track") == []
    assert await pds.list_records(user.did, "fm.plyr.like") == []

    # Stored files: gone (the media service answers 404 for each key it deleted).
    keys = [line.split("deleted file ", 1)[1] for line in out.splitlines() if "deleted file " in line]
    assert len(keys) >= 2, out  # the master and its MP3 stream
    for key in keys:
        async with stack.http.get(f"{stack.media_url}/media/{key}") as resp:
            assert resp.status == 404, (key, resp.status)
    # Every table: once the indexer has seen the record deletes, nothing names the user but
    # the index of their repo (tombstones, actors) and the exempted tables.
    await eventually(lambda: pool.fetchval("SELECT NOT EXISTS (SELECT 1 FROM tracks WHERE did = $1)", user.did),
                     "the track deleted from the index", 90)  # fmt: skip
    assert await holdings(pool, user.did, ALWAYS | REPO) == {}
    assert await pool.fetchval("SELECT count(*) FROM tombstones WHERE did = $1", user.did) == 2

    # Again, through the PDS this time (atproto-proxy): nothing more, and it says so.
    again = await asyncio.to_thread(run_cli, session, ["--appview-did", stack.appview_did, "--via-pds",
                                                       "--confirm", user.handle])  # fmt: skip
    assert again.exit_code == 0, (again.output, again.exception, stack.process.tail(2000))
    assert "(done): nothing more to remove" in again.output, again.output


async def test_account_deleted_on_its_pds_is_erased(
    stack: Stack, pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool, tmp_path: Path  # noqa: F811
) -> None:
    """The PDS deletes the account: the indexer sees `#account` deleted, removes the records and
    asks for the erasure; the AppView's loop and media do the rest, with nobody calling us."""
    user = await new_account(pds, pds_network, "gone")
    wav = await asyncio.to_thread(make_tone, tmp_path / "tone.wav")
    token = await pds.get_service_auth(user, stack.media_did, LXM_UPLOAD_AUDIO)
    async with stack.http.post(f"{stack.media_url}/upload/audio", data=wav,
                               headers={"Authorization": f"Bearer {token}"}) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()
        uploaded = await resp.json()
    uri, _, _ = await write(pds, user, "fm.plyr.track", track_record("Gone soon", uploaded["streamUrl"]))
    await indexed(pool, "tracks", uri)
    played = await via_pds(stack.http, pds_network, user, "fm.plyr.play.recordPlay", proxy=stack.proxy,
                           body={"track": uri})  # fmt: skip
    assert played.status == 200, played.body

    await pds.delete_account(user)
    done = await eventually(lambda: pool.fetchrow(
        """SELECT r.id, p.receipt FROM erasure_requests r JOIN erasure_media_parts p ON p.request_id = r.id
           WHERE r.did = $1 AND r.origin = 'account_deleted' AND p.status = 'done'""", user.did),
        "the erasure of the deleted account", 90)  # fmt: skip
    assert done["receipt"]["removed"]["audioObjects"] == 1, done["receipt"]
    for key in done["receipt"]["storageKeys"]:
        async with stack.http.get(f"{stack.media_url}/media/{key}") as resp:
            assert resp.status == 404, (key, resp.status)
    assert await holdings(pool, user.did, ALWAYS | DELETED) == {}
