"""Repo discovery: relay listReposByCollection per collection (union, paged), PDS listRepos."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from core.errors import PlyrError
from indexer.backfill.discovery import Discovery, discover, read_dids_file
from indexer.backfill.http import PoliteClient

A = "did:plc:" + "a" * 24
B = "did:plc:" + "b" * 24
C = "did:plc:" + "c" * 24
D = "did:web:example.com"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, list[tuple[str, str]]]]:
    calls: list[tuple[str, str]] = []
    by_collection = {"fm.plyr.track": [A, B, C], "fm.plyr.like": [C, D], "fm.plyr.comment": []}

    async def by_coll(request: web.Request) -> web.Response:
        coll = request.query["collection"]
        cursor = request.query.get("cursor", "")
        calls.append((coll, cursor))
        dids = by_collection.get(coll, [])
        start = int(cursor or 0)
        page = dids[start : start + 2]
        body: dict = {"repos": [{"did": d} for d in page]}
        if start + 2 < len(dids):
            body["cursor"] = str(start + 2)
        return web.json_response(body)

    async def list_repos(request: web.Request) -> web.Response:
        cursor = request.query.get("cursor")
        calls.append(("listRepos", cursor or ""))
        if cursor is None:
            return web.json_response(
                {"repos": [{"did": A, "active": True}, {"did": B, "active": False}], "cursor": "x"}
            )
        # a server that keeps answering the same cursor must not loop forever
        return web.json_response({"repos": [{"did": C}, {"did": "not-a-did"}], "cursor": "x"})

    app = web.Application()
    app.router.add_get("/xrpc/com.atproto.sync.listReposByCollection", by_coll)
    app.router.add_get("/xrpc/com.atproto.sync.listRepos", list_repos)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", calls
    await runner.cleanup()


async def test_relay_union_over_collections_with_paging(fake) -> None:
    base, calls = fake
    async with aiohttp.ClientSession() as session:
        d = Discovery(relay=base, collections=("fm.plyr.track", "fm.plyr.like", "fm.plyr.comment"))
        found = await discover(PoliteClient(session), d)
    assert list(found) == [A, B, C, D]
    assert set(found.values()) == {"relay"}
    assert calls == [
        ("fm.plyr.track", ""),
        ("fm.plyr.track", "2"),
        ("fm.plyr.like", ""),
        ("fm.plyr.comment", ""),
    ]


async def test_pds_listing_skips_inactive_and_stops_on_repeated_cursor(fake) -> None:
    base, calls = fake
    async with aiohttp.ClientSession() as session:
        d = Discovery(pds=[base], dids=[D])
        found = await discover(PoliteClient(session), d)
    assert found == {D: "did", A: "pds", C: "pds"}
    assert d.skipped == 1
    assert [c for c in calls if c[0] == "listRepos"] == [("listRepos", ""), ("listRepos", "x")]


def test_dids_file(tmp_path: Path) -> None:
    f = tmp_path / "dids.txt"
    f.write_text(f"# repos\n{A}\n\n  {B}  # trailing comment\n")
    assert read_dids_file(f) == [A, B]
    f.write_text(f"{A}\nnope\n")
    with pytest.raises(PlyrError, match=r"dids.txt:2: not a DID"):
        read_dids_file(f)
    with pytest.raises(PlyrError, match="No such file"):
        read_dids_file(tmp_path / "absent.txt")


def test_progress_logs_plain_lines_when_not_on_a_terminal(caplog) -> None:
    import logging

    from indexer.backfill.progress import Progress

    caplog.set_level(logging.INFO, logger="plyr.backfill")
    progress = Progress(3, tty=False, interval=3600)
    progress.update(True, 10)
    assert not caplog.records  # the interval has not passed
    progress.update(False, 0)
    progress.update(True, 5)  # the last one always logs
    assert len(caplog.records) == 1
    rec = caplog.records[0]
    assert (rec.repos_done, rec.repos_total, rec.failed, rec.records) == (3, 3, 1, 15)
    assert rec.eta_s == 0
