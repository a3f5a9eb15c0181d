"""`plyr publish` end to end, run the way a musician runs it: `python -m plyr publish ...` as a
subprocess, against the real PDS + PLC of the harness and the real `plyr up` (the indexer
following that PDS's firehose, the AppView, the media service with real ffmpeg).

- login: a handle that does not resolve, a wrong password (one line, exit 1, no traceback),
  then an app password; the session file is owner-only; two commands renewing the session at
  once both work and leave a working session;
- a track from a FLAC whose tags (title, artist, album) and embedded cover fill the record:
  uploaded, transcoded, written, then found again instead of published twice;
- an album folder whose play order comes from track-number tags, interrupted by a corrupt file
  whose transcode fails (the job's error, one line), resumed after the file is fixed and the
  state file lost, without a duplicate; a third run changes nothing;
- edit (and a stale swap refused), delete (the record, its list entry and our copy of its
  media; a cover other tracks use is kept);
- the AppView shows exactly what was published: titles, the album list in order, each track
  playing from our copy (the bytes fetched from media).
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from mutagen.flac import FLAC, Picture
from PIL import Image

from media.ffmpeg import ffmpeg_exe
from publish.media_client import sha256_in_url

from .pds_client import Account, PdsClient
from .pds_network import PdsNetwork, new_account
from .test_indexer_e2e import eventually
from .test_service_proxy_e2e import PlyrProcess, Stack, example_env, free_ports, http, process_env

pytestmark = pytest.mark.e2e
__all__ = ["http"]  # the fixture, used by `stack`

CLI_TIMEOUT_S = 300.0


@pytest.fixture
async def stack(
    pds_network: PdsNetwork, database_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[Stack]:
    """`plyr up` configured by .env.example (as in test_service_proxy_e2e), one attempt per
    media job so that a corrupt file's transcode fails at once."""
    appview_port, media_port = free_ports(2)
    settings = example_env(pds_network, appview_port, media_port)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = process_env(
        database_url, tmp_path / "data", PLYR_MEDIA_WORKERS="2", PLYR_MEDIA_JOB_MAX_ATTEMPTS="1",
        PLYR_APPVIEW_MICROCACHE_SECONDS="0", PLYR_APPVIEW_VIEW_CACHE_SECONDS="0",
    )  # fmt: skip
    process = PlyrProcess(["up"], env=env, cwd=tmp_path, log=tmp_path / "plyr-up.log")
    await process.start()
    try:
        await process.wait_logged("connected", "appview listening", "media service up")
        yield Stack(pds_network, settings, process, http)
    finally:
        await process.stop()


# ---- the musician's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


