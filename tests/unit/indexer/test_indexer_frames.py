"""Decoding frames filter-first, verifying matched commits, and the capture/URL helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from core.backoff import Backoff
from indexer.frames import (
    AccountEvent,
    BadFrame,
    CommitEvent,
    Duplicate,
    ErrorFrame,
    FrameDecoder,
    IdentityEvent,
    InfoEvent,
    JetstreamDecoder,
    SyncEvent,
)
from indexer.records import RecordOp, check_op
from indexer.sources import (
    CaptureSource,
    CaptureUnreadable,
    JetstreamSource,
    split_frames,
    subscribe_url,
)
from indexer.verify import Verifier, VerifyError
from protocol.crypto import PrivateKey
from tests.support.frames import (
    MiniRepo,
    account_frame,
    capture_bytes,
    commit_frame,
    error_frame,
    frame,
    identity_frame,
    info_frame,
    post_record,
    sync_frame,
    track_record,
    write_capture,
)
from tests.support.identity import FakeResolver

DID = "did:plc:alice234567abcdefghijklm"


def run(coro):  # noqa: ANN001, ANN201 - tiny helper for sync tests
    return asyncio.run(coro)


@pytest.fixture
def repo() -> MiniRepo:
    return MiniRepo(DID)


def test_non_plyr_commit_is_filtered_without_reading_the_car(repo: MiniRepo) -> None:
    parts = repo.commit([("create", "app.bsky.feed.post", "3kp1", post_record("hi"))])
    decoder = FrameDecoder()
    # A garbage CAR would fail if it were read: the filter never looks at it.
    assert decoder.decode(commit_frame(7, parts, car=b"\x00not a car")) is None
    assert decoder.last_seq == 7 and decoder.last_time == "2026-01-01T00:00:00.000Z"


def test_matched_commit_keeps_only_plyr_ops(repo: MiniRepo) -> None:
    parts = repo.commit(
        [
            ("create", "app.bsky.feed.post", "3kp1", post_record("hi")),
            ("create", "fm.plyr.track", "3kt1", track_record()),
        ]
    )
    ev = FrameDecoder().decode(commit_frame(1, parts))
    assert isinstance(ev, CommitEvent)
    assert [op["path"] for op in ev.ops] == ["fm.plyr.track/3kt1"]
    assert ev.repo == DID and ev.rev == parts.rev and ev.since is None and not ev.too_big


def test_watched_repo_commits_come_through_without_plyr_ops(repo: MiniRepo) -> None:
    parts = repo.commit([("create", "app.bsky.feed.post", "3kp1", post_record("hi"))])
    ev = FrameDecoder(watched={DID: None}).decode(commit_frame(1, parts))
    assert isinstance(ev, CommitEvent) and ev.ops == []


def test_other_message_types(repo: MiniRepo) -> None:
    d = FrameDecoder()
    assert d.decode(identity_frame(1, DID, "a.test")) == IdentityEvent(1, DID, "2026-01-01T00:00:00.000Z", "a.test")
    acct = d.decode(account_frame(2, DID, False, "takendown"))
    assert isinstance(acct, AccountEvent) and not acct.active and acct.status == "takendown"
    parts = repo.commit([("create", "fm.plyr.track", "3kt1", track_record())])
    sync = d.decode(sync_frame(3, parts))
    assert isinstance(sync, SyncEvent) and sync.rev == parts.rev
    assert d.decode(info_frame("OutdatedCursor", "old")) == InfoEvent("OutdatedCursor", "old")
    assert d.decode(error_frame("FutureCursor")) == ErrorFrame("FutureCursor", None)
    assert d.last_seq == 3


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xff\xff",
        frame({"op": 1, "t": "#commit"}, {"seq": 1})[:-1],  # truncated
        frame({"op": 1, "t": "#commit"}, {"seq": 1}) + b"\xa0",  # three objects
        b"\xa2bopa1at",  # header only, cut
        frame({"op": 1, "t": "#commit"}, {"seq": 1}),  # no ops/repo
        frame({"op": 1, "t": "#commit"}, {"seq": 1, "ops": [{"path": 5}], "repo": DID, "rev": "x", "time": "t"}),
        frame({"op": 1, "t": "#account"}, {"seq": 1, "did": DID}),  # no active
        frame({"op": 1, "t": "#commit"}, {"seq": "one", "ops": []}),
        b"\x05" + b"\xa0",  # header is not a map
        frame({"op": 1, "t": "#whatever"}, {"seq": 1}),
    ],
)
def test_bad_frames_are_typed_results_never_exceptions(raw: bytes) -> None:
    ev = FrameDecoder().decode(raw)
    assert isinstance(ev, BadFrame), ev
    assert ev.reason


def test_duplicates_and_resume_point(repo: MiniRepo) -> None:
    parts = repo.commit([("create", "app.bsky.feed.post", "3kp1", post_record("hi"))])
    d = FrameDecoder(last_seq=10)
    assert d.decode(commit_frame(10, parts)) == Duplicate(10)
    assert d.decode(identity_frame(9, DID)) == Duplicate(9)
    assert d.decode(commit_frame(11, parts)) is None and d.last_seq == 11


def test_verify_valid_commit(repo: MiniRepo) -> None:
    parts = repo.commit([("create", "fm.plyr.track", "3kt1", track_record("A")), ("delete", "fm.plyr.like", "3kl0", None)])
    ev = FrameDecoder().decode(commit_frame(5, parts))
    ops = run(Verifier(FakeResolver({DID: repo.key.public_key()})).commit_ops(ev))
    assert [(o.action, o.collection, o.rkey, o.seq) for o in ops] == [
        ("create", "fm.plyr.track", "3kt1", 5),
        ("delete", "fm.plyr.like", "3kl0", 5),
    ]
    assert ops[0].record["title"] == "A" and ops[0].cid.startswith("bafyrei") and ops[0].rev == parts.rev


def _verify(ev: CommitEvent, resolver: FakeResolver, verify: bool = True) -> VerifyError:
    with pytest.raises(VerifyError) as info:
        run(Verifier(resolver, verify_signatures=verify).commit_ops(ev))
    return info.value


def test_bad_signature_retries_once_with_a_fresh_key(repo: MiniRepo) -> None:
    parts = repo.commit([("create", "fm.plyr.track", "3kt1", track_record())], key=PrivateKey.generate("k256"))
    ev = FrameDecoder().decode(commit_frame(1, parts))
    resolver = FakeResolver({DID: repo.key.public_key()})
    err = _verify(ev, resolver)
    assert err.kind == "signature"
    assert resolver.calls == [(DID, False), (DID, True)]
    # Without signature checks the same commit passes (CIDs are still fine).
    assert len(run(Verifier(resolver, verify_signatures=False).commit_ops(ev))) == 1


def test_rotated_key_verifies_on_the_fresh_lookup(repo: MiniRepo) -> None:
    new_key = PrivateKey.generate("p256")
    parts = repo.commit([("create", "fm.plyr.track", "3kt1", track_record())], key=new_key)
    ev = FrameDecoder().decode(commit_frame(1, parts))
    resolver = FakeResolver({DID: repo.key.public_key()})
    resolver.rotated[DID] = new_key.public_key()
    assert len(run(Verifier(resolver).commit_ops(ev))) == 1


def test_cid_mismatch_missing_block_and_wrong_commit(repo: MiniRepo) -> None:
    resolver = FakeResolver({DID: repo.key.public_key()})
    parts = repo.commit([("create", "fm.plyr.track", "3kt1", track_record("Tampered"))])
    block = parts.blocks[parts.ops[0]["cid"]]
    bad_car = parts.car.replace(block, block.replace(b"Tampered", b"Tompered"))
    assert _verify(FrameDecoder().decode(commit_frame(1, parts, car=bad_car)), resolver, False).kind == "car"
    missing = repo.commit([("create", "fm.plyr.track", "3kt2", track_record())], include_records=False)
    err = _verify(FrameDecoder().decode(commit_frame(2, missing)), resolver, False)
    assert err.kind == "car" and "missing" in str(err)
    ok = repo.commit([("create", "fm.plyr.track", "3kt3", track_record())])
    err = _verify(FrameDecoder().decode(commit_frame(3, ok, repo="did:plc:other234567abcdefghijklm")), resolver, False)
    assert err.kind == "commit"
    err = _verify(FrameDecoder().decode(commit_frame(4, ok, rev="3jzfcijpj2z2a")), resolver, False)
    assert err.kind == "commit"
    err = _verify(FrameDecoder().decode(commit_frame(5, ok, car=b"\x01\x02")), resolver, False)
    assert err.kind == "car"


def test_unresolvable_identity(repo: MiniRepo) -> None:
    parts = repo.commit([("create", "fm.plyr.track", "3kt1", track_record())])
    assert _verify(FrameDecoder().decode(commit_frame(1, parts)), FakeResolver({})).kind == "identity"


def test_jetstream_messages() -> None:
    d = JetstreamDecoder()
    msg = {
        "did": DID, "time_us": 1_700_000_000_000_000, "kind": "commit",
        "commit": {"rev": "3kabc", "operation": "create", "collection": "fm.plyr.track", "rkey": "3kt1",
                   "record": track_record(), "cid": "bafyreia"},
    }  # fmt: skip
    ev = d.decode(orjson.dumps(msg))
    assert isinstance(ev, CommitEvent) and ev.records == [
        RecordOp("create", DID, "fm.plyr.track", "3kt1", "3kabc", "bafyreia", track_record(), 1_700_000_000_000_000)
    ]
    other = msg | {"time_us": 1_700_000_000_000_001, "commit": msg["commit"] | {"collection": "app.bsky.feed.post"}}
    assert d.decode(orjson.dumps(other)) is None and d.last_seq == 1_700_000_000_000_001
    acct = d.decode(orjson.dumps({"did": DID, "time_us": 5, "kind": "account", "account": {"active": False, "status": "deleted"}}))
    assert isinstance(acct, AccountEvent) and acct.status == "deleted"
    assert isinstance(d.decode(b"{not json"), BadFrame)
    assert isinstance(d.decode(b'{"did": "x"}'), BadFrame)


def test_check_op_rules() -> None:
    good = RecordOp("create", DID, "fm.plyr.track", "3kt1", "3kabc", "bafy", track_record())
    assert check_op(good) is None
    assert "action" in check_op(RecordOp("upsert", DID, "fm.plyr.track", "3kt1", "r", "c", {}))
    assert "DID" in check_op(RecordOp("create", "alice", "fm.plyr.track", "3kt1", "r", "c", {}))
    assert "key" in check_op(RecordOp("create", DID, "fm.plyr.track", "a/b", "r", "c", {}))
    assert "$type" in check_op(RecordOp("create", DID, "fm.plyr.like", "3kt1", "r", "c", track_record()))
    assert check_op(RecordOp("delete", DID, "fm.plyr.like", "3kt1", "r")) is None


def test_split_frames_and_capture_files(tmp_path: Path) -> None:
    frames = [b"a" * 10, b"", b"b" * 300]
    data = capture_bytes(frames)
    got, pos = split_frames(data, 0)
    assert got == frames and pos == len(data)
    got, pos = split_frames(data[:-5], 0)
    assert got == frames[:2] and pos == 4 + 10 + 4

    async def read(path: Path) -> list[bytes]:
        out: list[bytes] = []
        async for batch in CaptureSource(path).batches(lambda: None):
            out.extend(batch)
        return out

    many = [bytes([i % 256]) * (i * 37 % 5000) for i in range(800)]  # spans several read chunks
    assert run(read(write_capture(tmp_path / "c.bin", many))) == many
    assert run(read(write_capture(tmp_path / "c.bin.zst", many))) == many
    # A cut last frame: the frames before it are read, then the file is reported (issue #11;
    # tests/hostile/test_capture_hostile.py has the rest).
    (tmp_path / "t.bin").write_bytes(capture_bytes(many[:3])[:-2])
    got_frames: list[bytes] = []

    async def read_cut() -> None:
        async for batch in CaptureSource(tmp_path / "t.bin").batches(lambda: None):
            got_frames.extend(batch)

    with pytest.raises(CaptureUnreadable, match=f"from byte {len(capture_bytes(many[:2]))} "):
        run(read_cut())
    assert got_frames == many[:2]


def test_a_capture_that_cannot_be_mapped_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain captures are memory-mapped; where the file system cannot map them, the same frames
    come from the streaming reader, and the empty file gives none."""
    import mmap

    refused: list[object] = []

    def refuse(*args: object, **_kwargs: object) -> mmap.mmap:
        refused.append(args)
        raise OSError(19, "No such device")

    async def read(path: Path) -> list[bytes]:
        return [frame async for batch in CaptureSource(path).batches(lambda: None) for frame in batch]

    many = [bytes([i % 256]) * (i * 37 % 5000) for i in range(800)]
    path = write_capture(tmp_path / "c.bin", many)
    (tmp_path / "empty.bin").write_bytes(b"")
    assert run(read(tmp_path / "empty.bin")) == []
    monkeypatch.setattr("indexer.sources.mmap.mmap", refuse)
    assert run(read(path)) == many and len(refused) == 1


def test_urls_and_backoff() -> None:
    assert subscribe_url("wss://bsky.network", None) == "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos"
    assert subscribe_url("wss://pds.example/", 42).endswith("subscribeRepos?cursor=42")
    full = "wss://r.example/xrpc/com.atproto.sync.subscribeRepos"
    assert subscribe_url(full, 1) == full + "?cursor=1"
    js = JetstreamSource("wss://jet.example/subscribe")
    assert js.connect_url(10_000_000).endswith(
        "wantedCollections=fm.plyr.%2A&wantedCollections=fm.teal.alpha.feed.play"
        "&wantedCollections=fm.teal.feed.play&cursor=5000000"
    )
    b = Backoff(base=1, cap=8)
    delays = [b.next_delay() for _ in range(10)]
    assert all(0 <= d <= 8 for d in delays)
    b.reset()
    assert b.next_delay() <= 1
