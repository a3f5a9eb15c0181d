"""PDS blob mirroring, and service-auth uploads, against a local aiohttp server acting as a PDS
(and serving its did:web document), resolved by the real IdentityResolver."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from integration.media.conftest import (
    MediaServer,
    free_port,
    leftover_temp_files,
    media_settings,
    partial_objects,
    start_media_server,
)
from media import jobs
from media.auth import LXM_GET_JOB, LXM_UPLOAD_AUDIO
from media.ingest import stream_key
from protocol.cid import cid_for_raw, cid_to_str
from protocol.crypto import PrivateKey
from protocol.identity import IdentityResolver
from protocol.service_auth import create_service_jwt
from tests.support.identity import local_resolver
from tests.support.mirrors import played_url

MEDIA_DID = "did:web:media.plyr.test"


@dataclass
class FakePds:
    url: str
    did: str
    key: PrivateKey
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    fail_with: int | None = None
    cut_after: int | None = None  # drop the connection after this many bytes

    def add_blob(self, data: bytes) -> str:
        cid = cid_to_str(cid_for_raw(data))
        self.blobs[cid] = data
        return cid


@pytest.fixture
async def pds() -> AsyncIterator[FakePds]:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    state = FakePds(url=f"http://localhost:{port}", did=f"did:web:localhost%3A{port}", key=PrivateKey.generate("p256"))

    async def did_doc(_request: web.Request) -> web.Response:
        return web.json_response({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": state.did,
            "alsoKnownAs": ["at://artist.test"],
            "verificationMethod": [{
                "id": f"{state.did}#atproto", "type": "Multikey", "controller": state.did,
                "publicKeyMultibase": state.key.public_key().multibase(),
            }],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": state.url}],
        })

    async def get_blob(request: web.Request) -> web.StreamResponse:
        state.requests.append(request.query_string)
        if state.fail_with:
            return web.json_response({"error": "Oops"}, status=state.fail_with)
        if request.query.get("did") != state.did or request.query.get("cid") not in state.blobs:
            return web.json_response({"error": "BlobNotFound", "message": "Blob not found"}, status=400)
        data = state.blobs[request.query["cid"]]
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(data)
        await resp.prepare(request)
        for i in range(0, len(data), 65536):  # streamed, as a PDS does
            if state.cut_after is not None and i >= state.cut_after:
                assert request.transport is not None
                request.transport.close()  # the PDS goes away mid-blob
                return resp
            await resp.write(data[i : i + 65536])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/.well-known/did.json", did_doc)
    app.router.add_get("/xrpc/com.atproto.sync.getBlob", get_blob)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield state
    await runner.cleanup()


@pytest.fixture
async def resolver() -> AsyncIterator[IdentityResolver]:
    r = local_resolver("http://127.0.0.1:9")
    yield r
    await r.close()


async def _track(pool: asyncpg.Pool, did: str, rkey: str, blob_cid: str, title: str = "Mirrored") -> str:
    uri = f"at://{did}/fm.plyr.track/{rkey}"
    now = datetime.now(UTC)
    await pool.execute(
        """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url, audio_blob_cid,
                               record, created_at, sort_at)
           VALUES ($1, $2, $3, 'bafyreicid', '3k2a', $4, 'Blob Artist', 'wav', NULL, $5, '{}'::jsonb, $6, $6)""",
        uri, did, rkey, title, blob_cid, now,
    )
    return uri


async def test_mirror_fetches_checks_stores_transcodes_and_points_the_track(
    media_server: MediaServer, pds: FakePds, resolver: IdentityResolver, pool: asyncpg.Pool, samples: dict[str, Path]
) -> None:
    data = samples["tone.wav"].read_bytes()
    cid = pds.add_blob(data)
    uri = await _track(pool, pds.did, "3kaaa", cid)
    async with pool.acquire() as conn, conn.transaction():  # as media/mirror_requests.py calls it
        job_id = await jobs.enqueue_blob_mirror(conn, track_uri=uri, did=pds.did, blob_cid=cid, mime_type="audio/wav")
    assert await media_server.run_jobs(media_server.worker(resolver=resolver)) == 1
    job = await media_server.job(job_id)
    assert job.status == "done", job.error
    sha = hashlib.sha256(data).hexdigest()
    assert job.result and job.result["sha256"] == sha and job.result["trackUpdated"]
    audio_url = await played_url(pool, uri)
    assert audio_url == media_server.ctx.storage.url(stream_key(sha))
    async with media_server.session.get(audio_url) as resp:
        assert resp.status == 200 and (await resp.read())[:3] == b"ID3"
    row = await pool.fetchrow("SELECT blob_cid, format FROM media_objects WHERE sha256 = $1", sha)
    assert (row["blob_cid"], row["format"]) == (cid, "wav")
    assert leftover_temp_files(media_server.settings) == []

    # the same blob on a second track: no second download
    uri2 = await _track(pool, pds.did, "3kaab", cid, "Again")
    job2 = await jobs.enqueue_blob_mirror(pool, track_uri=uri2, did=pds.did, blob_cid=cid, mime_type="audio/wav")
    await media_server.run_jobs(media_server.worker(resolver=resolver))
    assert (await media_server.job(job2)).status == "done"
    assert len(pds.requests) == 1
    assert await played_url(pool, uri2) == audio_url


async def test_mp3_blob_plays_from_our_copy_without_transcoding(
    media_server: MediaServer, pds: FakePds, resolver: IdentityResolver, pool: asyncpg.Pool, samples: dict[str, Path]
) -> None:
    data = samples["tone.mp3"].read_bytes()
    cid = pds.add_blob(data)
    uri = await _track(pool, pds.did, "3kmp3", cid)
    job_id = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid=cid, mime_type="audio/mpeg")
    await media_server.run_jobs(media_server.worker(resolver=resolver))
    job = await media_server.job(job_id)
    assert job.status == "done", job.error
    assert job.result and job.result["streamUrl"] == job.result["masterUrl"]
    assert await pool.fetchval("SELECT count(*) FROM media_renditions") == 0


async def test_blob_whose_bytes_do_not_match_its_cid(
    media_server: MediaServer, pds: FakePds, resolver: IdentityResolver, pool: asyncpg.Pool, samples: dict[str, Path]
) -> None:
    real = samples["tone.wav"].read_bytes()
    cid = pds.add_blob(real)
    pds.blobs[cid] = real[:-100] + b"\x00" * 100  # the PDS serves other bytes under that CID
    uri = await _track(pool, pds.did, "3kbad", cid)
    job_id = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid=cid, mime_type="audio/wav")
    await media_server.run_jobs(media_server.worker(resolver=resolver))
    job = await media_server.job(job_id)
    assert job.status == "failed" and "do not match its CID" in (job.error or "")
    assert job.attempts == 1
    assert await played_url(pool, uri) is None
    assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0
    assert leftover_temp_files(media_server.settings) == []
    assert not media_server.settings.media_dir.exists() or partial_objects(media_server.settings.media_dir) == []


async def test_missing_blob_bad_cid_and_pds_errors(
    media_server: MediaServer, pds: FakePds, resolver: IdentityResolver, pool: asyncpg.Pool
) -> None:
    missing = cid_to_str(cid_for_raw(b"never uploaded"))
    uri = await _track(pool, pds.did, "3kmis", missing)
    j1 = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid=missing, mime_type="audio/wav")
    j2 = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid="bafyreinotacid", mime_type="audio/wav")
    dagcbor = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    j3 = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid=dagcbor, mime_type="audio/wav")
    await media_server.run_jobs(media_server.worker(resolver=resolver))
    e1, e2, e3 = [(await media_server.job(j)).error or "" for j in (j1, j2, j3)]
    assert "no such blob" in e1 and "not valid" in e2 and "not a raw" in e3
    # a PDS that answers 502: retried later, not failed
    cid = pds.add_blob(b"whatever")
    pds.fail_with = 502
    j4 = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid=cid, mime_type="audio/wav")
    await media_server.run_jobs(media_server.worker(resolver=resolver))
    job = await media_server.job(j4)
    assert job.status == "queued" and "HTTP 502" in (job.error or "")
    assert leftover_temp_files(media_server.settings) == []


async def test_oversized_blob_is_refused_while_downloading(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, pds: FakePds, resolver: IdentityResolver, samples: dict[str, Path]
) -> None:
    settings = media_settings(tmp_path / "data", max_audio_bytes=100_000, chunk_bytes=65536)
    runner, server, events = await start_media_server(pool, database_url, settings)
    try:
        data = samples["tone.wav"].read_bytes()
        assert len(data) > 100_000
        cid = pds.add_blob(data)
        uri = await _track(pool, pds.did, "3kbig", cid)
        job_id = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid=cid, mime_type="audio/wav")
        await server.run_jobs(server.worker(resolver=resolver))
        job = await server.job(job_id)
        assert job.status == "failed" and "too large" in (job.error or "")
        assert leftover_temp_files(server.settings) == []
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()


async def test_service_auth_upload(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, pds: FakePds, resolver: IdentityResolver, samples: dict[str, Path]
) -> None:
    settings = media_settings(tmp_path / "data", service_did=MEDIA_DID, server_key=None)
    runner, server, events = await start_media_server(pool, database_url, settings, resolver=resolver)
    try:
        data = samples["tone.mp3"].read_bytes()
        token = create_service_jwt(pds.key, iss=pds.did, aud=MEDIA_DID, lxm=LXM_UPLOAD_AUDIO)
        status, body = await server.upload("audio", data, headers={"Authorization": f"Bearer {token}"})
        assert status == 201, body
        assert await pool.fetchval("SELECT uploaded_by FROM media_objects") == pds.did
        # wrong method binding, wrong audience, a key that is not the DID's, the server key unset
        for bad in (
            create_service_jwt(pds.key, iss=pds.did, aud=MEDIA_DID, lxm="fm.plyr.media.uploadImage"),
            create_service_jwt(pds.key, iss=pds.did, aud="did:web:other.test", lxm=LXM_UPLOAD_AUDIO),
            create_service_jwt(PrivateKey.generate("p256"), iss=pds.did, aud=MEDIA_DID, lxm=LXM_UPLOAD_AUDIO),
            "test-server-key-0123456789",
        ):
            status, body = await server.upload("audio", data, headers={"Authorization": f"Bearer {bad}"})
            assert status == 401, body
            assert body["error"] and body["message"]
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()


def test_no_auth_configured_refuses_to_start(tmp_path: Path) -> None:
    from core.errors import ConfigError
    from media.auth import Authenticator

    settings = media_settings(tmp_path, server_key=None, service_did=None)
    with pytest.raises(ConfigError, match="refusing to start"):
        Authenticator(settings)
    assert dataclasses.replace(settings, server_key="k").auth_configured


async def test_without_auth_under_plyr_up_everything_is_refused(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, samples: dict[str, Path]
) -> None:
    settings = media_settings(tmp_path / "data", server_key=None, service_did=None)
    runner, server, events = await start_media_server(pool, database_url, settings)
    try:
        status, body = await server.upload("audio", samples["tone.mp3"].read_bytes())
        assert status == 401 and body["error"] == "AuthNotConfigured"
        status, body = await server.upload("audio", samples["tone.mp3"].read_bytes(), headers={"Authorization": "Bearer "})
        assert status == 401
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()




async def test_pds_dropping_the_connection_mid_blob_is_retried_and_leaves_nothing(
    media_server: MediaServer, pds: FakePds, resolver: IdentityResolver, pool: asyncpg.Pool, samples: dict[str, Path]
) -> None:
    data = samples["tone.wav"].read_bytes()
    cid = pds.add_blob(data)
    uri = await _track(pool, pds.did, "3kcut", cid)
    pds.cut_after = 200_000
    job_id = await jobs.enqueue_blob_mirror(pool, track_uri=uri, did=pds.did, blob_cid=cid, mime_type="audio/wav")
    await media_server.run_jobs(media_server.worker(resolver=resolver))
    job = await media_server.job(job_id)
    assert job.status == "queued" and job.error, job  # a network failure: tried again later
    assert leftover_temp_files(media_server.settings) == []
    assert await pool.fetchval("SELECT count(*) FROM media_objects") == 0
    pds.cut_after = None
    await pool.execute("UPDATE media_jobs SET run_after = now()")
    await media_server.run_jobs(media_server.worker(resolver=resolver))
    job = await media_server.job(job_id)
    assert job.status == "done" and job.attempts == 2, job.error


@dataclass
class Account:
    did: str
    key: PrivateKey

    def auth(self, lxm: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + create_service_jwt(self.key, iss=self.did, aud=MEDIA_DID, lxm=lxm)}


@pytest.fixture
async def other_account() -> AsyncIterator[Account]:
    """A second did:web account (its own DID document on its own loopback port)."""
    port = free_port()
    account = Account(did=f"did:web:localhost%3A{port}", key=PrivateKey.generate("k256"))

    async def did_doc(_request: web.Request) -> web.Response:
        return web.json_response({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": account.did,
            "verificationMethod": [{
                "id": f"{account.did}#atproto", "type": "Multikey", "controller": account.did,
                "publicKeyMultibase": account.key.public_key().multibase(),
            }],
        })

    app = web.Application()
    app.router.add_get("/.well-known/did.json", did_doc)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield account
    await runner.cleanup()


async def test_a_job_is_read_by_its_uploaders_only(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, pds: FakePds, resolver: IdentityResolver,
    other_account: Account, samples: dict[str, Path],
) -> None:
    settings = media_settings(tmp_path / "data", service_did=MEDIA_DID)  # and the server key
    runner, server, events = await start_media_server(pool, database_url, settings, resolver=resolver)
    uploader = Account(did=pds.did, key=pds.key)
    try:
        data = samples["tone.aiff"].read_bytes()  # lossless: a transcode job
        status, body = await server.upload("audio", data, headers=uploader.auth(LXM_UPLOAD_AUDIO))
        assert status == 201 and body["jobId"], body
        job_url = f"{server.url}/jobs/{body['jobId']}"

        async def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
            async with server.session.get(url, headers=headers) as resp:
                return resp.status, await resp.json()

        for url in (job_url, job_url + "/events"):
            status, err = await get(url, {})
            assert status == 401 and err["error"] == "AuthenticationRequired" and err["message"], err
            status, err = await get(url, other_account.auth(LXM_GET_JOB))
            assert status == 403 and err == {"error": "Forbidden", "message": "this job belongs to another account"}
            status, err = await get(url, uploader.auth("fm.plyr.media.somethingElse"))  # not a method that reads jobs
            assert status == 401 and err["error"] == "BadJwtLexiconMethod", err
        # The uploader reads it with the token they uploaded with, or one for getJob; so does a trusted caller.
        for headers in (uploader.auth(LXM_UPLOAD_AUDIO), uploader.auth(LXM_GET_JOB), server.headers):
            status, state = await get(job_url, headers)
            assert status == 200 and state["id"] == body["jobId"] and state["kind"] == "transcode", state
        status, _ = await get(f"{server.url}/jobs/999999", uploader.auth(LXM_GET_JOB))
        assert status == 404

        # The other account uploads the same bytes while the job is live: it is handed the same
        # job (one per sha-256) and may now follow it.
        status, second = await server.upload("audio", data, headers=other_account.auth(LXM_UPLOAD_AUDIO))
        assert status == 200 and second["jobId"] == body["jobId"], second
        status, state = await get(job_url, other_account.auth(LXM_GET_JOB))
        assert status == 200 and state["status"] == "queued"

        # The uploader's progress stream works to the end.
        names: list[str] = []

        async def listen() -> None:
            async with server.session.get(job_url + "/events", headers=uploader.auth(LXM_UPLOAD_AUDIO)) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
                async for raw in resp.content:
                    if raw.startswith(b"event: "):
                        names.append(raw[7:].decode().strip())

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)
        assert await server.run_jobs() == 1
        await asyncio.wait_for(listener, 20)
        assert names[0] == "progress" and names[-1] == "done", names
    finally:
        await server.session.close()
        await runner.cleanup()
        await events.stop()
