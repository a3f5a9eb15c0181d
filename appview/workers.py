"""`plyr serve --workers N`: N AppView processes on one host sharing one port.

Each worker is a `plyr serve` child process listening with SO_REUSEPORT (service.py), so the
kernel spreads connections over them: one Python process per core instead of one for all.
The parent only supervises: it resolves the database once (starting the embedded one if no URL
is set, so the workers share it) and applies migrations, starts the workers, starts a worker
again when one dies (after a growing pause if it keeps dying at once), and stops them all on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType

from core import db
from core.errors import ConfigError
from core.migrate import apply_migrations
from core.settings import CoreSettings

log = logging.getLogger("plyr.appview.workers")

_POLL_SECONDS = 0.2  # how often the parent looks for dead workers
_STEADY_SECONDS = 10.0  # a worker up this long is well: its next death restarts it at once
_MAX_PAUSE_SECONDS = 30.0
_STOP_SECONDS = 15.0  # then SIGKILL


@dataclass
class Worker:
    slot: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = 0.0  # before the next restart; doubles while the worker dies at once
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, count: int, command: list[str], env: dict[str, str]) -> None:
        self.workers = [Worker(slot) for slot in range(count)]
        self.command = command
        self.env = env
        self._stop = threading.Event()

    def start(self, worker: Worker) -> None:
        worker.process = subprocess.Popen(self.command, env=self.env)
        worker.started = time.monotonic()
        log.info("worker started", extra={"worker": worker.slot, "pid": worker.process.pid})

    def _on_exit(self, worker: Worker, code: int) -> None:
        now = time.monotonic()
        if now - worker.started >= _STEADY_SECONDS:
            worker.pause = 0.0
        else:
            worker.pause = min(_MAX_PAUSE_SECONDS, max(0.5, worker.pause * 2))
        worker.restart_at = now + worker.pause
        worker.process = None
        log.warning("worker exited; starting it again",
                    extra={"worker": worker.slot, "code": code, "pause": worker.pause})  # fmt: skip

    def stop(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self._stop.set()

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        try:
            for worker in self.workers:
                self.start(worker)
            while not self._stop.wait(_POLL_SECONDS):
                for worker in self.workers:
                    if worker.process is not None:
                        code = worker.process.poll()
                        if code is not None:
                            self._on_exit(worker, code)
                    if worker.process is None and time.monotonic() >= worker.restart_at:
                        self.start(worker)
        finally:
            self._stop_all()

    def _stop_all(self) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop; killing it", extra={"pid": process.pid})
                process.kill()
                process.wait()
        log.info("workers stopped", extra={"count": len(running)})


async def _prepare_database(url: str) -> None:
    conn = await db.connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()


def supervise(count: int, host: str, port: int, settings: CoreSettings) -> None:
    """Run `count` AppView workers on host:port until SIGTERM/SIGINT."""
    if port == 0:
        raise ConfigError("--workers needs a fixed port (each worker binds it; 0 would give each its own)")
    url = db.resolve_database_url(settings)
    try:
        asyncio.run(_prepare_database(url))
        env = {**os.environ, "DATABASE_URL": url, "PLYR_APPVIEW_WORKERS": "1"}
        command = [sys.executable, "-m", "plyr", "serve", "--host", host, "--port", str(port), "--workers", "1"]
        log.info("starting appview workers", extra={"count": count, "url": f"http://{host}:{port}"})
        Supervisor(count, command, env).run()
    finally:
        db.stop_embedded()
