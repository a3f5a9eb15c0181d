"""The benchmarks' labels (tests/support/bench_labels.py): rows as the label subscriber stores
them, the spread promised, and the database left as it was, also when the block fails."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from protocol.labels import parse_label
from tests.support import bench_labels
from tests.support.bench_setup import seed_demo


def test_drawn_labels_are_valid_distinct_and_spread() -> None:
    tracks = [(f"at://did:plc:a{i % 40:023d}/fm.plyr.track/t{i}", f"bafyrei{i:052d}") for i in range(2000)]
    accounts = [f"did:plc:a{i:023d}" for i in range(40)]
    comments = [f"at://did:plc:a{i % 40:023d}/fm.plyr.comment/c{i}" for i in range(500)]
    spare = {uri for uri, _ in tracks[:1000]}
    rows, tally = bench_labels.draw_labels(3000, tracks, accounts, comments, spare, random.Random(1))
    assert len(rows) == 3000 and [r[9] for r in rows] == list(range(1, 3001))
    assert len({(r[0], r[2]) for r in rows}) == 3000  # the table's key: (uri, src, val)
    now = datetime.now(UTC)
    for uri, src, val, cid, neg, cts, exp, sig, view, _seq in rows:
        label = parse_label(orjson.loads(str(view)), encoding="json")
        assert (label.uri, label.src, label.val, label.cid, label.neg) == (uri, src, val, cid, neg)
        assert src == bench_labels.LABELER_DID and isinstance(sig, bytes) and len(sig) == 64
        assert datetime.fromisoformat(label.cts.replace("Z", "+00:00")) == cts and cts < now  # type: ignore[operator]
        assert (label.exp is None) == (exp is None)
        if val == "!takedown":
            assert uri not in spare and "/fm.plyr.track/" in uri
    assert 2550 < tally["track"] < 2850 and 10 < tally["takedown"] < 60
    assert 80 < tally["account"] and 60 < tally["comment"]
    assert 60 < tally["negated"] < 200 and 40 < tally["expired"] < 150


async def test_labels_are_inserted_for_the_block_and_deleted_after_it(database_url: str) -> None:
    await seed_demo(database_url, tracks=60, artists=6, likes=300, comments=60, plays=60)
    conn = await asyncpg.connect(database_url)
    try:
        # Someone else's label stays whatever the benchmark does.
        await conn.execute(
            "INSERT INTO labels (uri, src, val, cts, sig, view, seq) VALUES"
            " ('did:plc:x', 'did:plc:other', 'spam', now(), '\\x00', '{}', 1)"
        )
        spare = {r[0] for r in await conn.fetch("SELECT uri FROM tracks LIMIT 30")}

        def run_block(fail: bool) -> bench_labels.Inserted:
            with bench_labels.labelled(database_url, 150, spare, seed=3) as inserted:
                stored, spared_taken_down = asyncio.run(_count(database_url, spare))
                assert stored == 150 and spared_taken_down == 0
                if fail:
                    raise RuntimeError("the measurement broke")
            return inserted

        inserted = await asyncio.to_thread(run_block, False)
        assert inserted.count == 150 and inserted.active_takedowns >= 1
        assert "150 inserted" in inserted.describe()
        with pytest.raises(RuntimeError):
            await asyncio.to_thread(run_block, True)
        assert await conn.fetchval("SELECT count(*) FROM labels") == 1  # only the other labeler's
    finally:
        await conn.close()


async def _count(url: str, spare: set[str]) -> tuple[int, int]:
    """The benchmark labeler's labels, and its takedowns of the tracks it must spare."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE val = '!takedown' AND uri = ANY($2)) FROM labels"
            " WHERE src = $1", bench_labels.LABELER_DID, list(spare))  # fmt: skip
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await conn.close()
