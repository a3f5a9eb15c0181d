"""The PDS blob mirror end to end, against the real PDS (`@atproto/pds` + PLC on loopback).

A short WAV made by ffmpeg is uploaded to the PDS (`uploadBlob`) and referenced as `audioBlob`
by an fm.plyr.track record. The real `plyr index` (signature checks on, identities from the
harness's PLC) indexes it from the PDS firehose and requests the mirror (mirror_outbox) in the
same transaction; media turns the request into a mirror job, and a real media worker resolves
the artist's DID, fetches the blob with `com.atproto.sync.getBlob`, checks it against its CID,
stores it and makes the MP3 rendition (WAV is lossless); the track then plays from our copy,
whose bytes are the blob's.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import asyncpg
import pytest

from media.ffmpeg import ffmpeg_exe
from media.ingest import stream_key
from media.mirror_requests import take_all_requests
from tests.integration.media.conftest import media_settings, start_media_server
from tests.support.identity import local_resolver
from tests.support.mirrors import played_url

from .pds_client import PdsClient
from .pds_network import PdsNetwork
from .test_indexer_e2e import Indexer, eventually, new_account, now

pytestmark = pytest.mark.e2e


def make_wav(path: Path) -> bytes:
    subprocess.run(
        [ffmpeg_exe(None), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "sine=frequency=440:duration=1:sample_rate=44100", "-ac", "2", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture
async def indexer(pds_network: PdsNetwork, database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    ix = Indexer(pds_network, database_url, tmp_path / "indexer.log")
    yield ix
    await ix.kill()


async def test_blob_track_from_the_pds_plays_from_our_copy(
    pds: PdsClient, pds_network: PdsNetwork, indexer: Indexer, pool: asyncpg.Pool,
    database_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    data = await asyncio.to_thread(make_wav, tmp_path / "tone.wav")
    assert data[:4] == b"RIFF"
    artist = await new_account(pds, pds_network, "mirror")
    blob = await pds.upload_blob(artist, data, "audio/wav")
    assert blob["$type"] == "blob" and blob["mimeType"] == "audio/wav" and blob["size"] == len(data)
    cid = blob["ref"]["$link"]
    uri, _record_cid = await pds.create_record(
        artist, "fm.plyr.track",
        {"title": "Mirrored tone", "artist": "E2E", "fileType": "wav", "audioBlob": blob, "createdAt": now()},
    )  # fmt: skip

    await indexer.start("--cursor", "0")

    async def requested() -> asyncpg.Record | None:
        return await pool.fetchrow(
            "SELECT track_uri, did, blob_cid, mime_type FROM mirror_outbox WHERE track_uri = $1", uri
        )

    request = await eventually(requested, f"the mirror request of {uri}\n{indexer.tail()}", 90)
    assert dict(request) == {"track_uri": uri, "did": artist.did, "blob_cid": cid, "mime_type": "audio/wav"}
    assert await pool.fetchval("SELECT audio_blob_cid FROM tracks WHERE uri = $1", uri) == cid
    assert await played_url(pool, uri) is None
    await indexer.stop()

    runner, media, events = await start_media_server(pool, database_url, media_settings(tmp_path / "media"))
    resolver = local_resolver(pds_network.plc_url)
    try:
        assert await take_all_requests(pool) == 1  # media takes the request: one mirror job
        job = await pool.fetchrow(
            "SELECT id, status, payload FROM media_jobs WHERE kind = 'mirror' AND payload->>'track_uri' = $1",
            uri,
        )
        assert job["payload"] == {"track_uri": uri, "did": artist.did, "blob_cid": cid, "mime_type": "audio/wav"}
        assert await media.run_jobs(media.worker(resolver=resolver)) == 1
        finished = await media.job(job["id"])
        assert finished.status == "done", finished.error
        sha = hashlib.sha256(data).hexdigest()
        ours = media.ctx.storage.url(stream_key(sha))  # the MP3 rendition of the lossless blob
        assert await played_url(pool, uri) == ours
        async with media.session.get(ours) as resp:
            assert resp.status == 200 and (await resp.read())[:3] == b"ID3"
        obj = await pool.fetchrow("SELECT url, format, blob_cid FROM media_objects WHERE sha256 = $1", sha)
        assert (obj["format"], obj["blob_cid"]) == ("wav", cid)
        async with media.session.get(obj["url"]) as resp:
            assert await resp.read() == data  # the stored master is the blob, byte for byte
        assert data == await pds.get_blob(artist.did, cid)
    finally:
        await resolver.close()
        await media.session.close()
        await runner.cleanup()
        await events.stop()
        await media.ctx.storage.close()
