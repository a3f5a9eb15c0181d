"""The real-PDS harness works end to end: what the indexer and backfill tests rely on.

Against the session's `@atproto/pds` + PLC: accounts, every fm.plyr record type written,
updated, deleted and listed back, the firehose carrying exactly those writes, blobs, service-auth
tokens that verify against the PLC document, account deactivation and deletion, handle changes.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import libipld
import pytest
from atproto_crypto.verify import verify_signature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .pds_client import (
    FirehoseFrame,
    PdsClient,
    XrpcError,
    read_firehose,
    rkey_of,
    write_op,
)
from .pds_network import PdsNetwork, new_account

pytestmark = pytest.mark.e2e



def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def frames_of(frames: list[FirehoseFrame], did: str) -> list[FirehoseFrame]:
    return [f for f in frames if f.did == did]


def commit_ops(frames: list[FirehoseFrame], did: str) -> list[tuple[str, str, Any]]:
    """(action, path, record value or None) of every op of `did`'s commits, in seq order."""
    out = []
    for f in frames_of(frames, did):
        blocks = f.blocks()
        for op in f.ops():
            value = blocks.get(op["cid"]) if op.get("cid") else None
            out.append((op["action"], op["path"], value))
    return out


def account_events(frames: list[FirehoseFrame], did: str) -> list[tuple[bool, str | None]]:
    return [
        (f.body["active"], f.body.get("status"))
        for f in frames_of(frames, did)
        if f.type == "#account"
    ]


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    def unb64(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    head, payload, sig = token.split(".")
    return (
        json.loads(unb64(head)),
        json.loads(unb64(payload)),
        f"{head}.{payload}".encode(),
        unb64(sig),
    )


def atproto_did_key(doc: dict[str, Any]) -> str:
    """The did:key of a DID document's #atproto key.

    This PLC server (@did-plc/server 0.0.1, the only release) writes the legacy form:
    `EcdsaSecp256k1VerificationKey2019` with the raw uncompressed point; plc.directory now writes
    `Multikey` (multicodec-prefixed, compressed). Both are accepted here, as the spec asks.
    """
    method = next(m for m in doc["verificationMethod"] if m["id"].endswith("#atproto"))
    if method["type"] == "Multikey":
        return f"did:key:{method['publicKeyMultibase']}"
    assert method["type"] == "EcdsaSecp256k1VerificationKey2019", method
    _base, point = libipld.decode_multibase(method["publicKeyMultibase"])
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), point)
    compressed = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    return "did:key:" + libipld.encode_multibase("z", b"\xe7\x01" + compressed)  # secp256k1-pub


