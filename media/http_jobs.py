"""Job and export routes: a job's state as JSON or as Server-Sent Events, and the account
exports (queued as jobs, downloaded once done).

    GET  /jobs/{id}              the job as JSON (its owner, an uploader it was handed to, or trusted)
    GET  /jobs/{id}/events       the job's progress as Server-Sent Events, until it ends (same auth)
    POST /exports[?did=]         queue a zip of the caller's tracks; GET /exports/{id}/download
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from media import jobs
from media.auth import JOB_READ_LXMS, LXM_CREATE_EXPORT, LXM_GET_EXPORT, is_did
from media.exports import content_state, reusable_export
from media.http_common import CTX, EVENTS, authenticated_caller, error_response, json_response
from media.storage import LocalStorage

TERMINAL = ("done", "failed")


def _job_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(
            text='{"error":"NotFound","message":"no such job"}', content_type="application/json"
        )
    return int(raw)


async def _readable_job(request: web.Request) -> jobs.Job | web.Response:
    """The job of the URL if the caller may read it, else the error to answer with.

    Job ids are sequential, so knowing one proves nothing: the caller must authenticate and
    be the job's owner (who queued it), an uploader the job was handed to, or a trusted caller.
    """
    job_id = _job_id(request)
    caller = await authenticated_caller(request, JOB_READ_LXMS)
    pool = request.app[CTX].pool
    job = await jobs.get_job(pool, job_id)
    if job is None:
        return error_response(404, "NotFound", "no such job")
    if not caller.trusted and not await jobs.may_read(pool, job, caller.did):
        return error_response(403, "Forbidden", "this job belongs to another account")
    return job


async def get_job(request: web.Request) -> web.Response:
    job = await _readable_job(request)
    if isinstance(job, web.Response):
        return job
    return json_response(job.public(), headers={"Cache-Control": "no-store"})


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the job's state now, then on every change, until it is done or failed."""
    job_id = _job_id(request)
    ctx = request.app[CTX]
    hub = request.app[EVENTS]
    queue = hub.subscribe(job_id)  # before reading the state: no change can slip between
    try:
        # Authenticated once, here: the stream may outlive the token (service-auth JWTs are
        # short-lived), as a response already being sent would.
        job = await _readable_job(request)
        if isinstance(job, web.Response):
            return job
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        last: dict[str, Any] | None = None
        while True:
            state = job.public()
            if state != last:
                event = job.status if job.status in TERMINAL else "progress"
                await resp.write(f"event: {event}\ndata: {orjson.dumps(state).decode()}\n\n".encode())
                last = state
            if job.status in TERMINAL:
                break
            try:
                await asyncio.wait_for(queue.get(), 15)
                while not queue.empty():
                    queue.get_nowait()
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
            fresh = await jobs.get_job(ctx.pool, job_id)
            if fresh is None:
                break
            job = fresh
        await resp.write_eof()
        return resp
    finally:
        hub.unsubscribe(job_id, queue)


async def create_export(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    caller = await authenticated_caller(request, LXM_CREATE_EXPORT)
    did = caller.did
    if caller.trusted and request.query.get("did"):
        did = request.query["did"]
        if not is_did(did):
            return error_response(400, "InvalidRequest", "did must be a valid DID")
    if not did:
        return error_response(400, "InvalidRequest", "name the account to export (X-Plyr-Did or ?did=)")
    async with ctx.pool.acquire() as conn:
        # Nothing changed since a recent export: hand that one back rather than store another
        # zip for PLYR_MEDIA_EXPORT_TTL_S (each request would otherwise cost a full copy).
        state = await content_state(conn, did)
        if state is not None:
            reused = await reusable_export(conn, did, state, ttl_s=ctx.settings.export_ttl_s)
            if reused is not None:
                return json_response(_export_links(reused) | {"reused": True})
        job_id = await jobs.enqueue(
            conn, kind="export", owner=did, payload={"did": did},
            max_attempts=ctx.settings.job_max_attempts, dedupe_key=did,
        )
    return json_response(_export_links(job_id), status=202)


def _export_links(job_id: int) -> dict[str, Any]:
    return {"jobId": job_id, "status": f"/jobs/{job_id}", "events": f"/jobs/{job_id}/events"}


async def download_export(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    caller = await authenticated_caller(request, LXM_GET_EXPORT)
    job = await jobs.get_job(ctx.pool, _job_id(request))
    if job is None or job.kind != "export" or (not caller.trusted and caller.did != job.owner):
        return error_response(404, "NotFound", "no such export")
    if job.status != "done" or not job.result:
        return error_response(409, "NotReady", f"the export is {job.status}")
    if job.result.get("expired"):
        return error_response(410, "Expired", "this export has expired; ask for a new one")
    key, filename = job.result["key"], job.result["filename"]
    disposition = f'attachment; filename="{filename}"'
    redirect = await ctx.storage.download_url(key, filename)
    if redirect is not None:
        raise web.HTTPFound(redirect)
    assert isinstance(ctx.storage, LocalStorage)
    path = ctx.storage.path(key)
    if not path.is_file():
        return error_response(410, "Gone", "the export file is no longer stored")
    return web.FileResponse(path, headers={"Content-Disposition": disposition, "Content-Type": "application/zip", "Cache-Control": "private, no-store"})
