"""`DELETE /media/{sha256}`: the uploader deletes our copy of a file they uploaded.

    DELETE /media/{sha256}[?deleted=at://<caller>/fm.plyr.track/<rkey> ...]
        auth: service auth with lxm fm.plyr.media.deleteMedia (or the server key)
        200 {"sha256", "deletedKeys"}   the object, its renditions and their stored files are gone
        403 Forbidden                   another account uploaded it
        404 NotFound                    no such object
        409 InUse                       a track in the index still names it (audio, cover, or the
                                        PDS blob it is a copy of), or its transcode is still running

`deleted` names the caller's own track records that were just deleted from their PDS: the
index may not have seen those deletes yet, so they do not count as users of the object (only
records in the caller's own repository can be named). The rows go in one transaction; the
stored files after it, each under the sweep's per-key lock and only if no row names the key
any more (media/sweep.py), so an upload of the same bytes racing the delete keeps its file.
"""

from __future__ import annotations

import logging

from aiohttp import web

from media.http_common import CTX, authenticated_caller, error_response, json_response
from media.sweep import delete_if_unreferenced

log = logging.getLogger("plyr.media.http")

LXM_DELETE_MEDIA = "fm.plyr.media.deleteMedia"
_HEX = frozenset("0123456789abcdef")
MAX_DELETED_URIS = 50

_IN_USE = """
SELECT t.uri FROM tracks t
WHERE (t.audio_url = ANY($1::text[]) OR t.image_url = ANY($1::text[])
       OR ($2::text IS NOT NULL AND t.audio_blob_cid = $2))
  AND NOT (t.uri = ANY($3::text[]))
LIMIT 1
"""


async def delete_media(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    caller = await authenticated_caller(request, LXM_DELETE_MEDIA)
    sha = request.match_info["sha256"]
    if len(sha) != 64 or not set(sha) <= _HEX:
        return error_response(400, "InvalidRequest", "the path must be /media/<sha256 of the object>")
    deleted = request.query.getall("deleted", [])
    own_prefix = f"at://{caller.did}/"
    if len(deleted) > MAX_DELETED_URIS or any(
        not uri.startswith(own_prefix) or caller.did is None for uri in deleted
    ):
        return error_response(400, "InvalidRequest", "deleted= may only name your own records (at most 50)")
    async with ctx.pool.acquire() as conn, conn.transaction():
        obj = await conn.fetchrow(
            "SELECT url, storage_key, uploaded_by, blob_cid FROM media_objects WHERE sha256 = $1 FOR UPDATE", sha
        )
        if obj is None:
            return error_response(404, "NotFound", "no such object")
        if not caller.trusted and obj["uploaded_by"] != caller.did:
            return error_response(403, "Forbidden", "only the account that uploaded it may delete it")
        renditions = await conn.fetch(
            "SELECT url, storage_key FROM media_renditions WHERE source_sha256 = $1", sha
        )
        urls = [obj["url"], *(r["url"] for r in renditions)]
        user = await conn.fetchval(_IN_USE, urls, obj["blob_cid"], deleted)
        if user is not None:
            return error_response(409, "InUse", f"a track still uses it: {user}")
        busy = await conn.fetchval(
            "SELECT id FROM media_jobs WHERE dedupe_key = $1 AND kind IN ('transcode', 'verify') "
            "AND status IN ('queued', 'running') LIMIT 1",
            sha,
        )
        if busy is not None:
            return error_response(409, "InUse", f"it is still being processed (job {busy}); try again when it is done")
        await conn.execute("DELETE FROM media_objects WHERE sha256 = $1", sha)  # renditions cascade
    keys = [obj["storage_key"], *(r["storage_key"] for r in renditions)]
    removed = 0
    for key in keys:
        try:
            removed += await delete_if_unreferenced(ctx.pool, ctx.storage, key)
        except Exception:
            # The rows are gone: the orphan sweep deletes what is left once past its grace.
            log.exception("could not delete a stored object now", extra={"key": key})
    log.info("media deleted by its uploader", extra={"sha256": sha, "did": caller.did, "keys": removed})
    return json_response({"sha256": sha, "deletedKeys": removed})