async def plc_document(net: PdsNetwork, did: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{net.plc_url}/{did}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(content_type=None)


async def test_network_is_up_on_loopback(pds_network: PdsNetwork, pds: PdsClient) -> None:
    desc = await pds.describe_server()
    assert desc["did"] == pds_network.service_did == "did:web:localhost"
    assert desc["availableUserDomains"] == [pds_network.handle_domain] == [".test"]
    assert pds_network.node_version.startswith("v22.")
    assert pds_network.firehose_url == (
        f"ws://127.0.0.1:{pds_network.pds_port}/xrpc/com.atproto.sync.subscribeRepos"
    )
    assert pds_network.identity_env() == {
        "PLYR_PLC_URL": pds_network.plc_url,
        "PLYR_HANDLE_RESOLVER_URL": pds_network.pds_url,
    }
    async with aiohttp.ClientSession() as http, http.get(f"{pds_network.plc_url}/_health") as r:
        assert r.status == 200
    print(
        f"\npds_network: ready in {pds_network.ready_seconds:.2f}s, "
        f"npm ci {pds_network.install_seconds or 0:.1f}s (0 = already installed)"
    )


def _listening_ports(table: str) -> set[tuple[str, int]]:
    """(hex address, port) of the sockets in LISTEN state in /proc/net/tcp or tcp6."""
    out = set()
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":  # LISTEN
            addr, port = fields[1].split(":")
            out.add((addr, int(port, 16)))
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_servers_listen_on_loopback_only(pds_network: PdsNetwork) -> None:
    """Read from the kernel's socket table: no traffic is sent anywhere to check it."""
    v4 = _listening_ports("tcp")
    v6 = _listening_ports("tcp6") if Path("/proc/net/tcp6").exists() else set()
    for port in (pds_network.pds_port, pds_network.plc_port):
        assert ("0100007F", port) in v4  # 127.0.0.1, little-endian hex
        assert not any(p == port for a, p in v4 if a != "0100007F")
        assert not any(p == port for _, p in v6)


async def test_plyr_records_round_trip_through_pds_and_firehose(
    pds_network: PdsNetwork, pds: PdsClient
) -> None:
    alice = await new_account(pds, pds_network, "alice")
    bob = await new_account(pds, pds_network, "bob")
    assert alice.did.startswith("did:plc:") and alice.handle.endswith(".test")
    assert await pds.resolve_handle(alice.handle) == alice.did

    # --- writes: every record type, then updates and deletes
    profile_uri, _ = await pds.put_record(
        alice, "fm.plyr.actor.profile", "self", {"bio": "loopback musician", "createdAt": now()}
    )
    assert profile_uri == f"at://{alice.did}/fm.plyr.actor.profile/self"
    track = {
        "title": "Loopback Blues",
        "artist": "alice",
        "fileType": "mp3",
        "createdAt": now(),
        "audioUrl": "https://example.test/a.mp3",
    }
    t1_uri, t1_cid = await pds.create_record(alice, "fm.plyr.track", track)
    t2_uri, t2_cid = await pds.create_record(
        alice, "fm.plyr.track", {**track, "title": "Gone Soon"}
    )
    strong = {"uri": t1_uri, "cid": t1_cid}
    like_uri, _ = await pds.create_record(
        bob, "fm.plyr.like", {"subject": strong, "createdAt": now()}
    )
    comment = {"subject": strong, "text": "great drop", "timestampMs": 62000, "createdAt": now()}
    c_uri, _ = await pds.create_record(bob, "fm.plyr.comment", comment)
    list_rec = {
        "name": "faves",
        "listType": "playlist",
        "createdAt": now(),
        "items": [{"subject": strong}, {"subject": {"uri": t2_uri, "cid": t2_cid}}],
    }
    l_uri, _ = await pds.create_record(bob, "fm.plyr.list", list_rec, rkey="faves")
    assert rkey_of(l_uri) == "faves"

    t1_uri2, t1_cid2 = await pds.put_record(
        alice, "fm.plyr.track", rkey_of(t1_uri), {**track, "title": "Loopback Blues (remaster)"}
    )
    assert t1_uri2 == t1_uri and t1_cid2 != t1_cid
    await pds.put_record(
        bob, "fm.plyr.comment", rkey_of(c_uri), {**comment, "text": "edited", "updatedAt": now()}
    )
    await pds.put_record(bob, "fm.plyr.list", "faves", {**list_rec, "items": [{"subject": strong}]})
    await pds.delete_record(alice, "fm.plyr.track", rkey_of(t2_uri))
    await pds.delete_record(bob, "fm.plyr.like", rkey_of(like_uri))

    # --- list them back
    tracks = await pds.list_records(alice.did, "fm.plyr.track")
    assert [(r.uri, r.cid, r.value["title"]) for r in tracks] == [
        (t1_uri, t1_cid2, "Loopback Blues (remaster)")
    ]
    assert tracks[0].value["$type"] == "fm.plyr.track"
    profiles = await pds.list_records(alice.did, "fm.plyr.actor.profile")
    assert [(r.rkey, r.value["bio"]) for r in profiles] == [("self", "loopback musician")]
    assert await pds.list_records(bob.did, "fm.plyr.like") == []
    comments = await pds.list_records(bob.did, "fm.plyr.comment")
    assert [(r.uri, r.value["text"]) for r in comments] == [(c_uri, "edited")]
    lists = await pds.list_records(bob.did, "fm.plyr.list")
    assert [len(r.value["items"]) for r in lists] == [1]

    # --- the firehose carried exactly those writes, in order, with the records' bytes
    def done(frames: list[FirehoseFrame]) -> bool:  # bob's last write: the like's delete
        return ("delete", f"fm.plyr.like/{rkey_of(like_uri)}", None) in commit_ops(frames, bob.did)

    frames = await read_firehose(pds_network.firehose_url, cursor=0, until=done)
    for acct in (alice, bob):
        types = [f.type for f in frames_of(frames, acct.did)]
        assert types[:3] == ["#identity", "#account", "#commit"], types  # account creation
        ident = frames_of(frames, acct.did)[0]
        assert ident.body["handle"] == acct.handle
        assert account_events(frames, acct.did) == [(True, None)]
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    a_ops = commit_ops(frames, alice.did)
    assert [(a, p) for a, p, _ in a_ops] == [
        ("create", "fm.plyr.actor.profile/self"),
        ("create", f"fm.plyr.track/{rkey_of(t1_uri)}"),
        ("create", f"fm.plyr.track/{rkey_of(t2_uri)}"),
        ("update", f"fm.plyr.track/{rkey_of(t1_uri)}"),
        ("delete", f"fm.plyr.track/{rkey_of(t2_uri)}"),
    ]
    assert a_ops[3][2]["title"] == "Loopback Blues (remaster)"
    assert a_ops[4][2] is None
    b_ops = commit_ops(frames, bob.did)
    assert [(a, p.split("/")[0]) for a, p, _ in b_ops] == [
        ("create", "fm.plyr.like"),
        ("create", "fm.plyr.comment"),
        ("create", "fm.plyr.list"),
        ("update", "fm.plyr.comment"),
        ("update", "fm.plyr.list"),
        ("delete", "fm.plyr.like"),
    ]
    assert b_ops[0][2]["subject"] == strong
    # The op CID is the CID the PDS returned for the record.
    t1_create = next(
        f
        for f in frames_of(frames, alice.did)
        if any(o["path"].endswith(rkey_of(t1_uri)) and o["action"] == "create" for o in f.ops())
    )
    assert libipld.encode_cid(t1_create.ops()[0]["cid"]) == t1_cid
    # Updates and deletes carry prev (sync 1.1); each commit carries since.
    update = next(
        f for f in frames_of(frames, alice.did) if f.ops() and f.ops()[0]["action"] == "update"
    )
    assert libipld.encode_cid(update.ops()[0]["prev"]) == t1_cid
    assert update.body["since"] is not None and update.body["commit"] is not None


async def test_apply_writes_batches_and_listing_pages(
    pds_network: PdsNetwork, pds: PdsClient
) -> None:
    carol = await new_account(pds, pds_network, "carol")
    n = 250  # two applyWrites batches (200 + 50), three listRecords pages (100 each)
    writes = [
        write_op(
            "create",
            "fm.plyr.track",
            rkey=f"t{i:04d}",
            value={"title": f"bulk {i}", "artist": "carol", "fileType": "mp3", "createdAt": now()},
        )
        for i in range(n)
    ]
    t0 = time.monotonic()
    results = await pds.apply_writes(carol, writes)
    elapsed = time.monotonic() - t0
    assert len(results) == n and all(r["uri"].startswith(f"at://{carol.did}/") for r in results)
    listed = await pds.list_records(carol.did, "fm.plyr.track")
    assert sorted(r.rkey for r in listed) == [f"t{i:04d}" for i in range(n)]
    # Mixed batch: update one, delete another.
    await pds.apply_writes(
        carol,
        [
            write_op(
                "update",
                "fm.plyr.track",
                rkey="t0000",
                value={
                    "title": "bulk 0 v2",
                    "artist": "carol",
                    "fileType": "mp3",
                    "createdAt": now(),
                },
            ),
            write_op("delete", "fm.plyr.track", rkey="t0001"),
        ],
    )
    listed = {r.rkey: r.value["title"] for r in await pds.list_records(carol.did, "fm.plyr.track")}
    assert len(listed) == n - 1 and listed["t0000"] == "bulk 0 v2" and "t0001" not in listed
    print(f"\napplyWrites: {n / elapsed:.0f} records/s")


async def test_blob_and_service_auth(pds_network: PdsNetwork, pds: PdsClient) -> None:
    dave = await new_account(pds, pds_network, "dave")
    audio = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 64
    blob = await pds.upload_blob(dave, audio, "audio/mpeg")
    assert (
        blob["$type"] == "blob" and blob["mimeType"] == "audio/mpeg" and blob["size"] == len(audio)
    )
    cid = blob["ref"]["$link"]
    uri, _ = await pds.create_record(
        dave,
        "fm.plyr.track",
        {
            "title": "With Blob",
            "artist": "dave",
            "fileType": "mp3",
            "createdAt": now(),
            "audioBlob": blob,
        },
    )
    assert await pds.get_blob(dave.did, cid) == audio
    # Audio-sized blobs pass: the harness lifts the PDS's 5 MB default to 100 MB.
    big = await pds.upload_blob(dave, b"\xff\xfb" * (3 * 1024 * 1024), "audio/mpeg")
    assert big["size"] == 6 * 1024 * 1024

    frames = await read_firehose(
        pds_network.firehose_url,
        cursor=0,
        until=lambda fs: any(f.did == dave.did and f.ops() for f in fs),
    )
    # The record in the commit links the blob by CID (the commit's own `blobs` list is
    # deprecated and left empty by this PDS).
    ops = commit_ops(frames, dave.did)
    assert [(a, p) for a, p, _ in ops] == [("create", f"fm.plyr.track/{rkey_of(uri)}")]
    assert libipld.encode_cid(ops[0][2]["audioBlob"]["ref"]) == cid

    aud = "did:web:plyr.test"
    token = await pds.get_service_auth(dave, aud, "fm.plyr.uploadTrack")
    header, claims, signing_input, sig = jwt_parts(token)
    assert header["alg"] == "ES256K"
    assert claims["iss"] == dave.did and claims["aud"] == aud
    assert claims["lxm"] == "fm.plyr.uploadTrack" and claims["exp"] > time.time()
    doc = await plc_document(pds_network, dave.did)
    did_key = atproto_did_key(doc)
    assert verify_signature(did_key, signing_input, sig)
    assert not verify_signature(did_key, signing_input + b"x", sig)
    assert any(s["serviceEndpoint"] == pds_network.pds_public_url for s in doc["service"])


async def test_account_lifecycle_on_firehose(pds_network: PdsNetwork, pds: PdsClient) -> None:
    erin = await new_account(pds, pds_network, "erin")
    await pds.create_record(
        erin,
        "fm.plyr.track",
        {"title": "Before", "artist": "erin", "fileType": "mp3", "createdAt": now()},
    )

    await pds.deactivate_account(erin)
    with pytest.raises(XrpcError) as err:
        await pds.list_records(erin.did, "fm.plyr.track")
    assert err.value.status == 400 and "Could not find repo" in (err.value.message or "")
    await pds.activate_account(erin)
    assert len(await pds.list_records(erin.did, "fm.plyr.track")) == 1

    old_handle = erin.handle
    new_handle = pds_network.unique_handle("erin2")
    await pds.update_handle(erin, new_handle)
    assert erin.handle == new_handle
    assert await pds.resolve_handle(new_handle) == erin.did
    with pytest.raises(XrpcError):
        await pds.resolve_handle(old_handle)
    doc = await plc_document(pds_network, erin.did)
    assert doc["alsoKnownAs"] == [f"at://{new_handle}"]

    # Read what happened so far now: deleting an account also removes its earlier events from
    # the PDS's firehose history (only the #account deleted event stays replayable).
    def saw_new_handle(fs: list[FirehoseFrame]) -> bool:
        return any(f.type == "#identity" and f.body.get("handle") == new_handle for f in fs)

    before = await read_firehose(pds_network.firehose_url, cursor=0, until=saw_new_handle)
    assert account_events(before, erin.did) == [(True, None), (False, "deactivated"), (True, None)]
    # What this PDS emits (the indexer sees the same): creation is #identity, #account, an
    # empty #commit and #sync; reactivation is #account, then #identity and #sync again.
    assert [(f.type, f.body.get("handle")) for f in frames_of(before, erin.did)] == [
        ("#identity", old_handle),
        ("#account", None),
        ("#commit", None),
        ("#sync", None),
        ("#commit", None),  # the track
        ("#account", None),  # deactivated
        ("#account", None),
        ("#identity", old_handle),
        ("#sync", None),  # activated
        ("#identity", new_handle),
    ]

    await pds.delete_account(erin)
    with pytest.raises(XrpcError):
        await pds.list_records(erin.did, "fm.plyr.track")
    with pytest.raises(XrpcError):
        await pds.resolve_handle(new_handle)

    after = await read_firehose(
        pds_network.firehose_url,
        cursor=before[-1].seq,
        until=lambda fs: (False, "deleted") in account_events(fs, erin.did),
    )
    assert after[0].seq > before[-1].seq
    assert account_events(after, erin.did) == [(False, "deleted")]
    replay = await read_firehose(
        pds_network.firehose_url,
        cursor=0,
        until=lambda fs: (False, "deleted") in account_events(fs, erin.did),
    )
    assert [f.type for f in frames_of(replay, erin.did)] == ["#account"]
