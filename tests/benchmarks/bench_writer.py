"""The record writer's throughput into Postgres (a plain script, not collected by pytest).

    .venv/bin/python tests/benchmarks/bench_writer.py [writer|seed|all] [--plyr-frames N]
        [--batch N] [--seed-scale F] [--smoke]

- writer: the all-fm.plyr.* capture of bench_indexer.py, in the same run:
  - raw COPY: the rows the writer would store (made before the clock starts), COPYed in the
    same batches into tables without indexes, keys or counters (the baseline: what getting the
    bytes into Postgres costs on this machine, now);
  - writer alone: the decoded ops through `apply_batch`, one batch after another;
  - end to end: the capture through the consumer (decode, CID checks, batches) and the writer,
    `--no-verify` (signatures are a separate cost, see bench_indexer.py).
  Each into a fresh database; records/s and the ratio to the raw COPY.
- seed: `plyr seed-demo`'s records (through the writer) at `--seed-scale` of the default size
  (100k tracks, 10k artists, 1M likes, 200k comments; no plays, which are the AppView's).

Postgres: PLYR_TEST_DATABASE_URL or DATABASE_URL (scratch databases are created and dropped),
else an embedded one. `--smoke`: tiny data, to check that the benchmark works.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_indexer import Shape, _e2e, load_frames, plyr_capture  # noqa: E402

from tests.support.bench_setup import ScratchDatabase, isolate, server_url  # noqa: E402


def decoded_ops(path: Path) -> list[Any]:
    """The record ops of the capture, as the consumer hands them to the writer."""
    from indexer.frames import CommitEvent, FrameDecoder
    from indexer.verify import Verifier

    decoder, verifier = FrameDecoder(), Verifier(None, verify_signatures=False)

    async def run() -> list[Any]:
        ops: list[Any] = []
        for raw in load_frames(path):
            ev = decoder.decode(raw)
            if type(ev) is CommitEvent:
                ops.extend(await verifier.commit_ops(ev))
        return ops

    return asyncio.run(run())


def _batches(ops: list[Any], size: int) -> list[list[Any]]:
    return [ops[i : i + size] for i in range(0, len(ops), size)]


async def _writer(url: str, ops: list[Any], batch: int) -> float:
    from core import db
    from indexer.writer import apply_batch, default_lexicons

    lexicons = default_lexicons()
    conn = await db.connect(url)
    try:
        t0 = time.perf_counter()
        for chunk in _batches(ops, batch):
            await apply_batch(conn, chunk, lexicons=lexicons, source="bench")
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def _raw_copy(url: str, ops: list[Any], batch: int) -> float:
    """COPY the writer's rows (same values, same batches) into index-free tables."""
    from core import db
    from indexer.writer import checked_rows, default_lexicons, statements

    lexicons = default_lexicons()
    conn = await db.connect(url)
    # COPY is binary: jsonb's binary form is a version byte and the JSON text.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="binary",
        encoder=lambda v: b"\x01" + orjson.dumps(v), decoder=lambda b: orjson.loads(b[1:]),
    )  # fmt: skip
    try:
        columns: dict[str, list[str]] = {}
        for collection, table in statements.TABLE.items():
            sql = getattr(statements, f"UPSERT_{table.upper()}")
            names = re.search(r"INSERT INTO \w+ \(([^)]*)\)", sql)
            assert names is not None
            cols = [c.strip() for c in names[1].split(",") if c.strip() != "sort_at"]
            select = ", ".join("labels::text AS labels" if c == "labels" else c for c in cols)
            await conn.execute(f"CREATE TABLE raw_{table} AS SELECT {select} FROM {table} WITH NO DATA")
            columns[collection] = cols
        batches: list[dict[str, list[Any]]] = []  # the rows are made before the clock starts
        for chunk in _batches(ops, batch):
            rows: dict[str, list[Any]] = {c: [] for c in columns}
            for op in chunk:
                problem, made = checked_rows(op, lexicons)
                if problem is None and made is not None:
                    rows[op.collection].append(made[0] if op.collection.endswith(".list") else made)
            batches.append(rows)
        t0 = time.perf_counter()
        for rows in batches:
            async with conn.transaction():
                for collection, records in rows.items():
                    if records:
                        await conn.copy_records_to_table(
                            f"raw_{statements.TABLE[collection]}", records=records, columns=columns[collection]
                        )
        return time.perf_counter() - t0
    finally:
        await conn.close()


