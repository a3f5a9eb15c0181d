"""The label subscriber consuming our own labeler (appview/labeler/): the DID document the
AppView serves, the frames and signatures its subscribeLabels sends, its negations, and an
account takedown by it as a moderation labeler, all in one database (as `plyr up` runs them)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appview.app import build_app
from appview.labeler.settings import LabelerSettings
from appview.labeler.store import LabelDraft, LabelSigner, emit_labels
from indexer.labels.subscriber import Subscriber
from protocol.crypto import PrivateKey
from protocol.identity import DidDocument, IdentityResolver, parse_did_document
from tests.integration.appview.conftest import SERVICE_DID, appview_settings
from tests.integration.labels.conftest import make_subscriber, running, until, wait_cursor
from tests.integration.labels.test_label_takedowns import ALICE, actor, counters, seed
from tests.support.identity import FakeResolver


@dataclasses.dataclass
class OwnLabeler:
    client: TestClient
    signer: LabelSigner
    did: str = SERVICE_DID

    async def emit(self, pool: asyncpg.Pool, *drafts: LabelDraft) -> None:
        async with pool.acquire() as conn:
            await emit_labels(conn, self.signer, list(drafts))


class ServedDocument(FakeResolver):
    """The AppView's own /.well-known/did.json, its public endpoint pointed at the test server
    (did:web:appview.test names a host that does not exist here)."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client
        self.fresh_fetches = 0

    async def resolve_did(self, did: str, *, fresh: bool = False) -> DidDocument:
        self.fresh_fetches += fresh
        raw = await (await self.client.get("/.well-known/did.json")).json()
        for service in raw["service"]:
            service["serviceEndpoint"] = str(self.client.make_url("")).rstrip("/")
        return parse_did_document(did, raw)


@pytest.fixture
async def own(pool: asyncpg.Pool, database_url: str, resolver: IdentityResolver) -> AsyncIterator[OwnLabeler]:
    key = PrivateKey.generate("k256")
    app = build_app(pool, appview_settings(labeler=LabelerSettings(key=key)), resolver=resolver,
                    primary_url=database_url)  # fmt: skip
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield OwnLabeler(client, LabelSigner(SERVICE_DID, key))
    await client.close()


def subscriber(pool: asyncpg.Pool, session: aiohttp.ClientSession, own: OwnLabeler) -> Subscriber:
    served = ServedDocument(own.client)
    return make_subscriber(pool, session, served, own, moderation=frozenset({own.did}))  # type: ignore[arg-type]


async def test_our_labels_verify_and_apply(pool: asyncpg.Pool, session: aiohttp.ClientSession, own: OwnLabeler) -> None:
    await seed(pool)
    shown = await counters(pool)
    track = f"at://{ALICE}/fm.plyr.track/3laaaaaaaaaa2"
    await own.emit(pool, LabelDraft(track, "!hide"), LabelDraft(ALICE, "!takedown"))
    sub = subscriber(pool, session, own)
    async with running(sub):
        async def applied() -> bool:
            return await pool.fetchval("SELECT count(*) FROM labels WHERE src = $1", own.did) == 2

        await until(applied, "our labeler's labels to be stored")
        assert await pool.fetchval("SELECT count(*) FROM label_rejects") == 0
        assert (await actor(pool, ALICE))["visible"] is False  # type: ignore[index]
        assert await counters(pool) != shown
        seq = await pool.fetchval("SELECT cursor FROM label_cursors WHERE src = $1", own.did)

        # Restore: the negation reaches us live and the account is back, counts and all.
        await own.emit(pool, LabelDraft(ALICE, "!takedown", neg=True))
        await until(lambda: _visible(pool), "the takedown's negation to show the account again")
    assert await counters(pool) == shown
    row = await pool.fetchrow("SELECT neg, seq FROM labels WHERE uri = $1 AND src = $2", ALICE, own.did)
    assert row["neg"] is True and row["seq"] > seq
    await wait_cursor(pool, own.did, row["seq"])


async def _visible(pool: asyncpg.Pool) -> bool:
    row = await actor(pool, ALICE)
    return row is not None and row["visible"] is True
