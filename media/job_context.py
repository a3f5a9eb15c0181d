"""What a job handler is given and may raise: the seam between the worker and the job modules.

The worker (media/worker.py) imports the handlers; the handlers import only this module, so
neither needs the other's internals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from media import jobs
from media.ingest import MediaContext
from media.jobs import Job

if TYPE_CHECKING:  # importing identity would pull in aiohttp
    from protocol.identity import IdentityResolving


class JobFailed(Exception):
    """A failure that another attempt would repeat (bad input, CID mismatch): fail now."""


@dataclass
class JobContext:
    media: MediaContext
    job: Job
    worker: str
    resolver: IdentityResolving | None = None
    _last_report: float = field(default=0.0)

    async def progress(self, fraction: float | None = None, phase: str | None = None) -> None:
        """Publish progress (0..1) and/or the phase; also renews the lease."""
        self._last_report = time.monotonic()
        await jobs.report(
            self.media.pool,
            self.job,
            worker=self.worker,
            lease_s=self.media.settings.job_lease_s,
            progress=fraction,
            phase=phase,
        )

    def since_last_report(self) -> float:
        """Seconds since the handler (or the heartbeat) last renewed the lease."""
        return time.monotonic() - self._last_report


Handler = Callable[[JobContext], Coroutine[Any, Any, dict[str, Any]]]