class Musician:
    """Runs `plyr publish` in a folder of its own, with only the settings a musician sets."""

    def __init__(self, net: PdsNetwork, stack: Stack, home: Path) -> None:
        self.home = home
        self.config = home / "config"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PLYR_") and k != "DATABASE_URL"}
        self.env.update(
            PLYR_CONFIG_DIR=str(self.config),
            PLYR_PUBLISH_MEDIA_URL=stack.media_url,
            PLYR_PUBLISH_APPVIEW_URL=stack.settings["PLYR_PUBLIC_URL"],
            PLYR_ALLOW_PRIVATE_NETWORK="true",  # the harness's PDS and PLC are on loopback
            **net.identity_env(),
        )

    async def start(self, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plyr", "publish", *args, cwd=self.home, env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    async def run(self, *args: str, env: dict[str, str] | None = None, code: int | None = 0) -> Run:
        proc = await self.start(*args, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
        done = Run(proc.returncode or 0, out.decode(), err.decode())
        assert "Traceback" not in done.err, done.err
        if code is not None:
            assert done.code == code, (args, done)
        return done


def one_line_error(run: Run) -> str:
    """The error line of a failed command: exit 1 and `error: ...` as its last line."""
    assert run.code == 1, run
    last = run.err.strip().splitlines()[-1]
    assert last.startswith("error: "), run.err
    return last


def make_audio(path: Path, *, freq: int, tags: dict[str, str], seconds: int = 2) -> None:
    meta = [arg for key, value in tags.items() for arg in ("-metadata", f"{key}={value}")]
    subprocess.run(
        [ffmpeg_exe(None), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate=44100", "-ac", "2", *meta, str(path)],
        check=True, timeout=60,
    )  # fmt: skip


def make_png(path: Path, color: tuple[int, int, int]) -> bytes:
    Image.new("RGB", (64, 64), color).save(path, "PNG")
    return path.read_bytes()


def embed_cover(flac: Path, png: bytes) -> None:
    audio = FLAC(flac)
    picture = Picture()
    picture.type = 3
    picture.mime = "image/png"
    picture.data = png
    audio.add_picture(picture)
    audio.save()


def corrupt_audio_frames(flac: Path) -> None:
    """Keep the FLAC's metadata (tags, duration) and overwrite its audio with noise: the tags
    read fine and the media service accepts the upload, then the transcode fails."""
    data = bytearray(flac.read_bytes())
    offset = 4
    while True:
        header = data[offset]
        offset += 4 + int.from_bytes(data[offset + 1 : offset + 4], "big")
        if header & 0x80:
            break
    data[offset:] = os.urandom(len(data) - offset)
    flac.write_bytes(bytes(data))


async def records(pds: PdsClient, did: str, collection: str) -> dict[str, dict[str, Any]]:
    return {r.uri: r.value for r in await pds.list_records(did, collection)}


async def appview_get(http: aiohttp.ClientSession, stack: Stack, nsid: str, **params: str) -> tuple[int, Any]:
    async with http.get(f"{stack.settings['PLYR_PUBLIC_URL']}/xrpc/{nsid}", params=params) as resp:
        return resp.status, await resp.json(content_type=None)


async def plays_from_our_copy(http: aiohttp.ClientSession, stack: Stack, url: str) -> None:
    assert url.startswith(stack.media_url + "/media/"), url
    async with http.get(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/mpeg", (url, resp.status)
        data = await resp.read()
    assert data[:3] == b"ID3" or data[:2] == b"\xff\xfb", data[:16]


async def app_password(pds: PdsClient, account: Account) -> str:
    made = await pds.call("com.atproto.server.createAppPassword", account=account, body={"name": "plyr publish"})
    return str(made["password"])


# ---- the test ----------------------------------------------------------------------------------


async def test_publish_login_track_album_edit_delete(
    stack: Stack, pds: PdsClient, pds_network: PdsNetwork, pool: asyncpg.Pool, tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    account = await new_account(pds, pds_network, "musician")
    password = await app_password(pds, account)
    me = Musician(pds_network, stack, tmp_path / "musician")

    # ---- login ----
    missing = await me.run("login", f"nobody-{uuid.uuid4().hex[:8]}.test", "--password", "x", code=1)
    assert "handle not found" in one_line_error(missing)
    wrong = await me.run("login", account.handle, "--password", "wrong-password", code=1)
    assert "wrong handle or password" in one_line_error(wrong)
    assert (await me.run("whoami", code=1)).err.strip().endswith("not logged in: run `plyr publish login HANDLE` first")
    logged = await me.run("login", account.handle, env={"PLYR_PUBLISH_PASSWORD": password})
    assert account.did in logged.out
    session_file = me.config / "publish-session.json"
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(me.config.stat().st_mode) == 0o700
    assert password not in session_file.read_text()
    # Two commands renewing the session at once: both succeed, and the stored session works.
    both = await asyncio.gather(me.run("whoami", "--refresh"), me.run("whoami", "--refresh"))
    assert all(account.handle in r.out for r in both)
    notes = sorted(r.err.strip().splitlines()[-1] for r in both)
    assert notes in (
        ["session renewed", "session renewed by another command just now"],  # at once: renewed once
        ["session renewed", "session renewed"],  # one after the other: each renewed the newest
    ), notes
    assert account.handle in (await me.run("whoami")).out

    # ---- one track: tags and embedded cover from the file ----
    single = me.home / "morning.flac"
    make_audio(single, freq=330, tags={"title": "Morning Tone", "artist": "Ann Example", "album": "Singles"})
    embed_cover(single, make_png(me.home / "art.png", (200, 40, 40)))
    published = await me.run("track", str(single), "--tags", "ambient, test", "--description", "first light")
    single_uri = published.out.strip()
    assert single_uri.startswith(f"at://{account.did}/fm.plyr.track/"), published
    assert "on the AppView: " in published.err
    value = (await records(pds, account.did, "fm.plyr.track"))[single_uri]
    assert (value["title"], value["artist"], value["album"], value["fileType"], value["duration"]) == (
        "Morning Tone", "Ann Example", "Singles", "mp3", 2,
    )  # fmt: skip
    assert value["tags"] == ["ambient", "test"] and value["description"] == "first light"
    assert value["imageUrl"].startswith(stack.media_url + "/media/images/")
    async with http.get(value["imageUrl"]) as resp:
        assert resp.status == 200
        image = await resp.read()
    assert image[:4] == b"RIFF" and image[8:12] == b"WEBP"  # media's display rendition of the art
    await plays_from_our_copy(http, stack, value["audioUrl"])
    again = await me.run("track", str(single))
    assert again.out.strip() == single_uri and "already published" in again.err
    # A file the media service refuses: its reason, in one line.
    make_audio(me.home / "not-a-picture.wav", freq=200, tags={})
    refused = await me.run("track", str(single), "--again", "--cover", str(me.home / "not-a-picture.wav"), code=1)
    assert one_line_error(refused) == (
        "error: could not upload not-a-picture.wav: the media service refused it "
        "(UnsupportedMediaType: expected an image file, got wav (audio) (HTTP 415))"
    )
    assert len(await records(pds, account.did, "fm.plyr.track")) == 1

    # ---- an album folder, interrupted by a corrupt file, resumed ----
    album = me.home / "Night Songs"
    album.mkdir()
    make_png(album / "cover.png", (20, 20, 120))
    # File names sort differently from the track numbers: the tags decide the order.
    plan = [("d-first.flac", 1, "Dusk"), ("c-second.mp3", 2, "Stars"), ("b-third.flac", 3, "Owls"), ("a-fourth.flac", 4, "Dawn")]
    for i, (name, number, title) in enumerate(plan):
        make_audio(album / name, freq=400 + 60 * i, tags={"title": title, "artist": "Ann Example",
                                                          "album": "Night Songs", "track": str(number)})  # fmt: skip
    corrupt_audio_frames(album / "b-third.flac")
    failed = await me.run("folder", str(album), code=1)
    error = one_line_error(failed)  # the job's own error follows, e.g. "ffmpeg wrote no readable MP3: ..."
    assert error.startswith("error: transcode b-third.flac failed on the media service: "), error
    state = (album / ".plyr-publish.json").read_text()
    assert state.count('"uri"') == 2, state
    tracks = await records(pds, account.did, "fm.plyr.track")
    assert sorted(v["title"] for v in tracks.values()) == ["Dusk", "Morning Tone", "Stars"]
    assert await records(pds, account.did, "fm.plyr.list") == {}

    # The musician fixes the file; the state file is lost too: the PDS still knows what is done.
    make_audio(album / "b-third.flac", freq=520, tags={"title": "Owls", "artist": "Ann Example",
                                                       "album": "Night Songs", "track": "3"})  # fmt: skip
    (album / ".plyr-publish.json").unlink()
    resumed = await me.run("folder", str(album))
    assert resumed.err.count("already published") == 2, resumed.err
    list_uri = resumed.out.strip()
    tracks = await records(pds, account.did, "fm.plyr.track")
    assert sorted(v["title"] for v in tracks.values()) == sorted(["Morning Tone", "Dusk", "Stars", "Owls", "Dawn"])
    lists = await records(pds, account.did, "fm.plyr.list")
    assert list(lists) == [list_uri] and lists[list_uri]["name"] == "Night Songs"
    assert lists[list_uri]["listType"] == "album"
    order = [tracks[item["subject"]["uri"]]["title"] for item in lists[list_uri]["items"]]
    assert order == ["Dusk", "Stars", "Owls", "Dawn"]
    cids = {r.uri: r.cid for r in await pds.list_records(account.did, "fm.plyr.list")}
    third = await me.run("folder", str(album))
    assert third.out.strip() == list_uri and "list up to date" in third.err and third.err.count("already published") == 4
    assert {r.uri: r.cid for r in await pds.list_records(account.did, "fm.plyr.list")} == cids
    assert len(await records(pds, account.did, "fm.plyr.track")) == 5
    by_title = {v["title"]: uri for uri, v in tracks.items()}
    covers = {tracks[by_title[t]]["imageUrl"] for t in ("Dusk", "Stars", "Owls", "Dawn")}
    assert len(covers) == 1  # the folder's cover.png, uploaded once

    # ---- a second album, its command killed (SIGKILL) once two tracks are in: resumed ----
    b_sides = me.home / "B-Sides"
    b_sides.mkdir()
    for number in range(1, 6):
        make_audio(b_sides / f"{number:02d}.flac", freq=700 + 40 * number,
                   tags={"title": f"Side {number}", "album": "B-Sides", "track": str(number)})  # fmt: skip
    killed = await me.start("folder", str(b_sides), "--artist", "Ann Example")

    async def two_in() -> bool:
        state = b_sides / ".plyr-publish.json"
        return state.exists() and state.read_text().count('"uri"') >= 2

    await eventually(two_in, "two B-Sides tracks in the state file", 120)
    assert killed.returncode is None, "the command finished before it could be interrupted"
    os.killpg(killed.pid, signal.SIGKILL)
    await killed.wait()
    await killed.communicate()
    resumed_b = await me.run("folder", str(b_sides), "--artist", "Ann Example")
    b_list = resumed_b.out.strip()
    tracks = await records(pds, account.did, "fm.plyr.track")
    b_titles = sorted(v["title"] for v in tracks.values() if v.get("album") == "B-Sides")
    assert b_titles == [f"Side {n}" for n in range(1, 6)], b_titles  # each once: no duplicate
    lists = await records(pds, account.did, "fm.plyr.list")
    assert len(lists) == 2 and lists[b_list]["name"] == "B-Sides"
    assert [tracks[i["subject"]["uri"]]["title"] for i in lists[b_list]["items"]] == [f"Side {n}" for n in range(1, 6)]
    assert all(tracks[i["subject"]["uri"]]["artist"] == "Ann Example" for i in lists[b_list]["items"])
    tracks = {uri: v for uri, v in tracks.items() if v.get("album") != "B-Sides"}

    # ---- the AppView shows the album in order, playing from our copy ----
    async def album_shown() -> Any:
        status, body = await appview_get(http, stack, "fm.plyr.graph.getList", uri=list_uri)
        return body if status == 200 and len(body.get("tracks", [])) == 4 else None

    shown = await eventually(album_shown, f"the album {list_uri} on the AppView\n{stack.process.tail(1500)}", 90)
    assert [t["title"] for t in shown["tracks"]] == ["Dusk", "Stars", "Owls", "Dawn"]
    for view in shown["tracks"]:
        assert view["audioUrl"] == tracks[view["uri"]]["audioUrl"]
        await plays_from_our_copy(http, stack, view["audioUrl"])

    # ---- edit: a new title, written with a swap on the CID read ----
    edited = await me.run("edit", by_title["Stars"], "--title", "Stars Again")
    assert "changed: title" in edited.err
    assert (await records(pds, account.did, "fm.plyr.track"))[by_title["Stars"]]["title"] == "Stars Again"
    stale_cid = edited.out.split()[1]
    await me.run("edit", by_title["Stars"], "--description", "sung twice")
    stale = await asyncio.to_thread(_put_with_stale_cid, me.config, by_title["Stars"], stale_cid)
    assert "InvalidSwap" in stale, stale
    assert (await records(pds, account.did, "fm.plyr.track"))[by_title["Stars"]]["description"] == "sung twice"

    # ---- delete: the record, its list entry, our copy of its media ----
    dawn = tracks[by_title["Dawn"]]
    deleted = await me.run("delete", by_title["Dawn"], "--yes")
    assert "deleted our copy" in deleted.err and "took it out of the list Night Songs" in deleted.err
    assert "another of your tracks uses it" in deleted.err  # the album cover stays
    async with http.get(dawn["audioUrl"]) as resp:
        assert resp.status == 404
    async with http.get(dawn["imageUrl"]) as resp:
        assert resp.status == 200
    single_value = (await records(pds, account.did, "fm.plyr.track"))[single_uri]
    await me.run("delete", single_uri, "--yes")
    for url in (single_value["audioUrl"], single_value["imageUrl"]):
        async with http.get(url) as resp:
            assert resp.status == 404, url
    gone = [sha256_in_url(single_value["audioUrl"]), sha256_in_url(single_value["imageUrl"])]
    assert await pool.fetchval("SELECT count(*) FROM media_objects WHERE sha256 = ANY($1)", gone) == 0

    # ---- the AppView shows exactly what is published now ----
    expected = ["Dusk", "Stars Again", "Owls"]
    sides = [f"Side {n}" for n in range(1, 6)]

    async def caught_up() -> Any:
        status, body = await appview_get(http, stack, "fm.plyr.feed.getArtistTracks", actor=account.did)
        titles = sorted(t["title"] for t in body.get("tracks", [])) if status == 200 else None
        orders = []
        for uri in (list_uri, b_list):
            listed = await appview_get(http, stack, "fm.plyr.graph.getList", uri=uri)
            orders.append([t["title"] for t in listed[1].get("tracks", [])] if listed[0] == 200 else None)
        done = titles == sorted(expected + sides) and orders == [expected, sides]
        return (titles, orders) if done else None

    await eventually(caught_up, "the AppView showing the published tracks", 90)
    for title in expected:
        status, body = await appview_get(http, stack, "fm.plyr.feed.getTrack", uri=by_title[title.replace(" Again", "")])
        assert status == 200 and body["track"]["title"] == title
        await plays_from_our_copy(http, stack, body["track"]["audioUrl"])
    status, _ = await appview_get(http, stack, "fm.plyr.feed.getTrack", uri=by_title["Dawn"])
    assert status == 404

    # ---- logout ----
    out = await me.run("logout")
    assert account.did in out.out and not session_file.exists()
    await me.run("whoami", code=1)


def _put_with_stale_cid(config: Path, uri: str, cid: str) -> str:
    """What the PDS answers a write swapping on a CID that is no longer the record's."""
    from publish.errors import PublishError
    from publish.records import Repo
    from publish.session import load_session

    repo = Repo(load_session(config))
    _, value = repo.get(uri)
    try:
        repo.put(uri, {**value, "title": "lost edit"}, cid, "track")
    except PublishError as exc:
        return str(exc)
    return "written"
