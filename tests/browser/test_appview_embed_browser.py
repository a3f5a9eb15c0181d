"""The embed player in headless Chromium (Debian's /usr/bin/chromium, driven over the DevTools
protocol): the page renders at the oEmbed iframe size, its <audio> loads a real MP3 (made with
ffmpeg) served with Range support, plays, and seeks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from aiohttp import web

from appview.app import build_app
from appview.web_pages import EMBED_HEIGHT, EMBED_WIDTH
from tests.conftest import skip_unless_required
from tests.integration.appview.conftest import Plc, World, appview_settings
from tests.support.identity import local_resolver

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("PLYR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def make_media(folder: Path) -> None:
    import imageio_ffmpeg
    from PIL import Image

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "sine=frequency=440:duration=8", "-ac", "1", "-ar", "44100", "-b:a", "64k",
         str(folder / "tone.mp3")],
        check=True,
    )
    Image.new("RGB", (120, 120), (200, 40, 90)).save(folder / "cover.png")


async def start_site(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


class Browser:
    """A minimal DevTools protocol client: one page target, commands with replies."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []  # DevTools events that arrived between replies

    async def send(self, method: str, params: dict[str, Any] | None = None, *, page: bool = True) -> dict[str, Any]:
        msg_id = next(self.ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if page and self.session:
            msg["sessionId"] = self.session
        await self.ws.send(orjson.dumps(msg).decode())
        while True:
            reply = orjson.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                      "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


async def loaded(browser: Browser, url: str) -> None:
    """Until the page at `url` has loaded (progress, not a fixed sleep; bounded for a stuck
    browser)."""
    for _ in range(600):
        state = await browser.evaluate("[location.href, document.readyState]")
        if state == [url, "complete"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not load: {state}")


def _have_chromium() -> bool:
    return Path(CHROMIUM).exists()


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    if not _have_chromium():
        skip_unless_required(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", "--autoplay-policy=no-user-gesture-required",
        "--no-first-run", "--mute-audio", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            if not line:
                raise RuntimeError("chromium exited before listening")
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            url = match.group(1) if match else None
        async with websockets.connect(url, max_size=None) as ws:
            browser = Browser(ws)
            target = await browser.send("Target.createTarget", {"url": "about:blank"}, page=False)
            attached = await browser.send("Target.attachToTarget",
                                          {"targetId": target["targetId"], "flatten": True}, page=False)
            browser.session = attached["sessionId"]
            yield browser
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


PLAY_AND_SEEK = """
(async () => {
  const a = document.getElementById('audio');
  const wait = (ev) => new Promise((ok, fail) => {
    a.addEventListener(ev, ok, {once: true});
    a.addEventListener('error', () => fail('audio error ' + (a.error && a.error.code)), {once: true});
  });
  if (a.readyState < 1) await wait('loadedmetadata');
  const duration = a.duration;
  await a.play();
  await new Promise(r => setTimeout(r, 700));
  const playedTo = a.currentTime;
  const seeked = wait('seeked');
  a.currentTime = 5.5;
  await seeked;
  const afterSeek = a.currentTime;
  await new Promise(r => setTimeout(r, 400));
  const img = document.querySelector('img.cover');
  return {
    duration, playedTo, afterSeek, afterSeekPlaying: a.currentTime, paused: a.paused,
    src: a.currentSrc, title: document.getElementById('title').textContent,
    artist: document.getElementById('artist').textContent,
    coverWidth: img ? img.naturalWidth : 0,
    scrollWidth: document.documentElement.scrollWidth, scrollHeight: document.documentElement.scrollHeight,
    audioBottom: a.getBoundingClientRect().bottom,
  };
})()
"""


async def test_embed_page_plays_and_seeks_in_chromium(pool: Any, plc: Plc) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_media(folder)
        media = web.Application()
        media.router.add_static("/media", folder)  # FileResponse: Range requests, so seeking works
        media_runner, media_url = await start_site(media)

        world = World(pool, plc)
        ann = await world.account("ann", display_name="Ann Tone")
        uri = await world.track(ann, "Four Forty", duration=8, audioUrl=f"{media_url}/media/tone.mp3",
                                imageUrl=f"{media_url}/media/cover.png")
        short_id = await pool.fetchval("SELECT short_id FROM tracks WHERE uri = $1", uri)

        resolver = local_resolver(plc.url)
        # The public URL is only known once bound: build the app for the port we got.
        probe_runner, base = await start_site(web.Application())
        await probe_runner.cleanup()
        port = int(base.rsplit(":", 1)[1])
        app = build_app(pool, appview_settings(public_url=base, port=port), resolver=resolver)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with chromium(folder / "profile") as browser:
                await browser.send("Emulation.setDeviceMetricsOverride", {
                    "width": EMBED_WIDTH, "height": EMBED_HEIGHT, "deviceScaleFactor": 1, "mobile": False})
                await browser.send("Page.enable")
                await browser.send("Page.navigate", {"url": f"{base}/embed/track/{short_id}"})
                await loaded(browser, f"{base}/embed/track/{short_id}")
                result = await browser.evaluate(PLAY_AND_SEEK)

                assert result["title"] == "Four Forty" and result["artist"] == "Ann Tone"
                assert result["src"] == f"{media_url}/media/tone.mp3"
                assert 7.5 < result["duration"] < 8.5  # the audio really loaded
                assert result["playedTo"] > 0.2 and not result["paused"]  # and plays
                assert 5.4 <= result["afterSeek"] <= 5.7  # seeking lands where asked
                assert result["afterSeekPlaying"] > result["afterSeek"]  # and keeps playing
                assert result["coverWidth"] == 120
                # fits the oEmbed iframe: no scrolling, the player fully visible
                assert result["scrollWidth"] <= EMBED_WIDTH and result["scrollHeight"] <= EMBED_HEIGHT
                assert result["audioBottom"] <= EMBED_HEIGHT

                # the track page: its oEmbed discovery link leads to an iframe of the embed
                await browser.send("Page.navigate", {"url": f"{base}/track/{short_id}"})
                await loaded(browser, f"{base}/track/{short_id}")
                href = await browser.evaluate(
                    "document.querySelector('link[type=\"application/json+oembed\"]').href")
                # Fetched from here: the page's CSP (rightly) lets no script of it fetch anything.
                async with aiohttp.ClientSession() as http, http.get(href) as resp:
                    oembed = await resp.json()
                assert f"{base}/embed/track/{short_id}" in oembed["html"]
        finally:
            await runner.cleanup()
            await media_runner.cleanup()
            await resolver.close()
