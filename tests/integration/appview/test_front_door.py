"""The front door: `/` (figures, freshness, relay, version, links) and `/api` (the reference
generated from the lexicons): status, headers, figures after seeding through the indexer's
write path, estimates above the exact range, no 500 without a database, and escaping of hostile
lexicon text."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appview import front_door
from appview.app import ROUTES, build_app
from appview.front_door import PAGE_CSP, Figure, read_figures
from appview.labels import Moderation
from appview.methods.plays import add_plays
from appview.xrpc_schema import LexiconSet
from core.settings import FirehoseSettings
from core.settings_spec import spec_of
from indexer import settings as indexer_settings
from indexer.writer import CursorUpdate, apply_batch, default_lexicons
from tests.integration.appview.conftest import PUBLIC_URL, AppFactory, Plc, World, appview_settings
from tests.support.identity import local_resolver

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Well-formedness for our own markup: every element closed in order, ids unique, no script,
    no inline style attribute, no event handler attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ids: set[str] = set()
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.problems.append("script element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "id":
                if value in self.ids:
                    self.problems.append(f"duplicate id {value}")
                self.ids.add(value or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not self.stack or self.stack[-1] not in ("style", "title"):
            self.text.append(data)


def check_html(page: str) -> str:
    """The page's text; fails on malformed markup."""
    assert page.startswith("<!doctype html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.problems, checker.problems
    assert checker.stack == [], checker.stack
    return " ".join(" ".join(checker.text).split())


def check_headers(resp: Any) -> None:
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Content-Security-Policy"] == PAGE_CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src" not in PAGE_CSP and "'unsafe-inline'" not in PAGE_CSP
    assert PAGE_CSP.startswith("default-src 'none'")


async def seed(world: World) -> None:
    ann = await world.account("ann")
    bob = await world.account("bob")
    cat = await world.account("cat")
    t1 = await world.track(ann, "One")
    await world.track(ann, "Two")
    t3 = await world.track(bob, "Three")
    await world.like(bob, t1)
    await world.like(cat, t1)
    await world.like(cat, t3)
    # a hidden account's track and like are in no figure
    hidden = await world.account("hid")
    await world.track(hidden, "Hidden")
    await world.like(hidden, t1)
    await world.hide(hidden)
    async with world.pool.acquire() as conn, conn.transaction():
        await add_plays(conn, [(t1, ann.did, listener, None, None)
                               for listener in ("did:plc:listener1", "did:plc:listener2")])


async def set_cursor(pool: asyncpg.Pool, source: str, seq: int, event_time: datetime) -> None:
    async with pool.acquire() as conn:
        await apply_batch(conn, [], lexicons=default_lexicons(), cursor=CursorUpdate(source, seq, event_time))


async def test_home_page_figures_freshness_relay_version(
    world: World, make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLYR_RELAY_URL", "wss://relay.example.test")
    monkeypatch.delenv("PLYR_INDEXER_SOURCE", raising=False)
    await seed(world)
    event_time = datetime.now(UTC) - timedelta(seconds=42)
    await set_cursor(world.pool, "wss://relay.example.test", 1234, event_time)
    client = await make_client()

    resp = await client.get("/")
    assert resp.status == 200
    check_headers(resp)
    assert resp.headers["Cache-Control"] == "public, max-age=5"
    page = await resp.text()
    text = check_html(page)
    for figure in ("Tracks 3", "Artists 2", "Likes 3", "Plays 2"):
        assert figure in text, text
    assert "wss://relay.example.test" in text and "relay" in text
    assert "1234" in text  # the cursor
    assert event_time.isoformat(timespec="seconds").replace("+00:00", "Z") in text
    lag = re.search(r"lag (\d+\.\d) s", text)
    assert lag and 41 <= float(lag.group(1)) < 120, text
    assert f"plyr-appview {front_door.package_version()}" in text
    assert front_door.package_version() != "unknown"  # installed in the venv
    assert 'href="/api"' in page and 'href="/openapi.json"' in page

    head = await client.head("/")
    assert head.status == 200 and head.headers["Content-Security-Policy"] == PAGE_CSP


async def test_home_page_empty_index(make_client: AppFactory) -> None:
    client = await make_client()
    resp = await client.get("/")
    assert resp.status == 200
    text = check_html(await resp.text())
    assert "Tracks 0" in text and "Plays 0" in text
    assert "No stream position recorded yet" in text


async def test_figures_are_exact_at_any_size(world: World, pool: asyncpg.Pool) -> None:
    # Counters kept with the rows: no count runs, so no size needs an estimate.
    ann = await world.account("ann")
    track = await world.track(ann, "Popular")
    n = 1500
    async with pool.acquire() as conn, conn.transaction():
        await add_plays(conn, [(track, ann.did, f"did:plc:l{g}", None, None) for g in range(n)])
    figures = await read_figures(pool, Moderation(()))
    assert figures["tracks"] == Figure(1, "exact")
    assert figures["artists"] == Figure(1, "exact")
    assert figures["plays"] == Figure(n, "exact")
    assert figures["plays"].text() == "1,500"


async def test_home_page_without_a_database_is_a_503_page(make_client: AppFactory) -> None:
    client = await make_client(app_pool=GonePool())
    resp = await client.get("/")
    assert resp.status == 503
    check_headers(resp)
    assert resp.headers["Retry-After"] and resp.headers["Cache-Control"] == "no-store"
    text = check_html(await resp.text())
    assert text.count("unavailable") >= 4 and "retry shortly" in text
    assert "127.0.0.1" not in text.replace(PUBLIC_URL, "")  # nothing about the database
    # the API page needs no database
    assert (await client.get("/api")).status == 200


class GonePool:
    """A pool whose database is gone: every use fails as a dropped connection does."""

    def acquire(self) -> Any:
        raise ConnectionRefusedError(111, "connect call failed ('10.0.0.9', 5432)")

    async def fetch(self, *_args: Any) -> Any:
        raise ConnectionRefusedError(111, "connect call failed ('10.0.0.9', 5432)")

    async def fetchval(self, *_args: Any) -> Any:
        raise ConnectionRefusedError(111, "connect call failed ('10.0.0.9', 5432)")


async def test_api_page_lists_every_method(make_client: AppFactory) -> None:
    client = await make_client()
    resp = await client.get("/api")
    assert resp.status == 200
    check_headers(resp)
    page = await resp.text()
    text = check_html(page)
    lexicons = LexiconSet.load()
    methods = [n for n in lexicons.methods if n.startswith("fm.plyr.")]
    assert len(methods) >= 20
    for nsid in methods:
        assert f'id="{nsid}"' in page, nsid
        assert f"/xrpc/{nsid}" in text
    section = page.split('id="fm.plyr.feed.getTrack"', 1)[1].split("</section>", 1)[0]
    assert "<code>uri</code>" in section and "<code>id</code>" in section
    assert "string (at-uri)" in section and "≥ 1" in section
    assert "The track&#x27;s short id" in section
    assert "auth: none" in section or "auth: optional" in section
    assert "<code>NotFound</code>" in section
    assert 'href="#def-fm.plyr.defs.trackView"' in section  # the output's ref, linked
    assert 'id="def-fm.plyr.defs.trackView"' in page  # and defined below
    assert f"curl &#x27;{PUBLIC_URL}/xrpc/fm.plyr.feed.getTrack?uri=at://" in section
    record_play = page.split('id="fm.plyr.play.recordPlay"', 1)[1].split("</section>", 1)[0]
    assert "procedure" in record_play and "POST /xrpc/fm.plyr.play.recordPlay" in record_play
    assert "auth: required" in record_play and "Authorization: Bearer $TOKEN" in record_play
    assert "-X POST" in record_play and "<h4>Input</h4>" in record_play
    assert 'href="/openapi.json"' in page

    # static: an ETag and a 304
    again = await client.get("/api", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304 and again.headers["Content-Security-Policy"] == PAGE_CSP


HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>"\'&'


async def test_hostile_lexicon_text_is_escaped(pool: asyncpg.Pool, plc: Plc) -> None:
    base = LexiconSet.load()
    docs = copy.deepcopy(base.docs)
    main = docs["fm.plyr.feed.getTrack"]["defs"]["main"]
    main["description"] = HOSTILE
    main["parameters"]["properties"]["uri"]["description"] = HOSTILE
    main["parameters"]["properties"]["uri"]["knownValues"] = [HOSTILE]
    main["errors"] = [{"name": HOSTILE, "description": HOSTILE}]
    docs["fm.plyr.defs"]["defs"]["trackView"]["description"] = HOSTILE
    docs["fm.plyr.evil.get<b>Thing</b>"] = {
        "lexicon": 1, "id": "fm.plyr.evil.get<b>Thing</b>",
        "defs": {"main": {"type": "query", "description": HOSTILE,
                          "parameters": {"type": "params", "properties": {
                              HOSTILE: {"type": "string", "default": HOSTILE}}},
                          "output": {"encoding": "application/json",
                                     "schema": {"type": "ref", "ref": "#x\"><script>"}}}},
    }
    resolver = local_resolver(plc.url)
    app = build_app(pool, appview_settings(), resolver=resolver, lexicons=LexiconSet(base.validator, docs))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.get("/api")
        assert resp.status == 200
        page = await resp.text()
        text = check_html(page)  # no <script>, no on* attribute, well formed
        assert "<script" not in page and "<img" not in page and "<b>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert HOSTILE in text  # shown as text, whole
        assert "not served by this instance" in page  # the method no route serves
    finally:
        await client.close()
        await resolver.close()


def test_follows_what_the_indexer_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLYR_RELAY_URL", "PLYR_JETSTREAM_URL", "PLYR_INDEXER_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    # One declaration of each variable, read by the indexer and shown by the front door.
    for name in ("source", "relay_url", "jetstream_url"):
        assert spec_of(FirehoseSettings, name) is spec_of(indexer_settings.IndexerSettings, name)
    configured = indexer_settings.IndexerSettings.from_env()
    assert front_door.Follows.from_env() == front_door.Follows("relay", configured.relay_url)
    monkeypatch.setenv("PLYR_INDEXER_SOURCE", "jetstream")
    assert front_door.Follows.from_env() == front_door.Follows("jetstream", configured.jetstream_url)


def test_every_route_is_in_the_lexicons() -> None:
    # The reference iterates the lexicons; every served method must be among them.
    assert set(ROUTES) <= set(LexiconSet.load().methods)
