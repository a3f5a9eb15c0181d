"""plyr as an atproto service reached through a real PDS (issue #12), end to end.

A client talks to its own PDS only: `atproto-proxy: <our did:web>#plyr_appview` and the user's
access token; the PDS resolves our DID document, mints a service-auth token (aud = our DID, lxm
= the method) and forwards. Here that PDS is Bluesky's reference `@atproto/pds` on loopback
(`tests/e2e/pds`, with `PDS_DEV_MODE` and `PDS_DISABLE_SSRF_PROTECTION`: without them its
proxy and DID fetches refuse http and loopback), and plyr is the real `plyr up` (indexer
following the PDS firehose, AppView, media) in a subprocess, configured by `.env.example` with
the ports of this run, written as `.env` in its working directory: the README walkthrough
"Run it against a local PDS", checked.

- every `fm.plyr.*` query and procedure of `lexicons/` through the PDS, answers checked against
  the lexicons, viewer state (the user's like in getTrack's `viewer`), and 409 RevisionConflict
  for a stale putQueue / putPreferences revision, passed through by the PDS;
- the publishing path: a token from `com.atproto.server.getServiceAuth` (aud = media's DID, lxm
  = fm.plyr.media.uploadAudio), upload, transcode by real ffmpeg (followed on the job's event
  stream), the `fm.plyr.track` record written to the PDS with the URL media returned, and the
  track playing from our copy;
- read-after-write: the PDS passes `atproto-repo-rev` through for fm.plyr methods (its own
  read-after-write patching covers only app.bsky), so a client reading at once sees how far the
  index has got with its repo: the header and the viewer's like come from one statement, and
  once indexed the header is the repo's rev;
- rate limits with loopback limited (`PLYR_RATE_LIMIT_LOOPBACK`), a small window and two
  `plyr serve` processes on one database: 429 RateLimitExceeded with Retry-After and
  RateLimit-* (through the PDS the status and error name arrive, the headers do not: the
  reference PDS drops an upstream error's headers), recovery in the next window, one budget
  for both processes, per DID for proxied calls, per address for anonymous ones.

Every wait is on progress (a log line, a row, a job event, the server's answer); the rate-limit
phases are repeated in a later window when one did not fit in a single window.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import orjson
import pytest
from dotenv import dotenv_values

from appview.xrpc import REPO_REV_HEADER
from appview.xrpc_schema import LexiconSet
from media.auth import LXM_UPLOAD_AUDIO
from media.ffmpeg import ffmpeg_exe

from .pds_client import Account, PdsClient
from .pds_network import PdsNetwork
from .test_indexer_e2e import eventually, new_account, now

pytestmark = pytest.mark.e2e

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
# The ports .env.example is written for: PLC, PDS, AppView, media. Replaced by this run's.
EXAMPLE_PORTS = ("2582", "2583", "8080", "8081")
# What the walkthrough needs .env.example to set.
WALKTHROUGH_SETTINGS = (
    "PLYR_PLC_URL", "PLYR_HANDLE_RESOLVER_URL", "PLYR_RELAY_URL", "PLYR_ALLOW_PRIVATE_NETWORK",
    "PLYR_APPVIEW_PORT", "PLYR_PUBLIC_URL", "PLYR_SERVICE_DID",
    "PLYR_MEDIA_PORT", "PLYR_MEDIA_PUBLIC_URL", "PLYR_MEDIA_SERVICE_DID",
)  # fmt: skip
APPVIEW_SERVICE = "plyr_appview"  # the service id in our DID document
START_WITHIN_S = 120.0  # a loaded machine is slow to start Python and import everything


# ---- plyr processes ------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def example_env(net: PdsNetwork, appview_port: int, media_port: int) -> dict[str, str]:
    """The settings of .env.example, its ports replaced by this network's and these."""
    ports = dict(
        zip(EXAMPLE_PORTS, (net.plc_port, net.pds_port, appview_port, media_port), strict=True)
    )
    # A port is a whole value (PLYR_APPVIEW_PORT=8080) or follows ":" / "%3A" (URLs, did:web).
    pattern = re.compile(r"(?:^|(?<=:)|(?<=%3A))(" + "|".join(EXAMPLE_PORTS) + r")\b")
    out: dict[str, str] = {}
    for key, value in dotenv_values(ENV_EXAMPLE).items():
        assert value is not None, f".env.example: {key} has no value"
        out[key] = pattern.sub(lambda m: str(ports[m.group(1)]), value)
        assert not re.search(r"\b(" + "|".join(EXAMPLE_PORTS) + r")\b", out[key]), (key, out[key])
    assert not set(WALKTHROUGH_SETTINGS) - set(out), set(WALKTHROUGH_SETTINGS) - set(out)
    return out


