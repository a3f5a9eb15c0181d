"""Issue #11, indexer side: a relay or PDS could stop the indexer with one frame.

A `#info` frame other than OutdatedCursor was logged with `extra={"name": ...}`, a reserved
LogRecord attribute: logging raised KeyError and the indexer died (replay and live). Fixed at the
mechanism in core/logging.py (plyr loggers keep a colliding extra key under a free spelling,
`name` -> `name_`, instead of raising) and at the call site (`info_name`). Corrupt capture files
are in test_capture_hostile.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from indexer.service import run_indexer
from indexer.settings import IndexerSettings
from indexer.sources import Backoff, CaptureSource, RelaySource
from tests.integration.indexer.firehose_server import FirehoseServer
from tests.support.frames import (
    MiniRepo,
    account_frame,
    commit_frame,
    error_frame,
    frame,
    identity_frame,
    info_frame,
    sync_frame,
    track_record,
    write_capture,
)
from tests.support.rkeys import tid_key

ALICE = "did:plc:alice234567abcdefghijklm"
SETTINGS = IndexerSettings(
    source="relay", relay_url="ws://127.0.0.1:1", jetstream_url="ws://127.0.0.1:1", verify=False,
    metrics_port=0, batch_size=50, batch_delay=0.05, standby_poll=0.05,
)  # fmt: skip
INFO_NAMES = ["OutdatedCursor", "SomethingNew", "", "name", "msg", "x" * 300]


# ---- 1. structured logging cannot collide with LogRecord attributes ------------------------------


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _capturing(name: str) -> tuple[logging.Logger, _Keep]:
    import core.logging  # noqa: F401 - installs the safe logger class

    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    keep = _Keep()
    logger.handlers[:] = [keep]
    return logger, keep


def test_reserved_extra_keys_are_kept_not_raised() -> None:
    logger, keep = _capturing("plyr.hostile.reserved")
    extra = {"name": "FutureThing", "msg": "from the relay", "args": (1, 2), "message": "m",
             "asctime": "a", "levelname": "boom", "detail": "d"}  # fmt: skip
    logger.info("relay info", extra=extra)  # KeyError before the fix
    (record,) = keep.records
    # The record's own attributes are untouched...
    assert record.name == "plyr.hostile.reserved" and record.getMessage() == "relay info"
    assert record.levelname == "INFO"
    # ...and every value given is kept, under a key that does not collide.
    fields = record.__dict__
    assert fields["name_"] == "FutureThing" and fields["msg_"] == "from the relay"
    assert fields["args_"] == (1, 2) and fields["message_"] == "m" and fields["asctime_"] == "a"
    assert fields["levelname_"] == "boom" and fields["detail"] == "d"


def test_renamed_keys_do_not_collide_with_each_other() -> None:
    logger, keep = _capturing("plyr.hostile.twice")
    logger.warning("x", extra={"name_": "given", "name": "renamed"})
    (record,) = keep.records
    values = {k: v for k, v in record.__dict__.items() if k.startswith("name_")}
    assert sorted(values.values()) == ["given", "renamed"]
    assert record.__dict__["name_"] == "given"


def test_formatters_keep_renamed_fields_and_their_own() -> None:
    from core.logging import JsonFormatter, TextFormatter

    logger, keep = _capturing("plyr.hostile.format")
    logger.error("boom", extra={"name": "N", "msg": "M", "level": "L", "logger": "G", "ts": 1})
    (record,) = keep.records
    payload = json.loads(JsonFormatter().format(record))
    # An extra field never overwrites the line's own fields.
    assert payload["logger"] == "plyr.hostile.format" and payload["msg"] == "boom"
    assert payload["level"] == "error" and payload["ts"] != 1
    assert payload["name_"] == "N" and payload["msg_"] == "M"
    assert payload["level_"] == "L" and payload["logger_"] == "G" and payload["ts_"] == 1
    text = TextFormatter().format(record)
    assert "name_=N" in text and "msg_=M" in text and "plyr.hostile.format: boom" in text


def test_plyr_loggers_made_before_the_install_are_made_safe() -> None:
    import core.logging as plyr_logging

    saved = logging.getLoggerClass()
    logging.setLoggerClass(logging.Logger)
    try:
        early = logging.getLogger("plyr.hostile.early")  # as if imported before core.logging
    finally:
        logging.setLoggerClass(saved)
    plyr_logging.install()
    early.setLevel(logging.DEBUG)
    early.propagate = False
    keep = _Keep()
    early.handlers[:] = [keep]
    early.info("x", extra={"name": "n"})
    assert keep.records[0].__dict__["name_"] == "n"
    # Loggers made afterwards are safe too.
    later = logging.getLogger("plyr.hostile.later")
    later.propagate = False
    later.handlers[:] = [keep]
    later.warning("y", extra={"args": "a"})
    assert keep.records[1].__dict__["args_"] == "a"


# ---- 1. every firehose message type through the real consumer ------------------------------------


def every_message_type(repo: MiniRepo) -> tuple[list[tuple[int, bytes]], int]:
    """(seq to publish it under, frame) of every message type a relay could send, ending with a
    valid commit; and the seq of that last commit."""
    first = repo.commit([("create", "fm.plyr.track", tid_key("first"), track_record("First"))])
    frames: list[tuple[int, bytes]] = [
        (1, commit_frame(1, first)),
        (2, identity_frame(2, ALICE, "alice.test")),
        (3, account_frame(3, ALICE, True)),
        (4, sync_frame(4, first)),
    ]
    for name in INFO_NAMES:
        frames.append((4, info_frame(name, f"about {name[:10]}")))
    frames += [
        (4, info_frame("NoMessage")),
        (4, frame({"op": 1, "t": "#info"}, {"name": 7, "message": b"bytes"})),
        (4, frame({"op": 1, "t": "#info"}, {})),
        (5, frame({"op": 1, "t": "#labels"}, {"seq": 5, "labels": []})),
        (6, frame({"op": 1, "t": "#mystery"}, {"seq": 6, "did": ALICE})),
        (7, frame({"op": 1}, {"seq": 7})),  # no type at all
        (7, error_frame("ConsumerTooSlow", "slow")),
        (7, error_frame("SomethingElse", "else")),
        (7, error_frame("name")),
        (7, frame({"op": -1}, {})),
        (7, frame({"op": -1}, {"error": 1, "message": ["x"]})),
        (7, frame({"op": 2, "t": "#commit"}, {"seq": 7})),  # an op nobody defined
    ]
    last = repo.commit([("create", "fm.plyr.track", tid_key("last"), track_record("Last"))])
    frames.append((10, commit_frame(10, last)))
    return frames, 10


async def test_every_message_type_replayed_never_stops_the_indexer(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # At INFO, as `plyr index` logs: every log call builds its record (the bug was there).
    caplog.set_level(logging.INFO, logger="plyr")
    frames, last = every_message_type(MiniRepo(ALICE))
    capture = write_capture(tmp_path / "types.bin", [f for _s, f in frames])
    source = CaptureSource(capture)
    await run_indexer(database_url, pool, SETTINGS, source, verify=False, resolve_handles=False)
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", source.name) == last
    titles = sorted(r["title"] for r in await pool.fetch("SELECT title FROM tracks"))
    assert titles == ["First", "Last"]
    infos = [r for r in caplog.records if r.getMessage() == "relay info"]
    # Every #info frame was logged with the name the relay gave (`?`: empty, missing, not text).
    want = (set(INFO_NAMES) | {"NoMessage", "?"}) - {"OutdatedCursor", ""}
    assert {r.__dict__["info_name"] for r in infos} == want


async def test_every_message_type_live_never_stops_the_indexer(
    pool: asyncpg.Pool, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plyr")
    frames, last = every_message_type(MiniRepo(ALICE))
    server = FirehoseServer()
    await server.start()
    for seq, f in frames:
        server.publish(seq, f)
    source = RelaySource(server.url, backoff=Backoff(0.01, 0.05))
    task = asyncio.create_task(
        run_indexer(database_url, pool, SETTINGS, source, verify=False, resolve_handles=False)
    )
    try:
        await _eventually(
            lambda: _cursor_is(pool, source.name, last), task, what=f"cursor at {last}"
        )
        assert not task.done(), "the live indexer ended"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 2


async def _cursor_is(pool: asyncpg.Pool, source: str, seq: int) -> bool:
    return await pool.fetchval("SELECT seq FROM cursors WHERE source = $1", source) == seq


async def _eventually(
    check: Callable[[], Any], task: asyncio.Task[Any], *, what: str, limit: float = 20.0
) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await check():
        if task.done():
            task.result()  # the indexer's own failure is the finding
            raise AssertionError(f"the indexer ended before {what}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {limit}s: {what}")
        await asyncio.sleep(0.05)
