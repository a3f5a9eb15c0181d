"""Which server a request reads from (appview/replicas.py), without a database: the servers
are stand-ins; tests/integration/appview/test_appview_replicas.py runs it on a real replica."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import make_mocked_request

from appview.freshness import Freshness
from appview.replicas import ReadRouter, RecentWriters, Target, claimed_issuer, recovery_conflict

FEED = "fm.plyr.feed.getLatestTracks"
QUEUE = "fm.plyr.viewer.putQueue"


def token(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256K'})}.{part(claims)}.c2ln"


def request(method: str = "GET", nsid: str = FEED, viewer: str | None = None) -> Any:
    headers = {"Authorization": "Bearer " + token({"iss": viewer})} if viewer else {}
    return make_mocked_request(method, f"/xrpc/{nsid}", headers=headers, match_info={"nsid": nsid})


def router(replicas: int = 2) -> ReadRouter:
    def target(name: str) -> Target:
        return Target(name, None, Freshness(None))  # type: ignore[arg-type]

    found = ReadRouter(target("primary"), [target(f"r{i}") for i in range(replicas)], primary_url="",
                       max_lag=5, read_your_writes=10, check_interval=1, primary_only={QUEUE})  # fmt: skip
    found.writers.listening = True
    return found


def test_reads_take_the_usable_replicas_in_turn() -> None:
    r = router()
    assert [r.choose(request()).name for _ in range(4)] == ["r0", "r1", "r0", "r1"]
    r.replicas[0].usable = False
    assert {r.choose(request()).name for _ in range(4)} == {"r1"}
    r.replicas[1].usable = False
    assert r.choose(request()).name == "primary"


def test_writes_private_routes_and_recent_writers_go_to_the_primary() -> None:
    r = router()
    assert r.choose(request("POST", QUEUE, "did:plc:fan")).name == "primary"
    assert r.choose(request("GET", QUEUE, "did:plc:fan")).name == "primary"
    assert r.choose(request(viewer="did:plc:fan")).name.startswith("r")
    r.writers.note("did:plc:fan")
    assert r.choose(request(viewer="did:plc:fan")).name == "primary"
    assert r.choose(request(viewer="did:plc:other")).name.startswith("r")
    assert r.choose(request()).name.startswith("r")


def test_the_read_your_writes_window_ends_and_a_deaf_listener_sends_viewers_to_the_primary() -> None:
    now = [100.0]
    writers = RecentWriters(10, clock=lambda: now[0])
    writers.listening = True
    writers.note("did:plc:fan")
    assert writers.recent("did:plc:fan")
    now[0] += 10.5
    assert not writers.recent("did:plc:fan")
    writers.listening = False  # a notification may have been missed
    assert writers.recent("did:plc:fan") and writers.recent("did:plc:anyone")


def test_claimed_issuer_reads_only_well_formed_tokens() -> None:
    assert claimed_issuer(request(viewer="did:plc:fan")) == "did:plc:fan"
    for header in ("", "Bearer x", "Bearer a.!!!.c", "Basic abc", "Bearer " + token({"iss": 5})):
        req = make_mocked_request("GET", "/xrpc/x", headers={"Authorization": header} if header else {})
        assert claimed_issuer(req) is None, header


def test_recovery_conflicts_are_told_apart() -> None:
    assert recovery_conflict(asyncpg.exceptions.SerializationError("conflict with recovery"))
    assert not recovery_conflict(asyncpg.exceptions.UndefinedTableError("no table"))
    assert not recovery_conflict(ValueError())
