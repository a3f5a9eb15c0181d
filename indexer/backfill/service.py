"""The resync loop as a service entry point: `run(rt)` for `plyr up` / `plyr index` to start.

Kept separate from indexer/service.py (the live indexer's) so either can be started alone; the
live indexer marks repos (`actors.needs_resync`) and this loop fetches them.
"""

from __future__ import annotations

from core.runtime import Runtime
from indexer.backfill.resync import run_resync_loop


async def run(rt: Runtime) -> None:
    """Fetch repos marked for resync until cancelled."""
    await run_resync_loop(rt)
