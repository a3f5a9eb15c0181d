"""Fixtures of the moderation tests: the AppView tests' directory, accounts and index (from
tests/integration/appview), an AppView with moderators and our labeler's key; helpers for
XRPC calls with service auth and for our labels read back from `own_labels`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appview.app import build_app
from appview.labeler.store import LabelSigner
from protocol.crypto import PrivateKey
from protocol.identity import IdentityResolver
from protocol.labels import Label
from tests.integration.appview.conftest import (  # noqa: F401  (plc, world: fixtures, used by name)
    SERVICE_DID,
    Plc,
    appview_settings,
    plc,
    world,
)
from tests.support.identity import local_resolver

NS = "fm.plyr.moderation."
REPORT = "com.atproto.moderation.createReport"
SPAM = "com.atproto.moderation.defs#reasonSpam"
RUDE = "com.atproto.moderation.defs#reasonRude"

ModerationApp = Callable[..., Any]


@pytest.fixture
def signer() -> LabelSigner:
    return LabelSigner(did=SERVICE_DID, key=PrivateKey.generate("k256"))


@pytest.fixture
async def moderation_app(
    pool: asyncpg.Pool, plc: Plc, signer: LabelSigner  # noqa: F811
) -> AsyncIterator[ModerationApp]:
    """moderation_app(moderators=[...], with_signer=True, **settings) -> a started TestClient."""
    clients: list[TestClient] = []
    resolvers: list[IdentityResolver] = []

    async def factory(*, moderators: tuple[str, ...] = (), with_signer: bool = True, **overrides: Any) -> TestClient:
        resolver = local_resolver(plc.url)
        resolvers.append(resolver)
        settings = appview_settings(moderators=tuple(moderators), **overrides)
        app = build_app(pool, settings, resolver=resolver, check_output=True,
                        label_signer=signer if with_signer else None)  # fmt: skip
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
    for resolver in resolvers:
        await resolver.close()


async def call(
    client: TestClient, who: Any, nsid: str, body: Any = None, *, params: dict[str, Any] | None = None,
    status: int = 200, error: str | None = None, headers: dict[str, str] | None = None, **auth: Any,
) -> dict[str, Any]:
    """One XRPC call with `who`'s service-auth token for it (None: anonymous; `headers`: these
    instead; `auth`: Account.auth's options); checks the status."""
    if headers is None:
        headers = who.auth(nsid, **auth) if who is not None else {}
    if body is None:
        resp = await client.get("/xrpc/" + nsid, params=params or {}, headers=headers)
    else:
        resp = await client.post("/xrpc/" + nsid, json=body, headers=headers)
    data: dict[str, Any] = await resp.json()
    assert resp.status == status, (nsid, resp.status, data)
    if status >= 400:
        assert set(data) == {"error", "message"} and data["message"], data
        if error is not None:
            assert data["error"] == error, data
    return data


def account_ref(did: str) -> dict[str, str]:
    return {"$type": "com.atproto.admin.defs#repoRef", "did": did}


def record_ref(uri: str, cid: str) -> dict[str, str]:
    return {"$type": "com.atproto.repo.strongRef", "uri": uri, "cid": cid}


async def own_labels(pool: asyncpg.Pool, uri: str) -> list[Label]:
    """Our labels on `uri`, oldest first, as signed."""
    rows = await pool.fetch("SELECT * FROM own_labels WHERE uri = $1 ORDER BY seq", uri)
    return [Label(src=SERVICE_DID, uri=r["uri"], val=r["val"], cts=r["cts"], cid=r["cid"], neg=r["neg"],
                  exp=r["exp"], sig=bytes(r["sig"])) for r in rows]  # fmt: skip
