"""Fixtures for AppView tests: a PLC directory on loopback, accounts with signing keys, an
index filled through the indexer's own write path, and the AppView under an aiohttp client."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from appview.app import build_app
from appview.auth import SERVICE_FRAGMENT
from appview.settings import AppviewSettings
from indexer.records import RecordOp
from indexer.writer import AccountChange, apply_account, update_handle
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.crypto import PrivateKey
from protocol.identity import IdentityResolver
from protocol.service_auth import create_service_jwt
from protocol.syntax import TidClock
from tests.support.identity import local_resolver
from tests.support.indexing import index_records

SERVICE_DID = "did:web:appview.test"
PUBLIC_URL = "http://appview.test"


def appview_settings(**overrides: Any) -> AppviewSettings:
    base = AppviewSettings(
        host="127.0.0.1",
        port=0,
        public_url=PUBLIC_URL,
        service_did=SERVICE_DID,
        cors_origins=("https://plyr.test",),
        max_body_bytes=16 * 1024,
        microcache_seconds=0,
        top_cache_seconds=0,
        stats_cache_seconds=0,
        freshness_interval=0.05,
        play_dedupe_seconds=1800,
        public_max_age=5,
        # Off unless a test asks for it: most tests read right after writing and expect to see it
        # (production's default is 1 s; test_appview_viewcache.py covers the cache itself).
        view_cache_seconds=0,
    )
    return dataclasses.replace(base, **overrides)


def make_cid(seed: str) -> str:
    return cid_to_str(cid_for_cbor(seed.encode()))


@dataclasses.dataclass
class Account:
    did: str
    handle: str
    key: PrivateKey

    def token(self, lxm: str | None, *, aud: str = SERVICE_DID + SERVICE_FRAGMENT, exp_in: int = 60,
              now: float | None = None, key: PrivateKey | None = None) -> str:
        return create_service_jwt(key or self.key, iss=self.did, aud=aud, lxm=lxm, exp_in=exp_in, now=now)

    def auth(self, lxm: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token(lxm, **kw)}


class Plc:
    """DID documents served over HTTP on 127.0.0.1, as a PLC directory serves them."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.url = ""

    def register(self, name: str) -> Account:
        did = "did:plc:" + hashlib.sha256(name.encode()).hexdigest().translate(
            str.maketrans("0189", "wxyz"))[:24]
        handle = f"{name}.plyr.test"
        key = PrivateKey.generate("k256" if len(self.docs) % 2 == 0 else "p256")
        self.docs[did] = {
            "id": did,
            "alsoKnownAs": [f"at://{handle}"],
            "verificationMethod": [{
                "id": did + "#atproto", "type": "Multikey", "controller": did,
                "publicKeyMultibase": key.public_key().multibase(),
            }],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                         "serviceEndpoint": "https://pds.plyr.test"}],
        }
        return Account(did, handle, key)

    async def handler(self, request: web.Request) -> web.Response:
        doc = self.docs.get(request.match_info["did"])
        if doc is None:
            return web.Response(status=404)
        return web.Response(body=orjson.dumps(doc), content_type="application/json")


@pytest.fixture
async def plc() -> AsyncIterator[Plc]:
    directory = Plc()
    app = web.Application()
    app.router.add_get("/{did}", directory.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    directory.url = f"http://127.0.0.1:{port}"
    yield directory
    await runner.cleanup()


class World:
    """Records written through indexer.writer (the indexer's own write path)."""

    def __init__(self, pool: asyncpg.Pool, plc: Plc) -> None:
        self.pool = pool
        self.plc = plc
        self.clock = TidClock()
        self.base = datetime(2026, 1, 1, tzinfo=UTC)
        self.n = 0

    async def account(self, name: str, *, display_name: str | None = None, avatar: str | None = None) -> Account:
        acct = self.plc.register(name)
        await self.write(RecordOp("create", acct.did, "fm.plyr.actor.profile", "self", self.clock.next(),
                                  make_cid("p" + name), {"$type": "fm.plyr.actor.profile",
                                                         "bio": f"bio of {name}", "createdAt": self._time(0)}))
        await update_handle(self.pool, acct.did, acct.handle)
        await self.pool.execute("UPDATE actors SET display_name = $2, avatar_url = $3 WHERE did = $1",
                                acct.did, display_name, avatar)
        return acct

    def _time(self, minutes: float) -> str:
        return (self.base + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

    async def write(self, *ops: RecordOp) -> None:
        result = await index_records(self.pool, list(ops))
        assert result.invalid == 0 and result.applied == len(ops), result

    async def track(self, author: Account, title: str, *, minutes: float | None = None, **fields: Any) -> str:
        self.n += 1
        rkey = self.clock.next()
        record = {"$type": "fm.plyr.track", "title": title, "artist": fields.pop("artist", author.handle),
                  "fileType": "mp3", "createdAt": self._time(self.n if minutes is None else minutes),
                  "audioUrl": f"https://cdn.plyr.test/{rkey}.mp3", **fields}
        op = RecordOp("create", author.did, "fm.plyr.track", rkey, self.clock.next(), make_cid(rkey), record)
        await self.write(op)
        return op.uri

    async def like(self, who: Account, track_uri: str, *, minutes: float = 0, when: datetime | None = None) -> str:
        rkey = self.clock.next()
        created = (when or self.base + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        op = RecordOp("create", who.did, "fm.plyr.like", rkey, self.clock.next(), make_cid(rkey),
                      {"$type": "fm.plyr.like", "subject": {"uri": track_uri, "cid": make_cid("s")},
                       "createdAt": created})
        await self.write(op)
        return op.uri

    async def comment(self, who: Account, track_uri: str, text: str, timestamp_ms: int) -> str:
        rkey = self.clock.next()
        op = RecordOp("create", who.did, "fm.plyr.comment", rkey, self.clock.next(), make_cid(rkey),
                      {"$type": "fm.plyr.comment", "subject": {"uri": track_uri, "cid": make_cid("s")},
                       "text": text, "timestampMs": timestamp_ms, "createdAt": self._time(100)})
        await self.write(op)
        return op.uri

    async def playlist(self, who: Account, name: str, items: list[str], list_type: str = "playlist") -> str:
        rkey = self.clock.next()
        op = RecordOp("create", who.did, "fm.plyr.list", rkey, self.clock.next(), make_cid(rkey),
                      {"$type": "fm.plyr.list", "name": name, "listType": list_type,
                       "items": [{"subject": {"uri": u, "cid": make_cid("s")}} for u in items],
                       "createdAt": self._time(50)})
        await self.write(op)
        return op.uri

    async def hide(self, who: Account) -> None:
        async with self.pool.acquire() as conn:
            await apply_account(conn, AccountChange(did=who.did, active=False, status="takendown"))


@pytest.fixture
async def world(pool: asyncpg.Pool, plc: Plc) -> World:
    return World(pool, plc)


AppFactory = Callable[..., Any]


@pytest.fixture
async def make_client(pool: asyncpg.Pool, plc: Plc) -> AsyncIterator[AppFactory]:
    """make_client(**settings_overrides, pool=...) -> a started aiohttp TestClient."""
    clients: list[TestClient] = []
    resolvers: list[IdentityResolver] = []

    async def factory(*, app_pool: Any = None, **overrides: Any) -> TestClient:
        resolver = local_resolver(plc.url)
        resolvers.append(resolver)
        app = build_app(app_pool or pool, appview_settings(**overrides), resolver=resolver, check_output=True)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
    for resolver in resolvers:
        await resolver.close()


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient:
    return await make_client()
