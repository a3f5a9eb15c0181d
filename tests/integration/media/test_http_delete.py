"""`DELETE /media/{sha256}` (media/http_delete.py): an uploader deletes our copy of their file,
with service auth (lxm fm.plyr.media.deleteMedia) — never another account's, never while a
track in the index still names it or its job is still running; rows and stored files go."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg

from media.http_delete import LXM_DELETE_MEDIA
from protocol.crypto import PrivateKey
from protocol.service_auth import create_service_jwt
from tests.integration.media.conftest import media_settings, running_media_server
from tests.support.identity import FakeResolver

MEDIA_DID = "did:web:media.test"
ANN = "did:plc:annannannannannannannann"
BOB = "did:plc:bobbobbobbobbobbobbobbob"


async def test_only_the_uploader_deletes_an_unused_object(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, samples: dict[str, Path]
) -> None:
    keys = {ANN: PrivateKey.generate("k256"), BOB: PrivateKey.generate("k256")}
    resolver = FakeResolver({did: key.public_key() for did, key in keys.items()})
    settings = media_settings(tmp_path / "data", service_did=MEDIA_DID)

    def auth(did: str, lxm: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {create_service_jwt(keys[did], iss=did, aud=MEDIA_DID, lxm=lxm)}"}

    async with running_media_server(pool, database_url, settings, resolver=resolver) as (_, media):
        data = samples["tone.wav"].read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        status, up = await media.upload("audio", data, headers=auth(ANN, "fm.plyr.media.uploadAudio"))
        assert status == 201 and up["jobId"]

        async def delete(did: str, *deleted: str, lxm: str = LXM_DELETE_MEDIA, target: str = sha) -> tuple[int, dict[str, str]]:
            async with media.session.delete(f"{media.url}/media/{target}", headers=auth(did, lxm),
                                            params=[("deleted", u) for u in deleted]) as resp:  # fmt: skip
                return resp.status, await resp.json()

        # A token for another method, a malformed hash, an unknown object.
        assert (await delete(ANN, lxm="fm.plyr.media.uploadAudio"))[0] == 401
        assert (await delete(ANN, target="xyz"))[0] == 400
        assert (await delete(ANN, target="0" * 64))[0] == 404
        # The transcode is still queued: not now.
        status, body = await delete(ANN)
        assert (status, body["error"]) == (409, "InUse") and "still being processed" in body["message"]
        assert await media.run_jobs() == 1
        # Another account may not delete it.
        status, body = await delete(BOB)
        assert (status, body["error"]) == (403, "Forbidden")
        # A track in the index plays it: refused, unless it is one of the caller's records just
        # deleted (the index has not seen the delete yet); another account's URI cannot be named.
        track_uri = f"at://{ANN}/fm.plyr.track/3kaaaaaaaaaaa"
        await pool.execute(
            """INSERT INTO tracks (uri, did, rkey, cid, rev, title, artist, file_type, audio_url, record,
                                   created_at, sort_at)
               VALUES ($1, $2, '3kaaaaaaaaaaa', 'bafyx', '3kaaaaaaaaaaa', 'Tone', 'Ann', 'mp3', $3, '{}', now(), now())""",
            track_uri, ANN, up["streamUrl"],
        )  # fmt: skip
        status, body = await delete(ANN)
        assert (status, body["error"]) == (409, "InUse") and track_uri in body["message"]
        assert (await delete(ANN, f"at://{BOB}/fm.plyr.track/3kbbbbbbbbbbb"))[0] == 400
        stored = [media.ctx.storage.path(k) for k in await pool.fetchval(
            "SELECT array_agg(storage_key) FROM (SELECT storage_key FROM media_objects WHERE sha256 = $1 "
            "UNION ALL SELECT storage_key FROM media_renditions WHERE source_sha256 = $1) k", sha,
        )]  # fmt: skip
        assert len(stored) == 2 and all(p.is_file() for p in stored)  # the master and its MP3
        status, body = await delete(ANN, track_uri)
        assert (status, body) == (200, {"sha256": sha, "deletedKeys": 2})
        assert not any(p.exists() for p in stored)
        assert await pool.fetchval("SELECT count(*) FROM media_objects WHERE sha256 = $1", sha) == 0
        assert await pool.fetchval("SELECT count(*) FROM media_renditions WHERE source_sha256 = $1", sha) == 0
        async with media.session.get(up["streamUrl"]) as resp:
            assert resp.status == 404
        assert (await delete(ANN, track_uri))[0] == 404
