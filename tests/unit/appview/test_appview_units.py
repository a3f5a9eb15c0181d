"""Unit tests: cursors, settings, CORS/ETag helpers, the lexicon-derived method table, OpenAPI."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appview import cursor
from appview.errors import XRPCError
from appview.http import etag_of, not_modified
from appview.settings import AppviewSettings
from core.errors import ConfigError


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)),
       st.text(max_size=300).filter(lambda s: "\x00" not in s))
def test_cursor_round_trips_exactly(when: datetime, uri: str) -> None:
    assert cursor.decode(cursor.encode(when, uri), datetime, str) == (when, uri)


@given(st.text(max_size=80))
def test_any_garbage_cursor_is_an_invalid_request_never_a_crash(text: str) -> None:
    try:
        cursor.decode(text, datetime, str)
    except XRPCError as exc:
        assert exc.status == 400 and exc.error == "InvalidRequest"


@pytest.mark.parametrize("parts", [[2, 1], [1, True], [1, 1.5], [1, "x" * 3000], [1, 2**63], [1], [1, 1, 2]])
def test_wrong_shapes_are_rejected(parts: list[object]) -> None:
    raw = base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")
    with pytest.raises(XRPCError):
        cursor.decode(raw, int)


def test_datetime_cursor_bounds() -> None:
    bad = base64.urlsafe_b64encode(orjson.dumps([1, ["t", -5]])).decode()
    with pytest.raises(XRPCError):
        cursor.decode(bad, datetime)


def test_settings_defaults_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLYR_APPVIEW_PORT", "PLYR_PUBLIC_URL", "PLYR_SERVICE_DID", "PLYR_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    s = AppviewSettings.from_env()
    assert s.port == 8080 and s.public_url == "http://127.0.0.1:8080"
    assert s.service_did == "did:web:127.0.0.1%3A8080" and s.cors_origins == ()
    monkeypatch.setenv("PLYR_CORS_ORIGINS", "https://a.test/, https://b.test")
    monkeypatch.setenv("PLYR_PUBLIC_URL", "https://plyr.fm/")
    s = AppviewSettings.from_env()
    assert s.cors_origins == ("https://a.test", "https://b.test") and s.public_url == "https://plyr.fm"
    assert s.service_did == "did:web:plyr.fm"
    monkeypatch.setenv("PLYR_PUBLIC_URL", "ftp://x")
    with pytest.raises(ConfigError):
        AppviewSettings.from_env()
    monkeypatch.setenv("PLYR_PUBLIC_URL", "https://plyr.fm")
    monkeypatch.setenv("PLYR_SERVICE_DID", "plyr.fm")
    with pytest.raises(ConfigError):
        AppviewSettings.from_env()


def test_view_cache_default_is_the_same_built_directly_or_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLYR_APPVIEW_VIEW_CACHE_SECONDS", raising=False)
    from_env = AppviewSettings.from_env()
    direct = AppviewSettings(
        host="127.0.0.1", port=0, public_url="http://x.test", service_did="did:web:x.test",
        cors_origins=(), max_body_bytes=1024, microcache_seconds=0, top_cache_seconds=0,
        stats_cache_seconds=0, freshness_interval=1, play_dedupe_seconds=0, public_max_age=0,
    )
    assert direct.view_cache_seconds == from_env.view_cache_seconds == 1.0
    monkeypatch.setenv("PLYR_APPVIEW_VIEW_CACHE_SECONDS", "0")
    assert AppviewSettings.from_env().view_cache_seconds == 0


class _Req:
    def __init__(self, inm: str | None) -> None:
        self.headers = {"If-None-Match": inm} if inm else {}


def test_etag_matching() -> None:
    tag = etag_of(b"{}")
    assert tag.startswith('W/"')
    assert not_modified(_Req(tag), tag)  # type: ignore[arg-type]
    assert not_modified(_Req(tag.removeprefix("W/")), tag)  # type: ignore[arg-type]
    assert not_modified(_Req('"other", ' + tag), tag)  # type: ignore[arg-type]
    assert not_modified(_Req("*"), tag)  # type: ignore[arg-type]
    assert not not_modified(_Req('"other"'), tag)  # type: ignore[arg-type]
    assert not not_modified(_Req(None), tag)  # type: ignore[arg-type]


def test_every_route_has_a_lexicon_and_openapi_operation() -> None:
    from appview import openapi
    from appview.app import ROUTES
    from appview.xrpc_schema import LexiconSet

    lexicons = LexiconSet.load()
    assert set(ROUTES) <= set(lexicons.methods)
    for nsid, route in ROUTES.items():
        method = lexicons.methods[nsid]
        procedure_names = ("put", "record", "create", "takedown", "restore", "label", "resolve", "delete")
        assert (method.kind == "procedure") == nsid.split(".")[-1].startswith(procedure_names), nsid
        if method.kind == "procedure":
            assert route.auth == "required"
        if route.auth == "optional":
            # the viewer overlay (xrpc._with_viewer) adds viewer state to "tracks"/"track" only
            props = method.output["schema"]["properties"]
            assert "tracks" in props or "track" in props, nsid
    spec = openapi.build(lexicons, ROUTES, "http://x")
    refs = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    assert refs <= set(spec["components"]["schemas"])  # no dangling refs


def test_params_are_coerced_and_checked_by_the_lexicon() -> None:
    from multidict import MultiDict

    from appview.xrpc_schema import LexiconSet

    lexicons = LexiconSet.load()
    method = lexicons.methods["fm.plyr.feed.getLatestTracks"]
    params, problems = lexicons.coerce_params(method, MultiDict([("limit", "20")]))
    assert params == {"limit": 20} and problems == []
    _, problems = lexicons.coerce_params(method, MultiDict([("limit", "0")]))
    assert problems
    tracks = lexicons.methods["fm.plyr.feed.getTracks"]
    uris = [f"at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/fm.plyr.track/3k{i}" for i in range(3)]
    params, problems = lexicons.coerce_params(tracks, MultiDict([("uris", u) for u in uris]))
    assert params["uris"] == uris and problems == []


async def test_ttl_cache_loads_once_for_concurrent_callers_and_never_caches_errors() -> None:
    import asyncio

    from appview.caches import TtlCache

    cache = TtlCache()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    assert await asyncio.gather(*(cache.get("k", 10, load) for _ in range(20))) == [1] * 20
    assert calls == 1

    async def fail() -> int:
        raise ValueError("boom")

    for _ in range(2):
        with pytest.raises(ValueError):
            await cache.get("bad", 10, fail)
    assert await cache.get("bad", 10, load) == 2  # the failure was not remembered
    assert await cache.get("k", 0, load) == 3  # ttl 0: no caching at all


async def test_ttl_cache_serves_stale_while_one_refresh_runs() -> None:
    import asyncio

    from appview.caches import TtlCache

    cache = TtlCache()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    assert await cache.get("k", 0.01, load, stale_for=5) == 1
    await asyncio.sleep(0.02)  # expired, but within stale_for
    assert await asyncio.gather(*(cache.get("k", 0.01, load, stale_for=5) for _ in range(5))) == [1] * 5
    await asyncio.sleep(0.1)  # the single background refresh has landed
    assert calls == 2
    assert await cache.get("k", 10, load, stale_for=5) in (2, 3)


def test_serving_sets_the_collector_for_a_view_cache_full_of_young_views() -> None:
    import gc

    from appview.service import GC_THRESHOLDS, tune_collector

    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's reach
        # young collections wait for more than a few 50-track pages' worth of containers
        assert GC_THRESHOLDS[0] >= 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@given(st.lists(st.sampled_from([*"hHtTpPsS:/?#\\.aZé \x01\x1f\x7f-", "https://", "HTTP://", "hTtPs://"]),
                max_size=12).map("".join))
def test_the_case_spelled_url_pattern_is_the_case_insensitive_one(text: str) -> None:
    """appview/urls.py: SQL matches SERVABLE_URL_PATTERN_CASED with `~`, which must accept
    exactly what SERVABLE_URL_PATTERN does ignoring (ASCII) case."""
    import re

    from appview.urls import SERVABLE_URL_PATTERN, SERVABLE_URL_PATTERN_CASED

    cased = re.search(SERVABLE_URL_PATTERN_CASED, text) is not None
    assert cased == (re.search(SERVABLE_URL_PATTERN, text, re.IGNORECASE | re.ASCII) is not None)