def process_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """This environment without any plyr setting (a .env in the working directory decides
    those), plus the database, a data folder of the test's own, JSON logs and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLYR_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=database_url, PLYR_DATA_DIR=str(data_dir), PLYR_LOG_FORMAT="json", **settings
    )
    return env


class PlyrProcess:
    """A `plyr` command run by this test as a subprocess in a process group of its own."""

    def __init__(
        self, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.cwd = cwd
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "plyr", *self.args, cwd=self.cwd, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def wait_logged(self, *messages: str, within: float = START_WITHIN_S) -> None:
        """Until every message has been logged (JSON lines: `"msg":"<message>"`)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            missing = [m for m in messages if f'"msg":"{m}"' not in text]
            if not missing:
                return
            assert self.alive(), f"plyr {' '.join(self.args)} exited:\n{self.tail()}"
            assert asyncio.get_running_loop().time() < deadline, (
                f"plyr {' '.join(self.args)} did not log {missing}:\n{self.tail()}"
            )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


@dataclass
class Stack:
    """`plyr up` (indexer, resync, AppView, media) configured by .env.example."""

    net: PdsNetwork
    settings: dict[str, str]
    process: PlyrProcess
    http: aiohttp.ClientSession

    @property
    def appview_did(self) -> str:
        return self.settings["PLYR_SERVICE_DID"]

    @property
    def proxy(self) -> str:
        return f"{self.appview_did}#{APPVIEW_SERVICE}"

    @property
    def media_did(self) -> str:
        return self.settings["PLYR_MEDIA_SERVICE_DID"]

    @property
    def media_url(self) -> str:
        return self.settings["PLYR_MEDIA_PUBLIC_URL"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def stack(
    pds_network: PdsNetwork, database_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[Stack]:
    appview_port, media_port = free_ports(2)
    settings = example_env(pds_network, appview_port, media_port)
    # `plyr up` reads .env from its working directory, as the walkthrough has it.
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = process_env(
        database_url, tmp_path / "data",
        PLYR_MEDIA_WORKERS="1",
        # Reads here follow writes the test waited for: no cached answers in between.
        PLYR_APPVIEW_MICROCACHE_SECONDS="0", PLYR_APPVIEW_VIEW_CACHE_SECONDS="0",
    )  # fmt: skip
    process = PlyrProcess(["up"], env=env, cwd=tmp_path, log=tmp_path / "plyr-up.log")
    await process.start()
    try:
        # The indexer starts at the live end of a new database's stream: nothing is written
        # to the PDS before it is connected.
        await process.wait_logged("connected", "appview listening", "media service up")
        yield Stack(pds_network, settings, process, http)
    finally:
        await process.stop()


# ---- calls through the PDS -----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


async def via_pds(
    http: aiohttp.ClientSession,
    net: PdsNetwork,
    account: Account,
    nsid: str,
    *,
    proxy: str,
    params: Sequence[tuple[str, str]] | Mapping[str, str] | None = None,
    body: Any = None,
) -> Answer:
    """An XRPC call to the user's PDS, asking it to forward the call to `proxy` (did#service)."""
    headers = {"Authorization": f"Bearer {account.access_jwt}", "atproto-proxy": proxy}
    method = "GET" if body is None else "POST"
    async with http.request(
        method, f"{net.pds_url}/xrpc/{nsid}", params=params, json=body, headers=headers
    ) as resp:
        raw = await resp.read()
        return Answer(resp.status, resp.headers.copy(), orjson.loads(raw) if raw else None)


async def write(
    pds: PdsClient, account: Account, collection: str, record: Mapping[str, Any]
) -> tuple[str, str, str]:
    """createRecord (validate: false); returns (uri, cid, rev of the commit)."""
    r = await pds.call(
        "com.atproto.repo.createRecord",
        account=account,
        body={"repo": account.did, "collection": collection, "validate": False,
              "record": {"$type": collection, **record}},
    )  # fmt: skip
    return r["uri"], r["cid"], r["commit"]["rev"]


async def indexed(pool: asyncpg.Pool, table: str, uri: str) -> None:
    await eventually(
        lambda: pool.fetchval(f"SELECT true FROM {table} WHERE uri = $1", uri),
        f"{uri} in {table}",
        90,
    )


async def repo_rev_indexed(pool: asyncpg.Pool, did: str, rev: str) -> None:
    await eventually(
        lambda: pool.fetchval("SELECT true FROM actors WHERE did = $1 AND repo_rev >= $2", did, rev),
        f"actors.repo_rev of {did} at {rev}", 90,
    )  # fmt: skip


def track_record(
    title: str, audio_url: str = "https://cdn.example.com/a.mp3", **more: Any
) -> dict[str, Any]:
    return {
        "title": title,
        "artist": "E2E",
        "fileType": "mp3",
        "audioUrl": audio_url,
        "createdAt": now(),
        **more,
    }


def strong_ref(uri: str, cid: str) -> dict[str, str]:
    return {"uri": uri, "cid": cid}


# ---- every method ----------------------------------------------------------------------------


async def test_every_plyr_method_through_the_pds(
    stack: Stack, pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool
) -> None:
    lexicons = LexiconSet.load()
    # Every method a user's client calls. The moderators' methods (fm.plyr.moderation.*: an
    # allow-list of DIDs, our labeler's key) are tested with service auth in
    # tests/integration/moderation/; their route through a PDS is the same proxying as these.
    methods = {nsid: m for nsid, m in lexicons.methods.items()
               if nsid.startswith("fm.plyr.") and not nsid.startswith("fm.plyr.moderation.")}  # fmt: skip
    assert len(methods) >= 21 and {m.kind for m in methods.values()} == {"query", "procedure"}

    artist = await new_account(pds, pds_network, "artist")
    fan = await new_account(pds, pds_network, "fan")
    word = uuid.uuid4().hex[:12]
    profile_uri, _ = await pds.put_record(artist, "fm.plyr.actor.profile", "self",
                                          {"bio": f"bio {word}", "createdAt": now()})  # fmt: skip
    track_uri, track_cid, _ = await write(
        pds, artist, "fm.plyr.track", track_record(f"Proxied {word}")
    )
    list_uri, _, _ = await write(pds, artist, "fm.plyr.list", {
        "name": f"list {word}", "listType": "playlist",
        "items": [{"subject": strong_ref(track_uri, track_cid)}], "createdAt": now(),
    })  # fmt: skip
    like_uri, _, _ = await write(pds, fan, "fm.plyr.like",
                                 {"subject": strong_ref(track_uri, track_cid), "createdAt": now()})  # fmt: skip
    comment_uri, _, fan_rev = await write(pds, fan, "fm.plyr.comment", {
        "subject": strong_ref(track_uri, track_cid), "text": f"comment {word}",
        "timestampMs": 1500, "createdAt": now(),
    })  # fmt: skip
    for table, uri in (("profiles", profile_uri), ("tracks", track_uri), ("lists", list_uri),
                       ("likes", like_uri), ("comments", comment_uri)):  # fmt: skip
        await indexed(pool, table, uri)
    await repo_rev_indexed(pool, fan.did, fan_rev)
    # searchActors and handles in views need the artist's handle, verified in the background.
    await eventually(
        lambda: pool.fetchval("SELECT handle = $2 FROM actors WHERE did = $1", artist.did, artist.handle),
        f"the handle of {artist.did}", 90,
    )  # fmt: skip

    called: set[str] = set()

    async def call(nsid: str, params: Any = None, body: Any = None, status: int = 200) -> Answer:
        answer = await via_pds(
            stack.http, pds_network, fan, nsid, proxy=stack.proxy, params=params, body=body
        )
        called.add(nsid)
        assert answer.status == status, (nsid, answer.status, answer.body, stack.process.tail(1500))
        if status == 200:
            assert lexicons.check_output(methods[nsid], answer.body) == [], (nsid, answer.body)
        return answer

    def mentions(answer: Answer, *texts: str) -> bool:
        dumped = orjson.dumps(answer.body).decode()
        return all(t in dumped for t in texts)

    # Reads that depend on the viewer: the like shows, and the repo rev comes back.
    got = await call("fm.plyr.feed.getTrack", {"uri": track_uri})
    track = got.body["track"]
    assert (track["uri"], track["viewer"], track["likeCount"], track["commentCount"]) == (
        track_uri, {"like": like_uri}, 1, 1,
    )  # fmt: skip
    assert track["author"] == {"did": artist.did, "handle": artist.handle, "labels": []}
    assert got.headers[REPO_REV_HEADER] == fan_rev
    by_id = await call("fm.plyr.feed.getTrack", {"id": str(track["id"])})
    assert by_id.body["track"]["uri"] == track_uri
    tracks = await call("fm.plyr.feed.getTracks", [("uris", track_uri)])
    assert [t["viewer"] for t in tracks.body["tracks"]] == [{"like": like_uri}]
    latest = await call("fm.plyr.feed.getLatestTracks", {"artist": artist.did})
    assert [t["uri"] for t in latest.body["tracks"]] == [track_uri]
    assert latest.body["tracks"][0]["viewer"] == {"like": like_uri}
    artist_tracks = await call("fm.plyr.feed.getArtistTracks", {"actor": artist.handle})
    assert [t["uri"] for t in artist_tracks.body["tracks"]] == [track_uri]
    await call(
        "fm.plyr.feed.getTopTracks", {"period": "all", "limit": "5"}
    )  # rankings: cached, shape only

    # Public reads, asked through the PDS all the same.
    assert mentions(await call("fm.plyr.feed.getActorLikes", {"actor": fan.did}), track_uri)
    assert mentions(await call("fm.plyr.feed.getLikes", {"uri": track_uri}), fan.did)
    assert mentions(
        await call("fm.plyr.feed.getComments", {"uri": track_uri}), f"comment {word}", fan.did
    )
    assert mentions(
        await call("fm.plyr.actor.getProfile", {"actor": artist.did}), artist.did, f"bio {word}"
    )
    assert mentions(await call("fm.plyr.graph.getActorLists", {"actor": artist.did}), list_uri)
    assert mentions(await call("fm.plyr.graph.getList", {"uri": list_uri}), track_uri)
    assert mentions(await call("fm.plyr.search.searchTracks", {"q": word}), track_uri)
    assert mentions(await call("fm.plyr.search.searchActors", {"q": artist.handle}), artist.did)
    missing = await call("fm.plyr.feed.getTrack", {"uri": track_uri + "x"}, status=404)
    assert missing.body["error"] == "NotFound"

    # Plays: counted once per listener within the dedupe window.
    play = {"track": track_uri, "durationMs": 30_000}
    first = await call("fm.plyr.play.recordPlay", body=play)
    assert first.body == {"counted": True, "playCount": 1}
    assert first.headers[REPO_REV_HEADER] == fan_rev  # procedures answer a viewer's rev too
    assert (await call("fm.plyr.play.recordPlay", body=play)).body == {
        "counted": False,
        "playCount": 1,
    }
    plays = await call(
        "fm.plyr.stats.getTrackPlays", {"uri": track_uri, "interval": "hour", "days": "1"}
    )
    assert plays.body["total"] == 1 and sum(b["count"] for b in plays.body["buckets"]) == 1
    artist_plays = await call(
        "fm.plyr.stats.getArtistPlays", {"actor": artist.did, "interval": "day"}
    )
    assert sum(b["count"] for b in artist_plays.body["buckets"]) == 1
    await call("fm.plyr.stats.getPlatformStats")  # platform totals: cached, shape only

    # Queue and preferences: compare-and-set on the revision; a stale one is a 409 the PDS
    # passes through (status and error name), and changes nothing.
    queue = await call("fm.plyr.viewer.getQueue")
    assert queue.body == {"queue": {"items": []}, "revision": 0}
    assert queue.headers[REPO_REV_HEADER] == fan_rev
    put = await call(
        "fm.plyr.viewer.putQueue",
        body={"queue": {"items": [track_uri], "positionMs": 10}, "revision": 0},
    )
    assert put.body == {"revision": 1}
    stale = await call(
        "fm.plyr.viewer.putQueue", body={"queue": {"items": []}, "revision": 0}, status=409
    )
    assert (
        stale.body["error"] == "RevisionConflict"
        and "current revision is 1" in stale.body["message"]
    )
    queue = await call("fm.plyr.viewer.getQueue")
    assert queue.body == {"queue": {"items": [track_uri], "positionMs": 10}, "revision": 1}

    prefs = await call("fm.plyr.viewer.getPreferences")
    assert prefs.body == {"preferences": {}, "revision": 0}
    put = await call(
        "fm.plyr.viewer.putPreferences", body={"preferences": {"volume": 70}, "revision": 0}
    )
    put = await call(
        "fm.plyr.viewer.putPreferences", body={"preferences": {"volume": 80}, "revision": 1}
    )
    assert put.body == {"revision": 2}
    stale = await call(
        "fm.plyr.viewer.putPreferences",
        body={"preferences": {"volume": 1}, "revision": 1},
        status=409,
    )
    assert stale.body["error"] == "RevisionConflict"
    prefs = await call("fm.plyr.viewer.getPreferences")
    assert prefs.body == {"preferences": {"volume": 80}, "revision": 2}

    # Account data deletion (all of it: tests/e2e/test_account_data_e2e.py): the fan's play,
    # queue and preferences go; the receipt reads back the same.
    erased = await call("fm.plyr.actor.deleteAccountData", body={})
    assert (erased.body["did"], erased.body["status"]) == (fan.did, "done"), erased.body
    removed = {c["kind"]: c["count"] for c in erased.body["parts"][0]["removed"]}
    assert (removed["plays"], removed["queue"], removed["preferences"]) == (1, 1, 1), removed
    assert (await call("fm.plyr.actor.getAccountDataDeletion")).body == erased.body

    assert called == set(methods), f"not called through the PDS: {sorted(set(methods) - called)}"


# ---- publishing --------------------------------------------------------------------------------


def make_tone(path: Path, seconds: int = 2) -> bytes:
    subprocess.run(
        [ffmpeg_exe(None), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100", "-ac", "2", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path.read_bytes()


async def job_events(http: aiohttp.ClientSession, url: str, token: str) -> list[tuple[str, Any]]:
    """A job's Server-Sent Events, until `done` or `failed` (the stream closes after those)."""
    events: list[tuple[str, Any]] = []
    async with http.get(url, headers={"Authorization": f"Bearer {token}"},
                        timeout=aiohttp.ClientTimeout(total=300, sock_read=120)) as resp:  # fmt: skip
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        name = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: ") and name is not None:
                events.append((name, orjson.loads(line[len("data: ") :])))
                if name in ("done", "failed"):
                    return events
    raise AssertionError(f"the event stream of {url} ended without done/failed: {events}")


async def test_publish_upload_transcode_record_and_play(
    stack: Stack, pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    wav = await asyncio.to_thread(make_tone, tmp_path / "tone.wav")
    artist = await new_account(pds, pds_network, "publisher")
    upload_url = f"{stack.media_url}/upload/audio"

    # A token the PDS minted for the AppView is no good at media: the audiences differ.
    for_appview = await pds.get_service_auth(artist, stack.appview_did, LXM_UPLOAD_AUDIO)
    async with stack.http.post(
        upload_url, data=wav, headers={"Authorization": f"Bearer {for_appview}"}
    ) as resp:
        assert resp.status == 401, await resp.text()

    # What a client does: a token for media's DID and the upload method, from its own PDS.
    token = await pds.get_service_auth(artist, stack.media_did, LXM_UPLOAD_AUDIO)
    async with stack.http.post(
        upload_url, params={"title": "Proxy tone", "artist": "E2E"}, data=wav,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "audio/wav"},
    ) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()
        uploaded = await resp.json()
    assert (uploaded["format"], uploaded["lossless"], uploaded["size"]) == ("wav", True, len(wav))
    assert (
        uploaded["streamReady"] is False and uploaded["jobId"] is not None
    )  # lossless: transcoded to MP3
    stream_url = uploaded["streamUrl"]
    assert stream_url.startswith(stack.media_url + "/media/")

    # The client follows the transcode with the token it uploaded with.
    events = await job_events(
        stack.http, f"{stack.media_url}/jobs/{uploaded['jobId']}/events", token
    )
    last_name, last = events[-1]
    assert last_name == "done", events
    assert last["result"]["streamUrl"] == stream_url

    # ... then publishes the record in its own repo, naming the URL media returned.
    title = f"Published {uuid.uuid4().hex[:10]}"
    uri, _cid, rev = await write(pds, artist, "fm.plyr.track", track_record(
        title, stream_url, duration=round(uploaded["durationS"]),
    ))  # fmt: skip
    await indexed(pool, "tracks", uri)
    await repo_rev_indexed(pool, artist.did, rev)

    got = await via_pds(
        stack.http,
        pds_network,
        artist,
        "fm.plyr.feed.getTrack",
        proxy=stack.proxy,
        params={"uri": uri},
    )
    assert got.status == 200, got.body
    view = got.body["track"]
    assert (view["title"], view["audioUrl"], view["duration"], view["viewer"]) == (
        title,
        stream_url,
        2,
        {},
    )
    assert got.headers[REPO_REV_HEADER] == rev

    # It plays from our copy: the MP3 rendition media made.
    async with stack.http.get(view["audioUrl"]) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/mpeg"
        audio = await resp.read()
    assert len(audio) == last["result"]["size"] and (
        audio[:3] == b"ID3" or audio[:2] == b"\xff\xfb"
    )
    played = await via_pds(stack.http, pds_network, artist, "fm.plyr.play.recordPlay", proxy=stack.proxy,
                           body={"track": uri, "durationMs": 2000})  # fmt: skip
    assert (played.status, played.body) == (200, {"counted": True, "playCount": 1})


# ---- read after write --------------------------------------------------------------------------


async def test_read_after_write_repo_rev_through_the_pds(
    stack: Stack, pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool
) -> None:
    artist = await new_account(pds, pds_network, "raw")
    fan = await new_account(pds, pds_network, "rawfan")
    track_uri, track_cid, _ = await write(
        pds, artist, "fm.plyr.track", track_record("Read after write")
    )
    # The fan is known to the index (an earlier write) before the write under test.
    comment_uri, _, comment_rev = await write(pds, fan, "fm.plyr.comment", {
        "subject": strong_ref(track_uri, track_cid), "text": "first", "timestampMs": 0, "createdAt": now(),
    })  # fmt: skip
    await indexed(pool, "comments", comment_uri)
    await repo_rev_indexed(pool, fan.did, comment_rev)

    async def get_track() -> Answer:
        answer = await via_pds(stack.http, pds_network, fan, "fm.plyr.feed.getTrack",
                               proxy=stack.proxy, params={"uri": track_uri})  # fmt: skip
        assert answer.status == 200, answer.body
        return answer

    like_uri, _, like_rev = await write(pds, fan, "fm.plyr.like",
                                        {"subject": strong_ref(track_uri, track_cid), "createdAt": now()})  # fmt: skip
    assert like_rev > comment_rev
    # At once: the AppView may or may not have indexed the like yet. Either way the header
    # says which, consistently with the answer: the rev and the like come from one statement,
    # and the PDS passes the header through unchanged.
    at_once = await get_track()
    header = at_once.headers[REPO_REV_HEADER]
    assert comment_rev <= header <= like_rev
    assert (at_once.body["track"]["viewer"] == {"like": like_uri}) == (header == like_rev), (
        header,
        at_once.body,
    )

    # Once indexed, the header is the repo's rev: the client knows its write is in.
    await repo_rev_indexed(pool, fan.did, like_rev)
    after = await get_track()
    assert after.headers[REPO_REV_HEADER] == like_rev
    assert after.body["track"]["viewer"] == {"like": like_uri}
    assert (await pds.get_latest_commit(fan.did))["rev"] == like_rev
    assert await pool.fetchval("SELECT repo_rev FROM actors WHERE did = $1", fan.did) == like_rev

    # An account the index has never seen gets no header (nothing to compare with).
    stranger = await new_account(pds, pds_network, "stranger")
    unknown = await via_pds(stack.http, pds_network, stranger, "fm.plyr.feed.getTrack",
                            proxy=stack.proxy, params={"uri": track_uri})  # fmt: skip
    assert unknown.status == 200 and REPO_REV_HEADER not in unknown.headers
    assert unknown.body["track"]["viewer"] == {}


# ---- rate limits -------------------------------------------------------------------------------

WINDOW_S = 8
DID_LIMIT = 5
IP_LIMIT = 8
QUEUE = "fm.plyr.viewer.getQueue"
LATEST = "fm.plyr.feed.getLatestTracks"
IP_KEY = "appview:ip:127.0.0.1"  # core/ratelimit.py's key of a loopback client


@dataclass
class Serve:
    url: str  # where this test reaches it directly
    did: str
    process: PlyrProcess

    @property
    def proxy(self) -> str:
        return f"{self.did}#{APPVIEW_SERVICE}"


@pytest.fixture
async def two_appviews(
    pds_network: PdsNetwork, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Serve, Serve]]:
    """Two `plyr serve` processes on one database, each with its own did:web and port."""
    made: list[Serve] = []
    try:
        for name, port in zip("ab", free_ports(2), strict=True):
            folder = tmp_path / f"serve-{name}"
            folder.mkdir()
            settings = example_env(pds_network, port, 0)
            (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
            env = process_env(
                database_url, folder / "data",
                PLYR_RATE_LIMIT_LOOPBACK="true", PLYR_RATE_LIMIT_WINDOW_SECONDS=str(WINDOW_S),
                PLYR_RATE_LIMIT_DID=str(DID_LIMIT), PLYR_RATE_LIMIT_IP=str(IP_LIMIT),
                PLYR_RATE_LIMIT_SYNC_SECONDS="0.2", PLYR_APPVIEW_MICROCACHE_SECONDS="0",
            )  # fmt: skip
            process = PlyrProcess(["serve"], env=env, cwd=folder, log=folder / "serve.log")
            made.append(Serve(f"http://127.0.0.1:{port}", settings["PLYR_SERVICE_DID"], process))
            await process.start()
        for serve in made:
            await serve.process.wait_logged("appview listening")
        yield made[0], made[1]
    finally:
        for serve in made:
            await serve.process.stop()


async def in_one_window(phase: Callable[[int], Awaitable[T]], what: str) -> tuple[int, T]:
    """Run `phase` from the start of a rate-limit window (aligned on the epoch, as
    core/ratelimit.py's are); again from the next one when it did not end within it."""
    for _attempt in range(5):
        now_s = time.time()
        start = (int(now_s // WINDOW_S) + 1) * WINDOW_S
        await asyncio.sleep(start - now_s + 0.05)
        result = await phase(start)
        if time.time() < start + WINDOW_S:
            return start, result
    raise AssertionError(f"{what} never fitted in one {WINDOW_S} s window")


async def hits(pool: asyncpg.Pool, key: str, window_start: int) -> int:
    return await pool.fetchval(
        "SELECT coalesce(sum(hits), 0) FROM rate_limits WHERE key = $1 AND window_start = $2",
        key,
        window_start,
    )


async def has_hits(pool: asyncpg.Pool, key: str, window_start: int, count: int) -> bool:
    return await hits(pool, key, window_start) >= count


async def recover(ask: Callable[[], Awaitable[Answer]], window_end: int) -> Answer:
    """Ask again until allowed; the first 200 must come from the next window."""
    deadline = asyncio.get_running_loop().time() + WINDOW_S + 60
    while True:
        answer = await ask()
        if answer.status == 200:
            assert time.time() >= window_end, "allowed again before the window ended"
            return answer
        assert answer.status == 429, answer.body
        assert asyncio.get_running_loop().time() < deadline, "still limited long after the window"
        await asyncio.sleep(0.2)


async def test_rate_limits_shared_by_two_appviews(
    two_appviews: tuple[Serve, Serve], pds: PdsClient, pds_network: PdsNetwork,
    pool: asyncpg.Pool, http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    a, b = two_appviews
    fan = await new_account(pds, pds_network, "limited")
    did_key = f"appview:did:{fan.did}"

    async def until_refused(ask: Callable[[], Awaitable[Answer]], bound: int) -> list[Answer]:
        """Ask until a 429 (the last answer), at most `bound` times."""
        answers: list[Answer] = []
        for _ in range(bound):
            answers.append(await ask())
            if answers[-1].status == 429:
                return answers
            assert answers[-1].status == 200, answers[-1].body
        raise AssertionError(f"no 429 in {bound} requests")

    async def other_process_refuses(
        ask: Callable[[], Awaitable[Answer]], key: str, window_start: int, spent: int, limit: int
    ) -> tuple[int, Answer]:
        """The other process, after `spent` hits of `key` are in the shared count: how many it
        admits (each followed until its hit is in the shared row, which the same statement
        answers with the total) before it refuses."""
        admitted = 0
        while admitted < limit:
            answer = await ask()
            if answer.status == 429:
                return admitted, answer
            assert answer.status == 200, answer.body
            admitted += 1
            synced = functools.partial(has_hits, pool, key, window_start, spent + admitted)
            await eventually(synced, "B's sync")
        raise AssertionError(f"B admitted {admitted}: a budget of its own, not the shared one")

    async def proxied(serve: Serve) -> Answer:
        return await via_pds(http, pds_network, fan, QUEUE, proxy=serve.proxy)

    async def with_token(serve: Serve) -> Answer:
        """Straight to the AppView, with a token the client got from getServiceAuth."""
        token = await pds.get_service_auth(fan, serve.did, QUEUE)
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{serve.url}/xrpc/{QUEUE}", headers=headers) as resp:
            return Answer(resp.status, resp.headers.copy(), await resp.json())

    # Through the PDS: one address (the PDS's) for all its users, so a verified caller pays
    # per DID.
    async def did_phase(start: int) -> tuple[list[Answer], int, Answer, Answer]:
        answers_a = await until_refused(lambda: proxied(a), DID_LIMIT + 3)
        # A's hits reach the shared count (its sync), then B is asked for the same user.
        await eventually(lambda: has_hits(pool, did_key, start, DID_LIMIT), "A's sync")
        admitted_b, refused_b = await other_process_refuses(
            lambda: proxied(b), did_key, start, DID_LIMIT, DID_LIMIT
        )
        return answers_a, admitted_b, refused_b, await with_token(a)

    start, (answers_a, admitted_b, refused_b, direct_refused) = await in_one_window(
        did_phase, "the per-DID phase"
    )
    assert [x.status for x in answers_a] == [200] * DID_LIMIT + [429]
    # The PDS passes the status and the error name through. Not Retry-After: @atproto/pds
    # 0.5.35 keeps it on the upstream error (PipethroughUpstreamError.headers) but its XRPC
    # error middleware writes only status and body.
    refused_a = answers_a[-1]
    assert refused_a.body["error"] == "RateLimitExceeded"
    retry_after = refused_a.headers.get("Retry-After")
    assert retry_after is None or 1 <= int(retry_after) <= WINDOW_S
    # B admits what it takes before its first sync brings A's hits (the accepted overshoot,
    # core/ratelimit.py), then refuses: one budget, not one per process.
    assert refused_b.body["error"] == "RateLimitExceeded"
    assert 1 <= admitted_b < DID_LIMIT
    # Asked directly, the same user's budget is spent, and the answer says for how long.
    assert direct_refused.status == 429 and direct_refused.body["error"] == "RateLimitExceeded"
    assert "per account" in direct_refused.body["message"]
    assert 1 <= int(direct_refused.headers["Retry-After"]) <= WINDOW_S
    assert direct_refused.headers["RateLimit-Limit"] == str(DID_LIMIT)
    assert direct_refused.headers["RateLimit-Remaining"] == "0"
    assert direct_refused.headers["RateLimit-Reset"] == str(start + WINDOW_S)
    # Both processes' hits in the one shared row; none charged to the PDS's address.
    assert await hits(pool, did_key, start) == DID_LIMIT + admitted_b
    assert await hits(pool, IP_KEY, start) == 0
    # A new window, a new budget: through the PDS again, to the other process.
    await recover(lambda: proxied(b), start + WINDOW_S)

    # Directly and anonymously: the client address's budget, with the RateLimit-* headers.
    async def direct(serve: Serve) -> Answer:
        async with http.get(f"{serve.url}/xrpc/{LATEST}") as resp:
            return Answer(resp.status, resp.headers.copy(), await resp.json())

    async def ip_phase(start: int) -> tuple[list[Answer], int, Answer]:
        answers_a = await until_refused(lambda: direct(a), IP_LIMIT + 3)
        await eventually(lambda: has_hits(pool, IP_KEY, start, IP_LIMIT), "A's sync")
        admitted_b, refused_b = await other_process_refuses(
            lambda: direct(b), IP_KEY, start, IP_LIMIT, IP_LIMIT
        )
        return answers_a, admitted_b, refused_b

    start, (answers_a, admitted_b, refused_b) = await in_one_window(
        ip_phase, "the per-address phase"
    )
    assert [x.status for x in answers_a] == [200] * IP_LIMIT + [429]
    for i, answer in enumerate(answers_a):
        assert answer.headers["RateLimit-Limit"] == str(IP_LIMIT)
        assert answer.headers["RateLimit-Policy"] == f"{IP_LIMIT};w={WINDOW_S}"
        assert answer.headers["RateLimit-Reset"] == str(start + WINDOW_S)
        assert answer.headers["RateLimit-Remaining"] == str(max(0, IP_LIMIT - 1 - i))
    refused = answers_a[-1]
    assert refused.body["error"] == "RateLimitExceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= WINDOW_S
    assert 1 <= admitted_b < IP_LIMIT
    assert refused_b.headers["RateLimit-Reset"] == str(start + WINDOW_S)
    assert refused_b.headers["RateLimit-Remaining"] == "0" and "Retry-After" in refused_b.headers
    assert await hits(pool, IP_KEY, start) == IP_LIMIT + admitted_b
    again = await recover(lambda: direct(a), start + WINDOW_S)
    assert int(again.headers["RateLimit-Reset"]) >= start + 2 * WINDOW_S
    assert int(again.headers["RateLimit-Remaining"]) == IP_LIMIT - 1
