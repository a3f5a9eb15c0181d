"""Moderation by a real labeler: Ozone's labels reach our database through our own services.

`plyr index` follows the dev-env PDS's firehose and `plyr labels` follows Ozone (PLYR_LABELERS
and PLYR_MODERATION_LABELERS = Ozone's DID), both subprocesses on a database of the test's own.
A user of the PDS writes a plyr track; the moderator (through the PDS, as a moderator's client
does) labels the track `!takedown`: its row appears in `labels`. Labelling the account
`!takedown` hides the actor (`actors.visible` false, `moderation_takedown` true); negating both
labels brings the negations into `labels` and the actor back. `plyr serve` answers from the same
database all along: a content label (`porn`) shows in the track view for a client accepting
Ozone, the taken-down track is gone (404 on getTrack, 410 on its page), and comes back.

Every wait is on a row, with a bound; the label subscriber starts at cursor 0, so it misses
nothing that was labelled before it connected.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.replica import free_port

from .ozone_network import OzoneNetwork

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("indexer.labels") is None,
        reason="indexer.labels (the label subscriber) is not in this tree",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 90.0  # bound on each wait: two Python services start, each reading a stream from 0


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def eventually(check: Callable[[], Awaitable[Any]], what: str, procs: list[Service]) -> Any:
    """Poll `check` until it returns something truthy; fail early when a service died."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        for proc in procs:
            proc.assert_alive()
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    logs = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in procs)
    raise AssertionError(f"timed out after {WAIT_S}s waiting for {what} (last: {last!r})\n{logs}")


