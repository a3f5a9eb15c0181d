"""The media service as an atproto service: its own did:web document (#plyr_media), and the
shared rate limits (per client address; server-key callers exempt) with RateLimit-* headers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.errors import ConfigError
from core.ratelimit import RateLimitSettings
from media.auth import Authenticator
from media.events import JobEvents
from media.http import LIMITS, create_app
from media.ingest import MediaContext
from media.settings import MediaSettings
from media.storage import LocalStorage
from tests.integration.media.conftest import SERVER_KEY, media_settings

START = 1_800_000_000 // 60 * 60


async def test_did_document_and_limits(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> None:
    now = [START + 10.0]
    settings = dataclasses.replace(
        media_settings(tmp_path), public_url="http://localhost:2585", service_did="did:web:localhost%3A2585",
        rate_limit=RateLimitSettings(window_seconds=60, ip_limit=3, loopback=True, sync_seconds=3600),
    )
    ctx = MediaContext(settings=settings, pool=pool, storage=LocalStorage(settings.media_dir, settings.public_url),
                       ffmpeg="ffmpeg")
    events = JobEvents(database_url)
    app = create_app(ctx, Authenticator(settings, required=False), events, limits_clock=lambda: now[0])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        doc = await client.get("/.well-known/did.json")
        assert doc.headers["Cache-Control"] == "public, max-age=300"
        assert await doc.json() == {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": "did:web:localhost%3A2585",
            "service": [{"id": "#plyr_media", "type": "PlyrMedia", "serviceEndpoint": "http://localhost:2585"}],
        }
        # A trusted caller (server key) is charged to no budget.
        trusted = await client.get("/jobs/999999", headers={"Authorization": f"Bearer {SERVER_KEY}"})
        assert trusted.status == 404 and "RateLimit-Limit" not in trusted.headers
        statuses = []
        for _ in range(5):
            resp = await client.get("/media/audio/00/missing.mp3")
            statuses.append(resp.status)
            assert resp.headers["RateLimit-Limit"] == "3" and resp.headers["RateLimit-Policy"] == "3;w=60"
        assert statuses == [404, 404, 404, 429, 429]
        assert (await resp.json())["error"] == "RateLimitExceeded" and resp.headers["Retry-After"] == "50"
        # Once the address is over, a request with a token is refused before it is checked.
        over = await client.get("/jobs/999999", headers={"Authorization": f"Bearer {SERVER_KEY}"})
        assert over.status == 429
        assert (await client.get("/health")).status == 200
        await app[LIMITS].counter.sync()  # type: ignore[union-attr]
        assert await pool.fetchval("SELECT hits FROM rate_limits WHERE key = 'media:ip:127.0.0.1'") == 3
        now[0] += 60
        assert (await client.get("/media/audio/00/missing.mp3")).status == 404


def test_media_did_must_name_its_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLYR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PLYR_MEDIA_PUBLIC_URL", "https://media.plyr.fm")
    monkeypatch.setenv("PLYR_MEDIA_SERVICE_DID", "did:web:plyr.fm")
    with pytest.raises(ConfigError, match="PLYR_MEDIA_SERVICE_DID=did:web:plyr.fm names host"):
        MediaSettings.from_env()
    monkeypatch.setenv("PLYR_MEDIA_SERVICE_DID", "did:web:media.plyr.fm")
    assert MediaSettings.from_env().service_did == "did:web:media.plyr.fm"
