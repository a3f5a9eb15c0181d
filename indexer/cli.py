"""Indexer commands: `plyr index`, `plyr capture`, `plyr deadletters`, `plyr records dump`.

The event loop and everything a command runs are imported when it runs: `plyr --help` imports
this module.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
import orjson

from core.cli import load_settings, run_async
from core.errors import PlyrError
from core.settings_spec import option
from indexer.settings import IndexerSettings

log = logging.getLogger("plyr.indexer")


async def _until_signalled(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro`; SIGINT/SIGTERM cancel it cleanly (open batches are not written: the cursor
    only covers committed rows, so the next start resumes exactly there)."""
    import asyncio
    import signal

    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        log.info("stopped")
        return None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@click.command("index")
@option(IndexerSettings, "source", "--source", dest="kind")
@click.option("--url", default=None, help="Relay/PDS or Jetstream URL (default: PLYR_RELAY_URL / PLYR_JETSTREAM_URL).")
@click.option("--replay", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Index a capture file (.zst = zstd) and exit when it is committed.")
@click.option("--no-verify", is_flag=True, help="Do not check commit signatures (CIDs are still checked).")
@click.option("--cursor", type=int, default=None, help="Start after this seq instead of the stored cursor.")
def index_command(kind: str | None, url: str | None, replay: Path | None, no_verify: bool, cursor: int | None) -> None:
    """Follow the firehose (or replay a capture) into the database."""
    from core.runtime import open_runtime
    from indexer.service import make_source, run_indexer

    core_settings = load_settings()
    settings = IndexerSettings.from_env(overrides={"source": kind})
    if replay is not None and not replay.is_file():
        raise PlyrError(f"{replay}: no such capture file")
    source = make_source(settings, url=url, replay=replay)
    verify = settings.verify and not no_verify

    async def _main() -> None:
        runner = None
        if source.live and settings.metrics_port:
            from core.metrics import start_metrics_server  # aiohttp's server: live runs only

            try:
                runner = await start_metrics_server(core_settings.http_host, settings.metrics_port)
            except OSError as exc:
                log.warning("metrics server not started", extra={"port": settings.metrics_port, "error": str(exc)})
        try:
            async with open_runtime(core_settings) as rt:
                consumers: list[Any] = []
                started, cpu_started = time.monotonic(), time.process_time()
                indexing = run_indexer(
                    rt.database_url, rt.pool, settings, source, verify=verify, start_cursor=cursor,
                    resolver=rt.identity, lexicons=rt.lexicons, on_consumer=consumers.append,
                )  # fmt: skip
                if not source.live:
                    await indexing
                    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
                    frames = consumers[-1].decoder.frames
                    click.echo(
                        f"replayed {replay}: {frames} frames in {elapsed:.2f}s "
                        f"({frames / max(elapsed, 1e-9):,.0f} frames/s; {cpu:.2f}s of CPU)",
                        err=True,
                    )
                    return
                await _with_resync(rt, indexing)
        finally:
            if runner is not None:
                await runner.cleanup()

    run_async(_until_signalled(_main()))


async def _with_resync(rt: Any, indexing: Coroutine[Any, Any, None]) -> None:
    """Run the live indexer with the resync loop beside it (repos the indexer marks are fetched
    again); either ending or failing ends both. `plyr up` runs the loop as its own service
    ("resync" in core/runtime.py), so indexer.service.run does not start it."""
    import asyncio

    from indexer.backfill.resync import run_resync_loop

    tasks = [
        asyncio.create_task(indexing, name="indexer"),
        asyncio.create_task(run_resync_loop(rt), name="resync"),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise a failure
            log.error("service ended on its own", extra={"service": task.get_name()})
    finally:
        rt.stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@click.command("capture")
@click.argument("url")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=int, default=None, help="Stop after N frames.")
@click.option("--duration", type=float, default=None, help="Stop after S seconds.")
@click.option("--cursor", type=int, default=None, help="Ask the relay to start after this seq.")
def capture_command(url: str, file: Path, limit: int | None, duration: float | None, cursor: int | None) -> None:
    """Record raw subscribeRepos frames from URL into FILE (.zst = zstd-compressed)."""
    import asyncio
    import struct

    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    from indexer.sources import MAX_MESSAGE, subscribe_url

    load_settings()
    if not url.startswith(("ws://", "wss://")):
        raise PlyrError(f"{url}: the firehose URL must start with wss:// (or ws://)")

    async def _capture() -> int:
        count = 0
        raw = file.open("wb")
        out: Any = raw
        if file.suffix == ".zst":
            import zstandard

            out = zstandard.ZstdCompressor(level=3).stream_writer(raw)
        deadline = time.monotonic() + duration if duration else None
        try:
            async with connect(subscribe_url(url, cursor), max_size=MAX_MESSAGE, ping_interval=20,
                               ping_timeout=20, compression=None, open_timeout=15) as ws:  # fmt: skip
                while limit is None or count < limit:
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            async with asyncio.timeout(remaining):
                                message = await ws.recv()
                        except TimeoutError:
                            break
                    else:
                        message = await ws.recv()
                    if isinstance(message, str):
                        message = message.encode()
                    out.write(struct.pack("<I", len(message)))
                    out.write(message)
                    count += 1
        except (OSError, WebSocketException) as exc:
            if count == 0:
                raise PlyrError(f"{url}: {exc.__class__.__name__}: {exc}") from None
            log.warning("connection ended", extra={"error": str(exc)})
        finally:
            out.close()
        return count

    count = run_async(_until_signalled(_capture()))
    click.echo(f"captured {count or 0} frames to {file}", err=True)


@click.group("deadletters")
def deadletters_group() -> None:
    """Records and frames that could not be indexed."""


@deadletters_group.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Include replayed ones.")
def deadletters_list(limit: int, show_all: bool) -> None:
    """One JSON object a line: id, source, seq, uri, reason, created_at, replay state."""

    async def _list() -> None:
        from core.runtime import open_runtime

        async with open_runtime(load_settings()) as rt:
            rows = await rt.pool.fetch(
                f"""SELECT id, source, seq, uri, did, rev, reason, created_at, replayed_at,
                           replay_result, raw IS NOT NULL AS has_frame
                    FROM dead_letters {'' if show_all else 'WHERE replayed_at IS NULL'}
                    ORDER BY id LIMIT $1""",
                limit,
            )
            for r in rows:
                sys.stdout.write(orjson.dumps(dict(r), default=str).decode() + "\n")

    run_async(_list())


@deadletters_group.command("replay")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--no-verify", is_flag=True, help="Do not check signatures of stored frames.")
def deadletters_replay(limit: int, no_verify: bool) -> None:
    """Re-validate pending dead letters (after a lexicon or code fix) and apply those that pass."""
    from indexer.deadletters import replay_dead_letters

    async def _replay() -> dict[str, int]:
        from core.runtime import open_runtime

        async with open_runtime(load_settings()) as rt:
            return await replay_dead_letters(
                rt.pool, limit=limit, verify=not no_verify, lexicons=rt.lexicons, resolver=rt.identity
            )

    summary = run_async(_replay())
    click.echo(" ".join(f"{k}={v}" for k, v in summary.items()))


@click.group("records")
def records_group() -> None:
    """What the index holds."""


@records_group.command("dump")
@click.option("--collection", default=None, help="Only this NSID (e.g. fm.plyr.track).")
def records_dump(collection: str | None) -> None:
    """Print indexed records of visible actors, one JSON object a line: uri, cid, rev, value."""
    import contextlib

    from indexer.writer import dump_records
    from indexer.writer.checks import STORED_COLLECTIONS

    if collection is not None and collection not in STORED_COLLECTIONS:
        raise PlyrError(f"{collection}: not an indexed collection ({', '.join(sorted(STORED_COLLECTIONS))})")

    async def _dump() -> None:
        from core.runtime import open_runtime

        async with open_runtime(load_settings()) as rt:
            out = sys.stdout
            async for row in dump_records(rt.pool, collection):
                out.write(orjson.dumps(row).decode() + "\n")
            with contextlib.suppress(BrokenPipeError):
                out.flush()

    run_async(_dump())


@records_group.command("recount")
def records_recount() -> None:
    """Rebuild the counters (track_counts likes/comments, actor_counts, index_totals) from the
    rows. Writers wait while it runs; reads go on."""
    from indexer.writer import recount

    async def _recount() -> None:
        from core import db
        from core.runtime import open_runtime

        async with open_runtime(load_settings()) as rt:
            # Its own connection: pool connections carry a per-command timeout meant for requests.
            conn = await db.connect(rt.database_url)
            try:
                await recount(conn)
            finally:
                await conn.close()

    run_async(_recount())
    click.echo("counters rebuilt")


commands: list[click.Command] = [
    index_command,
    capture_command,
    deadletters_group,
    records_group,
]
