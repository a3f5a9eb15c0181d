"""Install, start and stop the real-labeler test network of tests/e2e/ozone (no pytest fixtures).

`@atproto/dev-env` runs a PLC directory, a PDS, the Bluesky AppView and Ozone (Bluesky's
moderation service and labeler) in one Node 22 process; tests/e2e/ozone/start-network.mjs
starts it on free loopback ports with a moderator and a user account and prints `READY {json}`.
It needs Postgres (a database of its own, made here on the test server and dropped after) and
Redis (REDIS_HOST, else a private `redis-server` it starts itself).

`OzoneModerator` applies labels the way a moderator's client does: logged in on the PDS, it calls
`tools.ozone.moderation.emitEvent` there with `atproto-proxy: <ozone DID>#atproto_labeler`, and
the PDS forwards the call to Ozone with a service-auth token.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .npm_harness import INSTALL_TIMEOUT_S, HarnessUnavailable, NpmHarness, stop_process
from .pds_client import Account, PdsClient

OZONE_DIR = Path(__file__).resolve().parent / "ozone"
HARNESS = NpmHarness(OZONE_DIR, "the Ozone harness (tests/e2e/ozone)")
# Loading dev-env alone takes 5-10 s on a busy 2-core machine, all of it up to 20-30 s.
READY_TIMEOUT_S = float(os.environ.get("PLYR_E2E_OZONE_READY_TIMEOUT", 180))
# The first test to set the network up may pay for `npm ci`: give it this long (pytest-timeout).
FIRST_TEST_TIMEOUT_S = INSTALL_TIMEOUT_S + READY_TIMEOUT_S + 60

LABEL_EVENT = "tools.ozone.moderation.defs#modEventLabel"
REPO_REF = "com.atproto.admin.defs#repoRef"
STRONG_REF = "com.atproto.repo.strongRef"
ACCOUNT_PASSWORD = "e2e-password-1"  # of the accounts tests make with OzoneNetwork.new_account


@dataclass(frozen=True)
class NetworkAccount:
    """An account start-network.mjs made on the PDS (log in with PdsClient.login)."""

    did: str
    handle: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class OzoneNetwork:
    """A running PLC + PDS + AppView + Ozone on loopback."""

    plc_url: str  # http://127.0.0.1:PORT, the PLC directory (PLYR_PLC_URL)
    pds_url: str  # http://127.0.0.1:PORT, XRPC of the PDS
    pds_public_url: str  # http://localhost:PORT, the PDS endpoint DID documents name
    appview_url: str  # http://127.0.0.1:PORT, the Bluesky AppView
    ozone_url: str  # http://127.0.0.1:PORT, Ozone's XRPC (queryLabels, subscribeLabels)
    ozone_public_url: str  # http://localhost:PORT, the #atproto_labeler endpoint of its DID doc
    ozone_did: str  # the labeler: `src` of its labels
    moderator: NetworkAccount  # in Ozone's team with the moderator role
    user: NetworkAccount  # an ordinary account (make more with new accounts on the PDS)
    pds_admin_password: str
    database_url: str  # the database dev-env keeps its schemas in (dropped after the session)
    pid: int
    node_version: str
    log_path: Path  # the network's stderr
    install_seconds: float | None  # time `npm ci` took in this session, None when not needed
    ready_seconds: float  # process start to READY
    info: dict[str, Any] = field(repr=False)  # the whole READY JSON

    @property
    def labeler_proxy(self) -> str:
        """The `atproto-proxy` value that sends a call through the PDS to Ozone."""
        return f"{self.ozone_did}#atproto_labeler"

    def subscribe_labels_url(self, cursor: int | None = 0) -> str:
        url = self.ozone_url.replace("http://", "ws://", 1) + "/xrpc/com.atproto.label.subscribeLabels"
        return url if cursor is None else f"{url}?cursor={cursor}"

    def identity_env(self) -> dict[str, str]:
        """Settings for plyr's identity resolution against this network."""
        return {"PLYR_PLC_URL": self.plc_url, "PLYR_HANDLE_RESOLVER_URL": self.pds_url}

    def client(self, **kwargs: Any) -> PdsClient:
        """A PdsClient for this PDS, admin calls included; close it (or use `async with`)."""
        return PdsClient(self.pds_url, admin_password=self.pds_admin_password, **kwargs)

    async def login(self, pds: PdsClient, account: NetworkAccount) -> Account:
        return await pds.login(account.handle, account.password)

    async def new_account(self, pds: PdsClient, name: str) -> Account:
        """A fresh account on the PDS, its handle (`<name>-<random>.test`) unique in the session."""
        handle = f"{name[:9]}-{uuid.uuid4().hex[:8]}.test"
        return await pds.create_account(handle, f"{handle}@example.test", ACCOUNT_PASSWORD)

    async def moderator_session(self, pds: PdsClient) -> OzoneModerator:
        """The moderator, logged in on the PDS, ready to label."""
        return OzoneModerator(pds, await self.login(pds, self.moderator), self.ozone_did)


