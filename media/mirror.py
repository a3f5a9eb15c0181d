"""The `mirror` job: copy a track's audio blob from the artist's PDS and play it from our storage.

The indexer requests it (its mirror_outbox) when a track record carries an audioBlob;
media/mirror_requests.py turns requests into these jobs. The job resolves the artist's DID to
their PDS, streams `com.atproto.sync.getBlob?did=&cid=` to a temporary file while hashing it,
checks that the sha-256 is the digest in the blob's CID (CIDv1, raw codec, sha2-256), ingests it
like an upload, transcodes it when browsers need that, and records our copy in `media_mirrors`
(track uri, blob cid, url). The AppView plays a track from that copy while the track still
carries the same blob.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from core.net import guard_refusal, outbound_connector
from media.copyright.store import request_scan
from media.ingest import BadMedia, ingest_audio
from media.job_context import JobContext, JobFailed
from media.receive import TooLarge, receive
from media.transcode import needs_transcode
from media.transcode_job import make_stream

log = logging.getLogger("plyr.media.mirror")

_RECORD_MIRROR = """
INSERT INTO media_mirrors (track_uri, blob_cid, url) VALUES ($1, $2, $3)
ON CONFLICT (track_uri, blob_cid) DO UPDATE SET url = excluded.url, mirrored_at = now()
"""

CODEC_RAW = 0x55
SHA2_256 = 0x12


def blob_digest(blob_cid: str) -> bytes:
    """The sha-256 digest a blob's bytes must have; JobFailed for a CID we cannot check."""
    from protocol.cid import CidError, cid_from_str, parse_cid

    try:
        version, codec, hash_code, digest = parse_cid(cid_from_str(blob_cid))
    except CidError as exc:
        raise JobFailed(f"the blob CID {blob_cid!r} is not valid: {exc}") from None
    if version != 1 or codec != CODEC_RAW or hash_code != SHA2_256 or len(digest) != 32:
        raise JobFailed(f"the blob CID {blob_cid} is not a raw sha2-256 CIDv1")
    return digest


async def _pds_endpoint(ctx: JobContext, did: str) -> str:
    resolver = ctx.resolver
    if resolver is None:
        raise RuntimeError("mirror jobs need an identity resolver: pass one to the Worker")
    from protocol.identity import IdentityError

    try:
        doc = await resolver.resolve_did(did)
    except IdentityError as exc:
        if getattr(exc, "kind", "") in ("not_found", "invalid", "unsupported"):
            raise JobFailed(f"cannot resolve {did}: {exc}") from None
        raise  # unreachable directory: retry later
    if not doc.pds_endpoint:
        raise JobFailed(f"{did} has no PDS endpoint in its DID document")
    return str(doc.pds_endpoint).rstrip("/")


@contextlib.asynccontextmanager
async def _get_blob(
    session: aiohttp.ClientSession, pds: str, did: str, blob_cid: str
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The getBlob response; a PDS at a refused (non-public) address fails the job for good."""
    try:
        resp = await session.get(
            f"{pds}/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": blob_cid}
        )
    except aiohttp.ClientConnectorError as exc:
        refused = guard_refusal(exc)
        if refused is not None:
            raise JobFailed(f"cannot fetch the blob from {pds}: {refused.strerror}") from None
        raise
    async with resp:
        yield resp


async def run_mirror(ctx: JobContext) -> dict[str, Any]:
    payload = ctx.job.payload
    track_uri, did, blob_cid = payload["track_uri"], payload["did"], payload["blob_cid"]
    media = ctx.media
    digest = blob_digest(blob_cid)

    # Already have these bytes (the same blob on another track, or an earlier upload)?
    async with media.pool.acquire() as conn:
        known = await conn.fetchrow("SELECT sha256 FROM media_objects WHERE sha256 = $1", digest.hex())
    if known is None:
        await ctx.progress(0.0, "resolving PDS")
        pds = await _pds_endpoint(ctx, did)
        await ctx.progress(0.02, "downloading")
        timeout = aiohttp.ClientTimeout(total=media.settings.fetch_timeout_s, sock_connect=15)
        # The PDS endpoint comes from a DID document: no private addresses (core/net.py).
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=outbound_connector()) as session,
            _get_blob(session, pds, did, blob_cid) as resp,
        ):
            if resp.status in (400, 404):
                raise JobFailed(f"the PDS has no such blob (HTTP {resp.status})")
            if resp.status != 200:
                raise RuntimeError(f"getBlob answered HTTP {resp.status}")
            total = resp.content_length
            last = [0.0]

            def on_bytes(n: int) -> None:
                last[0] = n

            async def read() -> bytes:
                return await resp.content.readany()

            try:
                received = await receive(
                    read,
                    tmp_dir=media.settings.tmp_dir,
                    limit=media.settings.max_audio_bytes,
                    chunk_bytes=media.settings.chunk_bytes,
                    on_bytes=on_bytes if total else None,
                )
            except TooLarge as exc:
                raise JobFailed(f"the blob is too large: {exc}") from None
        try:
            if received.sha256 != digest.hex():
                raise JobFailed(
                    f"the blob's bytes do not match its CID {blob_cid} "
                    f"(sha-256 {received.sha256})"
                )
            await ctx.progress(0.4, "checking")
            try:
                info = await ingest_audio(
                    media, received, owner=did, blob_cid=blob_cid, queue_transcode=False,
                    title=None, artist=None,
                )
            except BadMedia as exc:
                raise JobFailed(f"the blob is not usable audio: {exc}") from None
        finally:
            received.discard()
        sha = info["sha256"]
    else:
        sha = known["sha256"]

    async with media.pool.acquire() as conn:
        obj = await conn.fetchrow("SELECT format, url, probe FROM media_objects WHERE sha256 = $1", sha)
        track = await conn.fetchrow("SELECT title, artist FROM tracks WHERE uri = $1", track_uri)
    assert obj is not None  # stored or found just above
    stream_url = obj["url"]
    if needs_transcode(obj["format"], obj["probe"].get("codec")):
        made = await make_stream(
            ctx, sha,
            title=track["title"] if track else None,
            artist=track["artist"] if track else None,
            cover_sha256=None,
            span=(0.45, 0.95),
        )
        stream_url = made["streamUrl"]
    await ctx.progress(0.97, "recording our copy")
    async with media.pool.acquire() as conn, conn.transaction():
        await conn.execute(_RECORD_MIRROR, track_uri, blob_cid, stream_url)
        if media.settings.copyright_scan:
            # Scanned for this track unless the audio was scanned already (media/copyright/).
            await request_scan(conn, sha, owner=did, track_uri=track_uri)
        current = await conn.fetchval(
            "SELECT 1 FROM tracks WHERE uri = $1 AND audio_blob_cid = $2", track_uri, blob_cid
        )
    return {
        "trackUri": track_uri,
        "sha256": sha,
        "masterUrl": obj["url"],
        "streamUrl": stream_url,
        "trackUpdated": current is not None,  # the track carries this blob: it plays our copy
    }
