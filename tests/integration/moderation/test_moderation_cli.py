"""`plyr admin` as an operator runs it (a process on the test database): the same actions as
the XRPC methods, the moderator recorded as `cli:<OS user>`, results as JSON lines."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from protocol.crypto import PrivateKey
from protocol.labels import parse_label
from tests.integration.appview.conftest import make_cid

ROOT = Path(__file__).resolve().parents[3]
SERVICE_DID = "did:web:labeler.plyr.test"
World = Any  # the `world` fixture (tests/integration/appview/conftest.World)


async def plyr_admin(env: dict[str, str], *args: str, code: int = 0) -> tuple[list[dict[str, Any]], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", "admin", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == code, (args, out.decode(), err.decode())
    assert b"Traceback" not in err, err.decode()
    return [orjson.loads(line) for line in out.splitlines()], err.decode()


async def test_plyr_admin_commands(database_url: str, world: World, pool: asyncpg.Pool) -> None:
    ann = await world.account("ann")
    track = await world.track(ann, "tune")
    other = await world.track(ann, "other")
    for subject, who in ((track, "did:plc:fan1"), (track, "did:plc:fan2"), (other, "did:plc:fan1")):
        await pool.execute("INSERT INTO reports (subject, subject_cid, reason_type, reported_by) VALUES ($1, $2, $3, $4)",
                           subject, make_cid(subject), "com.atproto.moderation.defs#reasonSpam", who)  # fmt: skip
    key = PrivateKey.generate("k256")
    env = {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_LEVEL": "WARNING", "USER": "ops", "LOGNAME": "ops",
           "PLYR_PUBLIC_URL": "https://labeler.plyr.test", "PLYR_SERVICE_DID": SERVICE_DID,
           "PLYR_LABELER_KEY": key.to_bytes().hex()}  # fmt: skip
    env.pop("PLYR_LABELER_KEY_FILE", None)

    queue, _ = await plyr_admin(env, "reports")
    assert [(g["subject"], g["count"]) for g in queue] == [(track, 2), (other, 1)]

    [done], _ = await plyr_admin(env, "takedown", track, "--reason", "spam wave")
    assert done["action"]["moderator"] == "cli:ops" and done["resolvedReports"] == 2
    label = parse_label(done["labels"][0], encoding="json")
    assert label.src == SERVICE_DID and label.val == "!takedown" and label.verify(key.public_key())
    row = await pool.fetchrow("SELECT * FROM own_labels WHERE uri = $1", track)
    assert row["signing_key"] == key.public_key().did_key() and bytes(row["sig"]) == label.sig
    assert await pool.fetchval("SELECT count(*) FROM reports WHERE action_id = $1", done["action"]["id"]) == 2

    [undone], _ = await plyr_admin(env, "restore", track, "--reason", "appeal")
    assert parse_label(undone["labels"][0], encoding="json").neg

    [resolved], _ = await plyr_admin(env, "resolve", other, "--note", "not spam")
    assert resolved["resolvedReports"] == 1 and resolved["action"]["action"] == "resolve-reports"
    queue, err = await plyr_admin(env, "reports")
    assert queue == [] and "no open reports" in err

    [labelled], _ = await plyr_admin(env, "label", ann.did, "--add", "!warn", "--reason", "heads up")
    assert labelled["action"]["labels"] == ["!warn"]

    log, _ = await plyr_admin(env, "actions", "--subject", track)
    assert [a["action"] for a in log] == ["restore", "takedown"]
    everything, _ = await plyr_admin(env, "actions", "--limit", "2")
    assert [a["action"] for a in everything] == ["label", "resolve-reports"]

    # mistakes are one line and exit 1; nothing is written
    _, err = await plyr_admin(env, "takedown", "not-a-subject", "--reason", "x", code=1)
    assert len(err.strip().splitlines()) == 1 and "subject" in err
    _, err = await plyr_admin({**env, "PLYR_LABELER_KEY": ""}, "takedown", track, "--reason", "x", code=1)
    assert "PLYR_LABELER_KEY" in err
    assert await pool.fetchval("SELECT count(*) FROM moderation_actions") == 4
