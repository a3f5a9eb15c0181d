"""The blob mirror behind the address guard: a PDS endpoint at a non-public address fails the
job for good (JobFailed), with the reason, instead of being retried."""

from __future__ import annotations

import aiohttp
import pytest

from core.net import outbound_connector
from media.job_context import JobFailed
from media.mirror import _get_blob


@pytest.mark.parametrize(
    ("pds", "address"),
    [
        ("http://169.254.169.254", "169.254.169.254"),
        ("http://[::1]:2583", "::1"),
        ("http://10.0.0.3", "10.0.0.3"),
    ],
)
async def test_a_pds_at_a_private_address_fails_the_job(pds: str, address: str) -> None:
    connector = outbound_connector(allow_private_network=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(JobFailed, match="not public") as info:
            async with _get_blob(session, pds, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "bafkrei"):
                pass
    assert address in str(info.value) and pds in str(info.value)


async def test_other_connection_errors_stay_retryable() -> None:
    connector = outbound_connector(allow_private_network=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            async with _get_blob(session, "http://127.0.0.1:9", "did:plc:x", "bafkrei"):
                pass
