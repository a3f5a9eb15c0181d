"""The consumer on a real Postgres, fed capture files of frames built with real signed commits;
identities come from a local PLC stand-in over HTTP (a real IdentityResolver)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from indexer.consumer import Consumer
from indexer.service import run_indexer
from indexer.settings import IndexerSettings
from indexer.sources import CaptureSource
from protocol.crypto import PrivateKey
from protocol.identity import IdentityResolver
from tests.support.frames import (
    MiniRepo,
    account_frame,
    comment_record,
    commit_frame,
    error_frame,
    frame,
    identity_frame,
    info_frame,
    like_record,
    post_record,
    sync_frame,
    track_record,
    write_capture,
)
from tests.support.identity import local_resolver
from tests.support.rkeys import tid_key
from tests.unit.protocol.fake_identity_server import FakeIdentityServer, did_doc

ROOT = Path(__file__).resolve().parents[3]
ALICE = "did:plc:alice234567abcdefghijklm"
BOB = "did:plc:bob234567abcdefghijklmno"


@pytest.fixture
async def identity() -> AsyncIterator[tuple[FakeIdentityServer, IdentityResolver]]:
    server = FakeIdentityServer()
    await server.start()
    resolver = local_resolver(server.url, handle_resolver_url=server.url, refresh_floor=0)
    yield server, resolver
    await resolver.close()
    await server.stop()


def settings(**kw: object) -> IndexerSettings:
    base = IndexerSettings(
        source="relay", relay_url="ws://127.0.0.1:1", jetstream_url="ws://127.0.0.1:1", verify=True,
        metrics_port=0, batch_size=500, batch_delay=0.2, standby_poll=0.1,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def repo(server: FakeIdentityServer, did: str, handle: str | None = None) -> MiniRepo:
    r = MiniRepo(did)
    server.plc[did] = did_doc(did, r.key.public_key(), handle=handle)
    if handle:
        server.handles[handle] = did
    return r


async def replay(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, frames: list[bytes], resolver: object,
    *, verify: bool = True, name: str = "cap.bin", **kw: object,
) -> Consumer:  # fmt: skip
    path = write_capture(tmp_path / name, frames)
    consumers: list[Consumer] = []
    await run_indexer(
        database_url, pool, settings(**kw), CaptureSource(path), verify=verify,
        resolver=resolver, on_consumer=consumers.append,
    )  # fmt: skip
    return consumers[-1]


async def test_valid_commits_are_indexed_with_cursor(pool, database_url, tmp_path, identity) -> None:
    server, resolver = identity
    alice = repo(server, ALICE, "alice.test")
    bob = repo(server, BOB)
    t = alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record("Hello"))])
    p = bob.commit([("create", "app.bsky.feed.post", "3kpcx22222222", post_record("not ours"))])
    lk = bob.commit(
        [
            ("create", "fm.plyr.like", "3klcx22222222", like_record(f"at://{ALICE}/fm.plyr.track/3ktcx22222222")),
            ("create", "app.bsky.feed.post", "3kp2x22222222", post_record("mixed commit")),
        ]
    )
    frames = [commit_frame(1, t), commit_frame(2, p), commit_frame(3, lk)]
    c = await replay(pool, database_url, tmp_path, frames, resolver)
    assert await pool.fetchval("SELECT title FROM tracks") == "Hello"
    assert await pool.fetchval("SELECT like_count FROM track_counts") == 1
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = 'capture:cap.bin'") == 3
    assert c.stats.matched_ops == 2 and c.stats.verify_failures == 0
    # The handle is verified both ways (document claims it, it resolves back).
    assert await pool.fetchval("SELECT handle FROM actors WHERE did = $1", ALICE) == "alice.test"
    assert await pool.fetchval("SELECT handle FROM actors WHERE did = $1", BOB) is None
    # Replaying the same capture again: everything is before the cursor.
    c2 = await replay(pool, database_url, tmp_path, frames, resolver)
    assert c2.stats.duplicates == 3 and c2.stats.written == 0


async def test_bad_frames_never_stop_the_stream(pool, database_url, tmp_path, identity) -> None:
    server, resolver = identity
    alice = repo(server, ALICE)
    good1 = alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record("One"))])
    # Signed with a key that is not Alice's.
    bad_sig = alice.commit([("create", "fm.plyr.track", "3kt2x22222222", track_record("Forged"))], key=PrivateKey.generate("k256"))
    # A record block whose bytes do not match its CID.
    tampered = alice.commit([("create", "fm.plyr.track", "3kt3x22222222", track_record("Tampered"))])
    old_block = tampered.blocks[tampered.ops[0]["cid"]]
    new_block = old_block.replace(b"Tampered", b"Tompered")
    tampered_car = tampered.car.replace(old_block, new_block)
    # The record block is missing from the CAR.
    missing = alice.commit([("create", "fm.plyr.track", "3kt4x22222222", track_record("Missing"))], include_records=False)
    good2 = alice.commit([("create", "fm.plyr.track", "3kt5x22222222", track_record("Five"))])
    frames = [
        commit_frame(1, good1),
        commit_frame(2, bad_sig),
        commit_frame(3, tampered, car=tampered_car),
        commit_frame(4, missing),
        commit_frame(5, good2)[:-20],  # truncated
        b"\xff\xfe garbage",
        frame({"op": 1, "t": "#mystery"}, {"seq": 6}),
        frame({"op": 1, "t": "#commit"}, {"seq": 7, "ops": "not a list"}),
        info_frame("OutdatedCursor", "too old"),
        commit_frame(8, good2),
    ]
    c = await replay(pool, database_url, tmp_path, frames, resolver)
    titles = sorted(r["title"] for r in await pool.fetch("SELECT title FROM tracks"))
    assert titles == ["Five", "One"]
    letters = await pool.fetch("SELECT seq, reason, raw FROM dead_letters ORDER BY seq")
    assert [r["seq"] for r in letters] == [2, 3, 4]
    assert letters[0]["reason"].startswith("signature:")
    assert letters[1]["reason"].startswith("car:") and letters[2]["reason"].startswith("car:")
    assert all(r["raw"] for r in letters)
    assert c.stats.verify_failures == 3
    assert c.stats.bad_frames == 4  # truncated, garbage, unknown type, misshapen
    assert await pool.fetchval("SELECT seq FROM cursors") == 8
    # OutdatedCursor: events may be missing, so the repos we index are marked for resync.
    assert await pool.fetchval("SELECT needs_resync FROM actors WHERE did = $1", ALICE)


async def test_no_verify_skips_signatures_but_not_cids(pool, database_url, tmp_path, identity) -> None:
    _server, resolver = identity
    stranger = MiniRepo("did:plc:unresolvable2345abcdefgh")  # not in the PLC stand-in
    ok = stranger.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record("Offline"))])
    missing = stranger.commit([("create", "fm.plyr.track", "3kt2x22222222", track_record("X"))], include_records=False)
    await replay(pool, database_url, tmp_path, [commit_frame(1, ok), commit_frame(2, missing)], resolver, verify=False)
    assert await pool.fetchval("SELECT title FROM tracks") == "Offline"
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1


async def test_unresolvable_identity_is_dead_lettered(pool, database_url, tmp_path, identity) -> None:
    _server, resolver = identity
    stranger = MiniRepo("did:plc:unresolvable2345abcdefgh")
    ok = stranger.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record("Who"))])
    await replay(pool, database_url, tmp_path, [commit_frame(1, ok)], resolver)
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 0
    assert (await pool.fetchval("SELECT reason FROM dead_letters")).startswith("identity:")


async def test_key_rotation_is_picked_up(pool, database_url, tmp_path, identity) -> None:
    server, resolver = identity
    alice = repo(server, ALICE)
    first = alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record("Old key"))])
    await replay(pool, database_url, tmp_path, [commit_frame(1, first)], resolver, name="a.bin")
    # Rotate: new key in the document, commits signed with it. The cached key fails once,
    # the fresh document verifies.
    alice.key = PrivateKey.generate("p256")
    server.plc[ALICE] = did_doc(ALICE, alice.key.public_key())
    second = alice.commit([("create", "fm.plyr.track", "3kt2x22222222", track_record("New key"))])
    await replay(pool, database_url, tmp_path, [commit_frame(2, second)], resolver, name="a.bin")
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 2
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_rev_chain_marks_resync(pool, database_url, tmp_path, identity) -> None:
    server, resolver = identity
    alice = repo(server, ALICE)
    c1 = alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record())])
    c2 = alice.commit([("create", "app.bsky.feed.post", "3kpcx22222222", post_record("chain goes on"))])
    c3 = alice.commit([("create", "app.bsky.feed.post", "3kp2x22222222", post_record("this one is missed"))])
    c4 = alice.commit([("create", "app.bsky.feed.post", "3kp3x22222222", post_record("since = c3"))])
    # c3 never arrives: c4's since does not match the rev we hold (c2's).
    await replay(pool, database_url, tmp_path, [commit_frame(1, c1), commit_frame(2, c2)], resolver, name="r.bin")
    actor = await pool.fetchrow("SELECT repo_rev, needs_resync FROM actors WHERE did = $1", ALICE)
    assert actor["repo_rev"] == c2.rev and not actor["needs_resync"]
    await replay(pool, database_url, tmp_path, [commit_frame(4, c4)], resolver, name="r.bin")
    actor = await pool.fetchrow("SELECT repo_rev, needs_resync, resync_reason FROM actors WHERE did = $1", ALICE)
    assert actor["needs_resync"] and "since" in actor["resync_reason"] and actor["repo_rev"] == c4.rev
    assert c3.rev < c4.rev


async def test_sync_and_too_big_mark_resync(pool, database_url, tmp_path, identity) -> None:
    server, resolver = identity
    alice, bob = repo(server, ALICE), repo(server, BOB)
    a1 = alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record())])
    b1 = bob.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record())])
    a2 = alice.commit([("create", "app.bsky.feed.post", "3kpcx22222222", post_record("x"))])
    b2 = bob.commit([("create", "fm.plyr.track", "3kt2x22222222", track_record())])
    frames = [commit_frame(1, a1), commit_frame(2, b1), sync_frame(3, a2), commit_frame(4, b2, too_big=True)]
    await replay(pool, database_url, tmp_path, frames, resolver)
    rows = {r["did"]: r for r in await pool.fetch("SELECT did, needs_resync, resync_reason FROM actors")}
    assert rows[ALICE]["needs_resync"] and "#sync" in rows[ALICE]["resync_reason"]
    assert rows[BOB]["needs_resync"] and "tooBig" in rows[BOB]["resync_reason"]
    assert await pool.fetchval("SELECT count(*) FROM tracks WHERE did = $1", BOB) == 1


async def test_account_and_identity_events(pool, database_url, tmp_path, identity) -> None:
    server, resolver = identity
    alice, bob = repo(server, ALICE, "alice.test"), repo(server, BOB)
    track_uri = f"at://{BOB}/fm.plyr.track/3ktcx22222222"
    frames = [
        commit_frame(1, bob.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record())])),
        commit_frame(2, alice.commit([("create", "fm.plyr.like", "3klcx22222222", like_record(track_uri))])),
        commit_frame(3, alice.commit([("create", "fm.plyr.comment", "3kccx22222222", comment_record(track_uri))])),
        account_frame(4, ALICE, False, "deactivated"),
    ]
    await replay(pool, database_url, tmp_path, frames, resolver, name="acct.bin")
    assert await pool.fetchval("SELECT visible FROM actors WHERE did = $1", ALICE) is False
    assert tuple(await pool.fetchrow("SELECT like_count, comment_count FROM track_counts")) == (0, 0)
    # Handle change: the PLC document now claims a new handle, which resolves back.
    server.plc[ALICE] = did_doc(ALICE, alice.key.public_key(), handle="alice2.test")
    server.handles["alice2.test"] = ALICE
    frames = [account_frame(5, ALICE, True), identity_frame(6, ALICE, "alice2.test")]
    await replay(pool, database_url, tmp_path, frames, resolver, name="acct.bin")
    assert tuple(await pool.fetchrow("SELECT like_count, comment_count FROM track_counts")) == (1, 1)
    assert await pool.fetchval("SELECT handle FROM actors WHERE did = $1", ALICE) == "alice2.test"
    frames = [account_frame(7, ALICE, False, "deleted")]
    await replay(pool, database_url, tmp_path, frames, resolver, name="acct.bin")
    assert await pool.fetchval("SELECT count(*) FROM likes") == 0
    assert tuple(await pool.fetchrow("SELECT like_count, comment_count FROM track_counts")) == (0, 0)
    assert await pool.fetchval("SELECT seq FROM cursors") == 7


async def test_future_cursor_marks_resync(pool, database_url, tmp_path, identity) -> None:
    server, resolver = identity
    alice = repo(server, ALICE)
    frames = [commit_frame(10, alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record())])), error_frame("FutureCursor", "cursor in the future")]
    await replay(pool, database_url, tmp_path, frames, resolver)
    assert await pool.fetchval("SELECT needs_resync FROM actors") is True


@dataclasses.dataclass
class Done:
    returncode: int
    stdout: bytes
    stderr: bytes


async def plyr(*args: str, env: dict[str, str]) -> Done:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plyr", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Done(proc.returncode, out, err)


async def test_cli_replay_end_to_end(database_url, tmp_path, pool) -> None:
    alice = MiniRepo(ALICE)
    frames = [commit_frame(i + 1, alice.commit([("create", "fm.plyr.track", tid_key(f"3kt{i}"), track_record(f"T{i}"))])) for i in range(50)]
    frames.insert(10, b"garbage")
    path = write_capture(tmp_path / "cli.bin.zst", frames)
    # PLC on a dead loopback port: nothing may leave the machine.
    env = {**os.environ, "DATABASE_URL": database_url, "PLYR_LOG_FORMAT": "json", "PLYR_PLC_URL": "http://127.0.0.1:9"}
    proc = await plyr("index", "--replay", str(path), "--no-verify", env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"SIGNATURE CHECKS ARE OFF" in proc.stderr
    assert await pool.fetchval("SELECT count(*) FROM tracks") == 50
    assert await pool.fetchval("SELECT seq FROM cursors WHERE source = 'capture:cli.bin.zst'") == 50
    # records dump prints what the index holds, one JSON object a line.
    proc = await plyr("records", "dump", "--collection", "fm.plyr.track", env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 50 and set(lines[0]) == {"uri", "cid", "rev", "value"}
    assert lines[0]["value"]["$type"] == "fm.plyr.track"
    # A missing file is one clear line, no traceback.
    proc = await plyr("index", "--replay", str(tmp_path / "nope.bin"), "--no-verify", env=env)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr and b"no such capture file" in proc.stderr


async def test_deadletters_replay_after_a_fix(pool, database_url, tmp_path, identity) -> None:
    """A record the lexicons rejected, and a commit whose signing key could not be resolved,
    both go through once the cause is fixed; what still fails stays pending with the reason."""
    from indexer.deadletters import replay_dead_letters
    from indexer.records import RecordOp
    from indexer.writer import apply_batch, default_lexicons

    server, resolver = identity
    carol = MiniRepo("did:plc:carol234567abcdefghijklm")
    parts = carol.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record("Late"))])
    await replay(pool, database_url, tmp_path, [commit_frame(1, parts)], resolver)  # unresolvable now
    bad = RecordOp("create", ALICE, "fm.plyr.track", "3ktzx22222222", "3kaaaaaaaaa22", "bafyreia", {"$type": "fm.plyr.track", "title": "No artist"})
    async with pool.acquire() as conn:
        await apply_batch(conn, [bad], lexicons=default_lexicons())

    class Lenient:
        """The 'fixed' lexicons: accept a track without an artist (the row builder still needs one)."""

        def validate_record(self, nsid: str, value: dict, rkey: str | None = None) -> list[str]:
            return []

    summary = await replay_dead_letters(pool, lexicons=Lenient(), resolver=resolver)
    assert summary == {"applied": 0, "still_invalid": 2}  # carol still unknown; artist missing
    server.plc[carol.did] = did_doc(carol.did, carol.key.public_key())
    resolver.invalidate(carol.did)
    summary = await replay_dead_letters(pool, resolver=resolver)
    assert summary == {"applied": 1, "still_invalid": 1}
    assert await pool.fetchval("SELECT title FROM tracks") == "Late"
    rows = await pool.fetch("SELECT replayed_at, replay_result FROM dead_letters ORDER BY id")
    assert rows[0]["replayed_at"] is not None and rows[0]["replay_result"].startswith("applied 1")
    assert rows[1]["replayed_at"] is None and "artist" in rows[1]["replay_result"]


async def test_metrics_count_what_happened(pool, database_url, tmp_path, identity) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    server, resolver = identity
    alice = repo(server, ALICE)
    before = (value("plyr_indexer_frames_total", type="commit"), value("plyr_indexer_records_written_total"),
              value("plyr_indexer_bad_frames_total"), value("plyr_indexer_verify_failures_total", kind="signature"))  # fmt: skip
    frames = [
        commit_frame(1, alice.commit([("create", "fm.plyr.track", "3ktcx22222222", track_record())])),
        commit_frame(2, alice.commit([("create", "fm.plyr.track", "3kt2x22222222", track_record())], key=PrivateKey.generate("k256"))),
        b"junk",
    ]
    await replay(pool, database_url, tmp_path, frames, resolver, name="metrics.bin")
    after = (value("plyr_indexer_frames_total", type="commit"), value("plyr_indexer_records_written_total"),
             value("plyr_indexer_bad_frames_total"), value("plyr_indexer_verify_failures_total", kind="signature"))  # fmt: skip
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 1]
    assert value("plyr_indexer_cursor_seq", source="capture:metrics.bin") == 2
