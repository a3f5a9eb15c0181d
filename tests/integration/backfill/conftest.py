"""Fixtures for backfill integration tests: the fake PLC/PDS/relay and a resolver pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from indexer.backfill.http import Politeness
from protocol.identity import IdentityResolver
from tests.integration.backfill.fake_network import FakeNetwork
from tests.support.identity import local_resolver

FAST = Politeness(
    concurrency=4, per_host=2, retries=2, backoff_base=0.02, backoff_max=0.1, read_timeout=5
)


@pytest.fixture
async def net() -> AsyncIterator[FakeNetwork]:
    network = FakeNetwork()
    await network.start()
    yield network
    await network.stop()


@pytest.fixture
async def resolver(net: FakeNetwork) -> AsyncIterator[IdentityResolver]:
    r = local_resolver(net.base, negative_ttl=0, cache_ttl=0.001)
    yield r
    await r.close()
