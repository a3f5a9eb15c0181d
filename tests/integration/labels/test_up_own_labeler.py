"""`plyr up` runs a labeler out of the box: it makes a key in the data folder (mode 600) and the
label subscriber follows the AppView's own labeler on its local address, so an operator's label
reaches the `labels` table with no configuration at all."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg

from appview.labeler.settings import read_key_file
from appview.labeler.store import LabelDraft, LabelSigner, emit_labels
from core import db
from tests.support.replica import free_port

ROOT = Path(__file__).resolve().parents[3]


async def _wait_for(conn: asyncpg.Connection, sql: str, *args: object, attempts: int = 600) -> asyncpg.Record:
    """The first row of `sql` once there is one (polled on progress, bounded)."""
    for _ in range(attempts):
        row = await conn.fetchrow(sql, *args)
        if row is not None:
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"no row for {sql!r} after {attempts} polls")


async def test_up_makes_a_key_and_follows_its_own_labeler(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLYR_LABEL")}
    env.update(
        DATABASE_URL=database_url, PLYR_DATA_DIR=str(data_dir), PLYR_APPVIEW_PORT=str(port),
        PLYR_LOG_FORMAT="json", PYTHONPATH=str(ROOT),
    )  # fmt: skip
    log = (tmp_path / "up.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "up", "--only", "appview", "--only", "labels",
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        conn = await db.connect(database_url)
        try:
            key_path = data_dir / "labeler.key"
            for _ in range(600):
                if key_path.exists() and key_path.stat().st_size:
                    break
                await asyncio.sleep(0.1)
            assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
            key = read_key_file(str(key_path))
            did = f"did:web:127.0.0.1%3A{port}"
            # The subscriber stores its cursor once connected and caught up with the empty stream;
            # a label emitted now arrives live.
            signer = LabelSigner(did, key)
            async with conn.transaction():
                await emit_labels(conn, signer, [LabelDraft(uri="did:plc:someoneelse0000000000000", val="!takedown")])
            row = await _wait_for(conn, "SELECT src, val, neg FROM labels WHERE uri = 'did:plc:someoneelse0000000000000'")
            assert (row["src"], row["val"], row["neg"]) == (did, "!takedown", False)
            # Our own labeler moderates: the account is taken down (a hidden actor row).
            actor = await _wait_for(
                conn, "SELECT visible FROM actors WHERE did = 'did:plc:someoneelse0000000000000' AND moderation_takedown"
            )
            assert actor["visible"] is False
        finally:
            await conn.close()
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()
