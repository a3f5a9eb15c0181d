"""Job workers: claim a job, run its handler, record the outcome; many workers share one queue.

While a handler runs, a heartbeat renews the job's lease; if the lease is lost (the job was
given to another worker after we stalled) the handler is cancelled. A handler is given a
JobContext and raises JobFailed (both in media/job_context.py) for failures that retrying
cannot fix (bad input); resource exhaustion (a full disk, no memory: media/errors.py) puts the
job back for later without using an attempt; any other exception is retried with backoff until
the job's max_attempts. Every outcome - success, failure, cancellation - goes through the
handler's own cleanup (temp files, partial objects) before the job is updated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from media import jobs
from media.copyright.scan import run_copyright_scan
from media.errors import describe, exhausted_errno
from media.exports import run_export
from media.ingest import MediaContext
from media.job_context import Handler, JobContext, JobFailed
from media.jobs import Job, LeaseLost
from media.mirror import run_mirror
from media.transcode_job import run_transcode, run_verify

if TYPE_CHECKING:
    from protocol.identity import IdentityResolving

log = logging.getLogger("plyr.media.worker")

JOBS_FINISHED = Counter("plyr_media_jobs_total", "Media job attempts by kind and outcome", ["kind", "outcome"])
JOB_SECONDS = Histogram(
    "plyr_media_job_seconds", "Duration of media job attempts", ["kind"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)


def default_handlers() -> dict[str, Handler]:
    return {"transcode": run_transcode, "verify": run_verify, "mirror": run_mirror, "export": run_export,
            "copyright_scan": run_copyright_scan}


def worker_name(index: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


class Worker:
    def __init__(
        self,
        media: MediaContext,
        *,
        name: str,
        handlers: dict[str, Handler] | None = None,
        resolver: IdentityResolving | None = None,
        wake: asyncio.Event | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.media = media
        self.name = name
        self.handlers = handlers or default_handlers()
        self.resolver = resolver
        self.wake = wake or asyncio.Event()
        self.poll_s = poll_s

    async def run(self) -> None:
        """Work until cancelled."""
        log.info("worker started", extra={"worker": self.name})
        while True:
            try:
                did_work = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker loop error", extra={"worker": self.name})
                did_work = False
                await asyncio.sleep(self.poll_s)
            if not did_work:
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_s)

    async def run_once(self) -> bool:
        """Claim and run one job; False when there was none due."""
        job = await jobs.claim(
            self.media.pool,
            worker=self.name,
            lease_s=self.media.settings.job_lease_s,
            kinds=list(self.handlers),
        )
        if job is None:
            return False
        await self.execute(job)
        return True

    async def execute(self, job: Job) -> None:
        ctx = JobContext(media=self.media, job=job, worker=self.name, resolver=self.resolver)
        handler = self.handlers[job.kind]
        started = time.monotonic()
        log.info("job started", extra={"job": job.id, "kind": job.kind, "attempt": job.attempts})
        task = asyncio.create_task(handler(ctx), name=f"job-{job.id}")
        beat = asyncio.create_task(self._heartbeat(ctx, task))
        outcome = "failed"
        try:
            try:
                result = await task
            except asyncio.CancelledError:
                if beat.done() and isinstance(beat.exception(), LeaseLost):
                    outcome = "lease_lost"
                    log.warning("job lease lost; another worker has it", extra={"job": job.id})
                    return
                raise
            except JobFailed as exc:
                await jobs.fail(self.media.pool, job, worker=self.name, error=str(exc), retry=False)
                log.warning("job failed", extra={"job": job.id, "kind": job.kind, "error": str(exc)})
                return
            except LeaseLost:
                outcome = "lease_lost"
                return
            except Exception as exc:
                if (err := exhausted_errno(exc)) is not None:
                    # Disk or memory ran out: not the input's fault, so not an attempt.
                    status = await jobs.defer(self.media.pool, job, worker=self.name, error=describe(err))
                    outcome = "deferred"
                    log.warning("job deferred: out of resources",
                                extra={"job": job.id, "kind": job.kind, "error": describe(err), "status": status})
                    return
                message = str(exc) or type(exc).__name__
                status = await jobs.fail(self.media.pool, job, worker=self.name, error=message, retry=True)
                outcome = "retry" if status == "queued" else "failed"
                log.warning(
                    "job attempt failed",
                    extra={"job": job.id, "kind": job.kind, "error": message, "status": status},
                )
                return
            if await jobs.complete(self.media.pool, job, worker=self.name, result=result):
                outcome = "done"
                log.info("job done", extra={"job": job.id, "kind": job.kind, "seconds": round(time.monotonic() - started, 3)})
            else:
                outcome = "lease_lost"
        except asyncio.CancelledError:
            # Shutting down: stop the handler (its cleanup runs) and give the job back at once.
            outcome = "interrupted"
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await asyncio.shield(jobs.release(self.media.pool, job, worker=self.name))
            raise
        finally:
            beat.cancel()
            with contextlib.suppress(BaseException):
                await beat
            JOBS_FINISHED.labels(job.kind, outcome).inc()
            JOB_SECONDS.labels(job.kind).observe(time.monotonic() - started)

    async def _heartbeat(self, ctx: JobContext, task: asyncio.Task[Any]) -> None:
        interval = max(0.2, self.media.settings.job_lease_s / 3)
        while not task.done():
            await asyncio.sleep(interval)
            if ctx.since_last_report() < interval:
                continue  # the handler reported progress recently: the lease is fresh
            try:
                await ctx.progress()
            except LeaseLost:
                task.cancel()
                raise
            except Exception:
                log.exception("heartbeat failed", extra={"job": ctx.job.id})