def bench_writer(n_frames: int, batch: int, server: str, shape: Shape) -> dict[str, float]:
    import uvloop

    path = plyr_capture(n_frames, shape)
    ops = decoded_ops(path)
    n = len(ops)
    print(f"capture: {n_frames} frames, {n} record ops; batches of {batch}")
    out: dict[str, float] = {}
    with ScratchDatabase(server) as url:
        out["raw"] = n / uvloop.run(_raw_copy(url, ops, batch))
    with ScratchDatabase(server) as url:
        out["writer"] = n / uvloop.run(_writer(url, ops, batch))
    os.environ["BATCH"] = str(batch)  # bench_indexer._e2e's batch size
    with ScratchDatabase(server) as url:
        written, elapsed, _rows = uvloop.run(_e2e(path, url, False, None))
    out["e2e"] = written / elapsed
    raw = out["raw"]
    print(f"raw COPY of the same rows into index-free tables:   {raw:>10,.0f} records/s  (baseline)")
    print(f"writer alone (apply_batch, one batch at a time):    {out['writer']:>10,.0f} records/s  ({out['writer'] / raw:.0%} of raw COPY)")
    print(f"end to end, capture -> consumer -> writer:          {out['e2e']:>10,.0f} records/s  ({out['e2e'] / raw:.0%} of raw COPY)")
    return out


async def _seed(url: str, scale: float) -> tuple[float, int]:
    from appview.seed import SeedSize, seed
    from core import db

    size = SeedSize(
        tracks=max(1, int(100_000 * scale)), artists=max(1, int(10_000 * scale)),
        likes=int(1_000_000 * scale), comments=int(200_000 * scale), plays=0,
    )  # fmt: skip
    conn = await db.connect(url)
    try:
        t0 = time.perf_counter()
        await seed(conn, size)
        elapsed = time.perf_counter() - t0
    finally:
        await conn.close()
    return elapsed, size.tracks + size.artists + size.likes + size.comments


def bench_seed(scale: float, server: str) -> float:
    with ScratchDatabase(server) as url:
        elapsed, records = asyncio.run(_seed(url, scale))
    print(f"seed-demo records at scale {scale:g} (no plays):     {elapsed:>10.1f} s  ({records / elapsed:,.0f} records/s)")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="writer", choices=["writer", "seed", "all"])
    parser.add_argument("--plyr-frames", type=int, default=30_000, help="frames in the all-plyr capture")
    parser.add_argument("--batch", type=int, default=1000, help="ops per writer transaction")
    parser.add_argument("--seed-scale", type=float, default=0.1, help="fraction of seed-demo's default size")
    parser.add_argument("--smoke", action="store_true", help="tiny data: checks that it works")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("PLYR_BENCH_DIR", "/tmp/plyr-bench"))
    server = server_url()
    scratch = isolate()
    shape = Shape(cache_dir)
    if args.smoke:
        args.what, args.plyr_frames, args.batch, args.seed_scale = "all", 300, 100, 0.002
        shape = Shape(scratch / "captures", repos=20, prefill=10, plyr_every=50, plyr_repos=20)
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    if args.what in ("writer", "all"):
        bench_writer(args.plyr_frames, args.batch, server, shape)
    if args.what in ("seed", "all"):
        bench_seed(args.seed_scale, server)


if __name__ == "__main__":
    main()
