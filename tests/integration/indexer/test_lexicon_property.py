"""Index fidelity (issue #10): the index holds exactly the network's valid records.

Records come from strategies derived from the lexicons themselves
(tests/support/lexicon_strategies.py), so a lexicon change changes what is tested:

- every record the lexicons accept, extremes included, goes through the write path
  (`index_records`) and `dump_records` gives it back equal, with its uri, cid and rev;
- every record with one constraint broken, for every constraint of every collection (one test
  case per constraint), is dead-lettered with a reason naming the broken field, and nothing of it
  is served.

One database serves a whole module (tables truncated between examples), and each example writes
its records in one batch. PLYR_LEXICON_EXAMPLES scales the budget (default: CI-sized).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core import db
from core.settings import CoreSettings
from indexer.records import RecordOp
from indexer.writer import dump_records
from indexer.writer.checks import STORED_COLLECTIONS
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.data_model import json_to_dag_cbor
from protocol.syntax import tid_from_micros
from tests.support.indexing import index_records
from tests.support.lexicon_strategies import Broken, LexiconStrategies, Target, json_round_trip

# Records at their size limits make hypothesis warn about long reprs; that size is the point.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

LEX = LexiconStrategies.load()
COLLECTIONS = LEX.record_types()
# Valid records: examples per collection (each a batch of up to 6 records). Invalid records:
# each constraint is its own test case, so a few examples each reach all of them.
EXAMPLES = int(os.environ.get("PLYR_LEXICON_EXAMPLES", "100"))
INVALID_EXAMPLES = max(5, EXAMPLES // 20)
BASE_MICROS = 1_767_225_600_000_000  # 2026-01-01: revs in the past, as a relay delivers them
# A CID for broken records: some cannot be encoded at all (integers past 64 bits).
BROKEN_CID = cid_to_str(cid_for_cbor(b"\xa0"))
_B32 = "abcdefghijklmnopqrstuvwxyz234567"

PROPERTY_SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures reproduce locally
    database=None,
    # No explain phase: it re-runs failing examples many times over, each a database round trip.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def test_the_generated_collections_are_the_indexed_ones() -> None:
    # Ours and the network plays' (lexicons/fm/teal/): every record type our lexicons define.
    assert set(COLLECTIONS) == set(STORED_COLLECTIONS)


@pytest.fixture(scope="module")
async def module_pool(pg_server_url: str, pg_template: str) -> AsyncIterator[asyncpg.Pool]:
    """One migrated database for the module: hundreds of hypothesis examples would otherwise
    each clone the template."""
    name = f"plyr_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        url = urlunsplit(urlsplit(pg_server_url)._replace(path="/" + name))
        pool = await db.create_pool(url, CoreSettings.from_env(), min_size=1, max_size=3)
        try:
            yield pool
        finally:
            await pool.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


_RESET_SQL: list[str] = []


async def reset(pool: asyncpg.Pool) -> None:
    """Empty every table, so each example sees only its own records. DELETE, not TRUNCATE: on
    a handful of rows it is many times faster, which matters when hypothesis shrinks (foreign
    keys all cascade, so the order does not matter)."""
    if not _RESET_SQL:
        tables = await pool.fetch(
            """SELECT quote_ident(tablename) AS t FROM pg_tables
               WHERE schemaname = current_schema() AND tablename NOT LIKE '%migration%'"""
        )
        _RESET_SQL.append("".join(f"DELETE FROM {r['t']};" for r in tables))
    await pool.execute(_RESET_SQL[0])


def actor(i: int) -> str:
    """A distinct valid did:plc per record: URIs never collide, whatever the rkeys."""
    ident = "".join(_B32[(i >> (5 * k)) & 31] for k in range(24))
    return "did:plc:" + ident


def rev(i: int) -> str:
    return tid_from_micros(BASE_MICROS + i)


def record_cid(record: dict[str, Any]) -> str:
    return cid_to_str(cid_for_cbor(json_to_dag_cbor(record)))


async def dead_letters(pool: asyncpg.Pool) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for r in await pool.fetch("SELECT uri, reason FROM dead_letters ORDER BY id"):
        found.setdefault(r["uri"], []).append(r["reason"])
    return found


async def dumped(pool: asyncpg.Pool, collection: str) -> dict[str, dict[str, Any]]:
    return {d["uri"]: d async for d in dump_records(pool, collection)}


@pytest.mark.parametrize("collection", COLLECTIONS)
@settings(PROPERTY_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
async def test_valid_records_are_indexed_whole(
    module_pool: asyncpg.Pool, collection: str, data: st.DataObject
) -> None:
    pool = module_pool
    batch = data.draw(st.lists(LEX.valid(collection), min_size=1, max_size=6), label="records")
    await reset(pool)
    ops = [
        RecordOp("create", actor(i), collection, rkey, rev(i), record_cid(record), record)
        for i, (record, rkey) in enumerate(batch)
    ]
    await index_records(pool, ops)
    served = await dumped(pool, collection)
    letters = await dead_letters(pool)
    for op in ops:
        got = served.get(op.uri)
        assert got is not None, (
            f"valid record not served: {op.uri}, dead letter: {letters.get(op.uri)}"
        )
        assert got["value"] == json_round_trip(op.record), f"{op.uri} served changed"
        assert (got["cid"], got["rev"]) == (op.cid, op.rev), op.uri
    assert not letters, f"valid records dead-lettered: {letters}"
    assert set(served) == {op.uri for op in ops}


ALL_TARGETS = [(c, t) for c in COLLECTIONS for t in LEX.targets(c)]


@pytest.mark.parametrize(("collection", "target"), ALL_TARGETS, ids=lambda x: str(x))
@settings(PROPERTY_SETTINGS, max_examples=INVALID_EXAMPLES)
@given(data=st.data())
async def test_invalid_records_are_dead_lettered_naming_the_field(
    module_pool: asyncpg.Pool, collection: str, target: Target, data: st.DataObject
) -> None:
    """Every constraint of every collection, one test case each: a record breaking only it is
    dead-lettered with a reason naming the field, and none of it is served."""
    pool = module_pool
    strategy = st.lists(LEX.broken(collection, target), min_size=1, max_size=3)
    batch: list[Broken] = data.draw(strategy, label="broken records")
    await reset(pool)
    ops = [
        RecordOp("create", actor(i), collection, b.rkey, rev(i), BROKEN_CID, b.record)
        for i, b in enumerate(batch)
    ]
    await index_records(pool, ops)
    served = await dumped(pool, collection)
    letters = await dead_letters(pool)
    for op, broken in zip(ops, batch, strict=True):
        assert op.uri not in served, f"invalid record served ({broken.path} broken)"
        reasons = letters.get(op.uri)
        assert reasons, f"invalid record not dead-lettered ({broken.path} broken)"
        assert any(name in reason for reason in reasons for name in broken.names), (
            f"dead letter does not name {broken.path}: {reasons}"
        )