def subject_ref(subject: str, cid: str | None = None) -> dict[str, str]:
    """The emitEvent subject for a DID (the account) or an at:// URI with its CID (the record)."""
    if subject.startswith("did:"):
        if cid is not None:
            raise ValueError("an account subject has no CID")
        return {"$type": REPO_REF, "did": subject}
    if cid is None:
        raise ValueError("a record subject needs its CID (Ozone takes a strongRef)")
    return {"$type": STRONG_REF, "uri": subject, "cid": cid}


@dataclass
class OzoneModerator:
    """A moderator of the network's Ozone, calling it through the PDS as a real client does."""

    pds: PdsClient
    account: Account
    ozone_did: str

    async def label(
        self,
        subject: str,
        *,
        cid: str | None = None,
        create: Sequence[str] = (),
        negate: Sequence[str] = (),
        comment: str | None = None,
    ) -> dict[str, Any]:
        """Apply (`create`) and/or negate label values on an account (a DID) or a record
        (at:// URI + `cid`); returns Ozone's event view. Ozone signs and publishes the labels
        at once (queryLabels, subscribeLabels)."""
        event: dict[str, Any] = {
            "$type": LABEL_EVENT,
            "createLabelVals": list(create),
            "negateLabelVals": list(negate),
        }
        if comment is not None:
            event["comment"] = comment
        result: dict[str, Any] = await self.pds.call(
            "tools.ozone.moderation.emitEvent",
            account=self.account,
            headers={"atproto-proxy": f"{self.ozone_did}#atproto_labeler"},
            body={"event": event, "subject": subject_ref(subject, cid), "createdBy": self.account.did},
        )
        return result


# --- install, start and stop ----------------------------------------------------------------


def check_redis() -> None:
    """HarnessUnavailable unless REDIS_HOST is given or a redis-server can be started."""
    if os.environ.get("REDIS_HOST"):
        return
    server = os.environ.get("REDIS_SERVER", "redis-server")
    if shutil.which(server) is None:
        raise HarnessUnavailable(
            "e2e: the Ozone harness needs Redis: set REDIS_HOST=host:port, or install "
            "redis-server (e.g. `apt-get install redis-server`) so it starts a private one"
        )


def ensure_installed(log_dir: Path) -> float | None:
    """Run `npm ci` in tests/e2e/ozone unless node_modules matches the lock; returns its seconds.

    Raises HarnessUnavailable when an install is needed and npm is absent, or Redis is missing.
    """
    check_redis()
    return HARNESS.ensure_installed(log_dir)


def _with_database(url: str, name: str) -> str:
    # The path is the database; a query (the embedded server's `?host=/socket/dir`) is kept.
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def create_database(server_url: str) -> str:
    """A new, empty database on the test server for dev-env's schemas; returns its URL."""
    name = f"plyr_e2e_ozone_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _with_database(server_url, name)


async def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def start_network(
    log_dir: Path, database_url: str, *, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any], float, Path]:
    """Start start-network.mjs; returns (process, READY info, seconds, log path).

    dev-env picks its ports itself (it reserves them across its processes on the machine);
    a start that still loses one to a race is retried.
    """
    return HARNESS.start_node(
        "start-network.mjs",
        log_dir,
        port_env=(),
        env={**(extra_env or {}), "DB_POSTGRES_URL": database_url},
        ready_timeout_s=READY_TIMEOUT_S,
        label="ozone",
    )


def stop_network(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM our own process by PID (it removes its data), SIGKILL it if it lingers."""
    stop_process(proc)


def network_from_info(
    info: dict[str, Any],
    *,
    proc: subprocess.Popen[bytes],
    database_url: str,
    log_path: Path,
    install_seconds: float | None,
    ready_seconds: float,
) -> OzoneNetwork:
    def account(obj: dict[str, Any]) -> NetworkAccount:
        return NetworkAccount(did=obj["did"], handle=obj["handle"], password=obj["password"])

    return OzoneNetwork(
        plc_url=info["plc_url"],
        pds_url=info["pds_url"],
        pds_public_url=info["pds_public_url"],
        appview_url=info["appview_url"],
        ozone_url=info["ozone_url"],
        ozone_public_url=info["ozone_public_url"],
        ozone_did=info["ozone_did"],
        moderator=account(info["moderator"]),
        user=account(info["user"]),
        pds_admin_password=info["pds_admin_password"],
        database_url=database_url,
        pid=proc.pid,
        node_version=info["node"],
        log_path=log_path,
        install_seconds=install_seconds,
        ready_seconds=ready_seconds,
        info=info,
    )

