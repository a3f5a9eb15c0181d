"""Fixtures for the media integration tests: a real media app on loopback, real Postgres,
real ffmpeg, local storage in a temp folder (S3 tests bring their own moto server)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from unit.media.samples import make_all_audio

from media.auth import Authenticator
from media.events import JobEvents
from media.ffmpeg import ffmpeg_exe
from media.http import create_app
from media.ingest import MediaContext
from media.jobs import Job, get_job
from media.settings import MediaSettings
from media.storage import LocalStorage, S3Storage, Storage
from media.worker import Worker

SERVER_KEY = "test-server-key-0123456789"
OWNER = "did:plc:testartist000000000000000"
BUCKET = "plyr-media-test"
S3_CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def media_settings(data_dir: Path, **overrides: Any) -> MediaSettings:
    base = MediaSettings(
        data_dir=data_dir,
        host="127.0.0.1",
        port=0,
        public_url="http://127.0.0.1:1",  # replaced with the real port once listening
        workers=0,
        max_audio_bytes=1024 * 1024 * 1024,
        max_image_bytes=20 * 1024 * 1024,
        chunk_bytes=8 * 1024 * 1024,
        ffmpeg=None,
        transcode_timeout_s=120.0,
        job_lease_s=30.0,
        job_max_attempts=3,
        # Off unless a test asks for it: the other tests count the jobs an upload queues
        # (tests/integration/media/test_copyright_scans.py turns it on).
        copyright_scan=False,
        fetch_timeout_s=30.0,
        export_ttl_s=3600.0,
        server_key=SERVER_KEY,
        service_did=None,
        storage="local",
        s3_bucket=None,
        s3_endpoint_url=None,
        s3_region=None,
        s3_public_url=None,
        s3_presign_ttl_s=600,
        s3_part_bytes=8 * 1024 * 1024,
    )
    return dataclasses.replace(base, **overrides)


@dataclass
class MediaServer:
    url: str
    ctx: MediaContext
    session: aiohttp.ClientSession
    settings: MediaSettings

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {SERVER_KEY}", "X-Plyr-Did": OWNER}

    def worker(self, name: str = "w1", **kw: Any) -> Worker:
        return Worker(self.ctx, name=name, **kw)

    async def run_jobs(self, worker: Worker | None = None, limit: int = 20) -> int:
        """Run due jobs until none is left; return how many ran."""
        worker = worker or self.worker()
        ran = 0
        while ran < limit and await worker.run_once():
            ran += 1
        return ran

    async def job(self, job_id: int) -> Job:
        job = await get_job(self.ctx.pool, job_id)
        assert job is not None
        return job

    async def upload(self, kind: str, data: bytes, params: dict[str, str] | None = None,
                     headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        async with self.session.post(
            f"{self.url}/upload/{kind}", data=data, params=params or {},
            headers=self.headers if headers is None else headers,
        ) as resp:
            return resp.status, await resp.json()


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_all_audio(tmp_path_factory.mktemp("media-samples"))


@pytest.fixture
def exe() -> str:
    return ffmpeg_exe(None)


async def start_media_server(
    pool: asyncpg.Pool,
    database_url: str,
    settings: MediaSettings,
    storage_factory: Callable[[MediaSettings], Storage] | None = None,
    resolver: Any = None,
) -> tuple[web.AppRunner, MediaServer, JobEvents]:
    """The real media app on a free loopback port (URLs of stored objects point at it)."""
    port = free_port()
    settings = dataclasses.replace(settings, port=port, public_url=f"http://127.0.0.1:{port}")
    storage = storage_factory(settings) if storage_factory else LocalStorage(settings.media_dir, settings.public_url)
    ctx = MediaContext(settings=settings, pool=pool, storage=storage, ffmpeg=ffmpeg_exe(settings.ffmpeg))
    events = JobEvents(database_url)
    await events.start()
    app = create_app(ctx, Authenticator(settings, resolver, required=False), events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    return runner, MediaServer(f"http://127.0.0.1:{port}", ctx, session, settings), events


@contextlib.asynccontextmanager
async def running_media_server(
    pool: asyncpg.Pool, database_url: str, settings: MediaSettings, **kw: Any
) -> AsyncIterator[tuple[web.AppRunner, MediaServer]]:
    """start_media_server, stopped (session, site, events, storage) however the block ends."""
    runner, server, events = await start_media_server(pool, database_url, settings, **kw)
    try:
        yield runner, server
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()
        await server.ctx.storage.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def media_server(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[MediaServer]:
    async with running_media_server(pool, database_url, media_settings(tmp_path / "data")) as (_, server):
        yield server


def leftover_temp_files(settings: MediaSettings) -> list[Path]:
    tmp = settings.tmp_dir
    return sorted(tmp.iterdir()) if tmp.exists() else []


def partial_objects(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".partial")] if root.exists() else []


async def wait_for(predicate: Callable[[], Any], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A real S3-protocol server on loopback (moto), one per test module."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def make_s3(moto_url: str, **kw: Any) -> S3Storage:
    return S3Storage(
        bucket=kw.pop("bucket", BUCKET), endpoint_url=moto_url, region="us-east-1",
        public_url=kw.pop("public_url", None), media_url=kw.pop("media_url", "http://media.test"),
        part_bytes=kw.pop("part_bytes", 5 * 1024 * 1024), client_kwargs=S3_CREDS, **kw,
    )