class Service:
    """A `python -m plyr ...` subprocess in its own process group, stopped by PID."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path, url: str = "") -> None:
        self.name, self.args, self.env, self.log, self.url = name, args, env, log, url
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "plyr", *self.args,
                cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.returncode is None, (
            f"plyr {self.name} exited ({self.proc and self.proc.returncode}):\n{self.tail()}"
        )

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


@pytest.fixture
async def services(
    ozone_network: OzoneNetwork, database_url: str, tmp_path: Path
) -> AsyncIterator[list[Service]]:
    net = ozone_network
    env = {
        **os.environ,
        **net.identity_env(),
        "DATABASE_URL": database_url,
        "PLYR_ALLOW_PRIVATE_NETWORK": "true",  # every server here is on loopback
        "PLYR_LABELERS": net.ozone_did,
        "PLYR_MODERATION_LABELERS": net.ozone_did,
        "PLYR_INDEXER_METRICS_PORT": "0",
        "PLYR_INDEXER_BATCH_MS": "50",
        "PLYR_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    port = free_port()
    env.update(PLYR_APPVIEW_PORT=str(port), PLYR_APPVIEW_MICROCACHE_SECONDS="0",
               PLYR_APPVIEW_VIEW_CACHE_SECONDS="0")  # fmt: skip
    firehose = net.pds_url.replace("http://", "ws://", 1) + "/xrpc/com.atproto.sync.subscribeRepos"
    procs = [
        Service("serve", ["serve"], env, tmp_path / "serve.log", url=f"http://127.0.0.1:{port}"),
        # From seq 0: the whole (small, fresh) history of the session's PDS.
        Service("index", ["index", "--url", firehose, "--cursor", "0"], env, tmp_path / "index.log"),
        Service("labels", ["labels"], env, tmp_path / "labels.log"),
    ]
    try:
        for proc in procs:
            await proc.start()
        yield procs
    finally:
        for proc in procs:
            await proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_ozone_takedowns_reach_labels_and_actors(
    ozone_network: OzoneNetwork, pool: asyncpg.Pool, services: list[Service], http: aiohttp.ClientSession
) -> None:
    net = ozone_network
    async with net.client() as pds:
        user = await net.new_account(pds, "takedown")
        uri, cid = await pds.create_record(
            user,
            "fm.plyr.track",
            {
                "title": "Taken down",
                "artist": "E2E",
                "audioUrl": "https://cdn.example.com/a.mp3",
                "fileType": "mp3",
                "createdAt": now(),
            },
        )

        async def actor_visible() -> bool | None:
            return await pool.fetchval("SELECT visible FROM actors WHERE did = $1", user.did)

        async def track_indexed() -> bool:
            return bool(await pool.fetchval("SELECT 1 FROM tracks WHERE uri = $1", uri))

        await eventually(track_indexed, "the indexer to store the track", services)
        assert await actor_visible() is True
        appview = next(p.url for p in services if p.name == "serve")
        track_id = await pool.fetchval("SELECT short_id FROM tracks WHERE uri = $1", uri)

        async def get_track(**headers: str) -> tuple[int, Any]:
            try:
                async with http.get(f"{appview}/xrpc/fm.plyr.feed.getTrack", params={"uri": uri},
                                    headers=headers) as resp:  # fmt: skip
                    return resp.status, await resp.json(content_type=None)
            except aiohttp.ClientConnectionError:
                return 0, None  # the AppView is still starting

        async def track_served() -> bool:
            return (await get_track())[0] == 200

        await eventually(track_served, "the AppView to serve the track", services)

        async def label_row(subject: str) -> asyncpg.Record | None:
            return await pool.fetchrow(
                "SELECT * FROM labels WHERE uri = $1 AND src = $2 AND val = '!takedown'",
                subject,
                net.ozone_did,
            )

        async def label_is(subject: str, neg: bool) -> asyncpg.Record | None:
            row = await label_row(subject)
            return row if row is not None and row["neg"] is neg else None

        mod = await net.moderator_session(pds)

        # A content label: returned to a client that accepts Ozone, the track still served.
        await mod.label(uri, cid=cid, create=["porn"])

        async def porn_labelled() -> list[Any]:
            status, body = await get_track(**{"atproto-accept-labelers": net.ozone_did})
            labels = body["track"]["labels"] if status == 200 else []
            return [lab for lab in labels if lab.get("src") == net.ozone_did and lab.get("val") == "porn"]

        await eventually(porn_labelled, "Ozone's porn label in the track view", services)

        # The track: a record label, with the CID of the version labelled.
        await mod.label(uri, cid=cid, create=["!takedown"])
        row = await eventually(lambda: label_is(uri, False), "the track's !takedown row", services)
        assert row["cid"] == cid and row["view"]["src"] == net.ozone_did and "sig" not in row["view"]
        assert await actor_visible() is True  # a record label does not touch the account

        async def track_gone() -> bool:
            async with http.get(f"{appview}/track/{track_id}") as page:
                return (await get_track())[0] == 404 and page.status == 410

        await eventually(track_gone, "the taken-down track to leave the AppView (404, page 410)", services)

        # The account: hidden while a moderation labeler's !takedown stands.
        await mod.label(user.did, create=["!takedown"])
        await eventually(lambda: label_is(user.did, False), "the account's !takedown row", services)

        async def hidden() -> bool:
            row = await pool.fetchrow(
                "SELECT visible, moderation_takedown FROM actors WHERE did = $1", user.did
            )
            return row is not None and row["visible"] is False and row["moderation_takedown"] is True

        await eventually(hidden, "the actor to be hidden", services)

        # Negations: both rows turn into negations, the actor comes back.
        await mod.label(uri, cid=cid, negate=["!takedown"])
        await mod.label(user.did, negate=["!takedown"])
        await eventually(lambda: label_is(uri, True), "the track's negation", services)
        await eventually(lambda: label_is(user.did, True), "the account's negation", services)

        async def restored() -> bool:
            row = await pool.fetchrow(
                "SELECT visible, moderation_takedown FROM actors WHERE did = $1", user.did
            )
            return row is not None and row["visible"] is True and row["moderation_takedown"] is False

        await eventually(restored, "the actor to be visible again", services)
        await eventually(track_served, "the restored track back in the AppView", services)
        assert await pool.fetchval(
            "SELECT count(*) FROM label_rejects WHERE src = $1", net.ozone_did
        ) == 0, "Ozone's labels all verify"
