"""The front door in headless Chromium: `/` shows the figures, freshness and links; a real click
leads to the API reference, which lists fm.plyr.feed.getTrack with its params; the stylesheet is
applied under the strict CSP with no violation reported; both pages fit a phone's width."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from appview.app import build_app
from tests.browser.test_appview_embed_browser import Browser, chromium, start_site
from tests.integration.appview.conftest import Plc, World, appview_settings
from tests.integration.appview.test_front_door import seed, set_cursor
from tests.support.identity import local_resolver

pytestmark = pytest.mark.browser

PHONE_WIDTH = 390

# Registered before any page script could run (DevTools scripts are not subject to the page's
# CSP): every violation the page reports is kept for the test to read.
WATCH_CSP = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""

PAGE_STATE = """
(() => ({
  href: location.href,
  text: document.body.innerText,
  violations: window.__violations,
  scrollWidth: document.documentElement.scrollWidth,
  figuresDisplay: (document.querySelector('.figures') &&
                   getComputedStyle(document.querySelector('.figures')).display),
  bodyFont: getComputedStyle(document.body).fontFamily,
  links: [...document.querySelectorAll('a')].map(a => [a.textContent, a.href]),
}))()
"""


class WatchingBrowser(Browser):
    """Reads the console and log entries among the DevTools events the browser kept."""

    def __init__(self, inner: Browser) -> None:
        super().__init__(inner.ws)
        self.ids = inner.ids
        self.session = inner.session

    def console_problems(self) -> list[str]:
        out = []
        for event in self.events:
            if event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] in ("error", "warning"):
                out.append(event["params"]["entry"]["text"])
            elif event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] in ("error", "warning"):
                out.append(str(event["params"]["args"]))
        return out

    async def wait_loaded(self, path: str) -> dict[str, Any]:
        for _ in range(100):
            state = await self.evaluate("[location.pathname, document.readyState]")
            if state == [path, "complete"]:
                return dict(await self.evaluate(PAGE_STATE))
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} did not load")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (scrolled into view first)."""
        rect = await self.evaluate(
            f"(() => {{ const e = document.querySelector({orjson.dumps(selector).decode()}); "
            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent",
                            {"type": kind, "x": rect[0], "y": rect[1], "button": "left", "clickCount": 1})


async def test_front_door_in_chromium(pool: Any, plc: Plc, tmp_path: Path) -> None:
    world = World(pool, plc)
    await seed(world)  # 3 tracks, 2 artists, 3 likes, 2 plays once the hidden account is left out
    await set_cursor(pool, "wss://relay.example.test", 777, datetime.now(UTC) - timedelta(seconds=5))

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
        async with chromium(tmp_path / "profile") as inner:
            browser = WatchingBrowser(inner)
            await browser.send("Emulation.setDeviceMetricsOverride", {
                "width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 2, "mobile": True})
            for domain in ("Page", "Runtime", "Log"):
                await browser.send(f"{domain}.enable")
            await browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_CSP})

            await browser.send("Page.navigate", {"url": f"{base}/"})
            home = await browser.wait_loaded("/")
            text = home["text"]
            for label, value in (("Tracks", "3"), ("Artists", "2"), ("Likes", "3"), ("Plays", "2")):
                assert f"{label}\n{value}" in text, text
            assert "wss://relay.example.test" in text and "777" in text and "lag" in text
            assert "plyr-appview" in text
            links = dict(home["links"])
            assert links["API reference"] == f"{base}/api"
            assert links["/openapi.json"] == f"{base}/openapi.json"
            assert home["figuresDisplay"] == "grid"  # the stylesheet applied: its hash matched
            assert "system-ui" in home["bodyFont"]
            assert home["scrollWidth"] <= PHONE_WIDTH, home["scrollWidth"]  # no sideways scrolling
            assert home["violations"] == [], home["violations"]

            # follow the link from / to the reference with a real click
            await browser.click("#api-link")
            api = await browser.wait_loaded("/api")
            assert api["href"] == f"{base}/api"
            assert "API reference" in api["text"]
            assert api["violations"] == [] and api["scrollWidth"] <= PHONE_WIDTH, api
            section = await browser.evaluate(
                "document.getElementById('fm.plyr.feed.getTrack').innerText")
            assert "GET /xrpc/fm.plyr.feed.getTrack" in section
            # a table row's cells come out tab-separated
            assert "uri\tstring (at-uri)\toptional" in section, section
            assert "id\tinteger\toptional\t≥ 1" in section, section
            assert "NotFound" in section
            assert f"curl '{base}/xrpc/fm.plyr.feed.getTrack?uri=at://" in section
            assert (await browser.evaluate(
                "document.getElementById('fm.plyr.play.recordPlay').innerText")).count("required") >= 2
            # the in-page links of the contents lead to the method
            await browser.click("nav a[href='#fm.plyr.feed.getTrack']")
            await asyncio.sleep(0.3)
            assert await browser.evaluate("location.hash") == "#fm.plyr.feed.getTrack"
            assert await browser.evaluate(
                "Math.abs(document.getElementById('fm.plyr.feed.getTrack').getBoundingClientRect().top) < 5")
            api_links = dict(await browser.evaluate(
                "[...document.querySelectorAll('a')].map(a => [a.textContent, a.href])"))
            assert api_links["/openapi.json"] == f"{base}/openapi.json"

            # and /openapi.json is there, naming the same method
            await browser.click("a[href='/openapi.json']")
            for _ in range(50):
                if await browser.evaluate("location.pathname") == "/openapi.json":
                    break
                await asyncio.sleep(0.1)
            spec = orjson.loads(await browser.evaluate("document.body.innerText"))
            assert "/xrpc/fm.plyr.feed.getTrack" in spec["paths"]

            problems = browser.console_problems()
            assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    finally:
        await runner.cleanup()
        await resolver.close()
