"""Our own labeler against a real Postgres: labels written by emit_labels, served by
queryLabels and subscribeLabels, their signatures checked with the key our DID document serves."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from appview.app import LABEL_STREAM_KEY, build_app
from appview.labeler.settings import LabelerSettings
from appview.labeler.store import LabelDraft, LabelSigner, emit_labels
from protocol.crypto import PrivateKey
from protocol.identity import parse_did_document
from protocol.labels import ErrorMessage, Label, LabelsMessage, decode_label_frame, parse_label
from tests.integration.appview.conftest import SERVICE_DID, appview_settings
from tests.support.identity import local_resolver

QUERY = "/xrpc/com.atproto.label.queryLabels"
SUBSCRIBE = "/xrpc/com.atproto.label.subscribeLabels"
ANN = "did:plc:annannannannannannannann"
TRACK = f"at://{ANN}/fm.plyr.track/3ltrack22222a"
FRAME_WAIT = 10.0  # upper bound on waiting for one frame; tests wait on the frame, not a time


@dataclasses.dataclass
class Labeler:
    client: TestClient
    signer: LabelSigner
    pool: asyncpg.Pool

    async def emit(self, *drafts: LabelDraft) -> list[Label]:
        async with self.pool.acquire() as conn:
            return await emit_labels(conn, self.signer, list(drafts))

    async def query(self, **params: Any) -> dict[str, Any]:
        resp = await self.client.get(QUERY, params=_multi(params))
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def _multi(params: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]


@pytest.fixture
async def labeler_factory(pool: asyncpg.Pool, database_url: str, plc: Any) -> AsyncIterator[Any]:
    made: list[tuple[TestClient, Any]] = []

    async def make(*, listen: bool = True, **labeler: Any) -> Labeler:
        key = PrivateKey.generate("k256")
        settings = appview_settings(labeler=LabelerSettings(key=key, **labeler))
        resolver = local_resolver(plc.url)
        app = build_app(pool, settings, resolver=resolver, check_output=True,
                        primary_url=database_url if listen else "")
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        made.append((client, resolver))
        return Labeler(client, LabelSigner(SERVICE_DID, key), pool)

    yield make
    for client, resolver in made:
        await client.close()
        await resolver.close()


@pytest.fixture
async def labeler(labeler_factory: Any) -> Labeler:
    made: Labeler = await labeler_factory()
    return made


async def _frame(ws: aiohttp.ClientWebSocketResponse) -> LabelsMessage | ErrorMessage:
    msg = await ws.receive(timeout=FRAME_WAIT)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    decoded = decode_label_frame(msg.data)
    assert isinstance(decoded, LabelsMessage | ErrorMessage)
    return decoded


async def _labels(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, Label]:
    frame = await _frame(ws)
    assert isinstance(frame, LabelsMessage) and len(frame.labels) == 1, frame
    label = frame.labels[0]
    assert isinstance(label, Label)
    return frame.seq, label


async def _joined(lab: Labeler) -> None:
    """Until a subscriber has caught up and joined the live fan-out (progress, bounded)."""
    stream = lab.client.app[LABEL_STREAM_KEY]
    async with asyncio.timeout(FRAME_WAIT):
        while not stream.live:  # noqa: ASYNC110 - polls a set the stream keeps
            await asyncio.sleep(0.01)


# -- the DID document -----------------------------------------------------------------------------


async def test_did_document_names_the_label_key_and_service(labeler: Labeler) -> None:
    resp = await labeler.client.get("/.well-known/did.json")
    doc = parse_did_document(SERVICE_DID, await resp.json())
    assert doc.verification_key("#atproto_label") == labeler.signer.key.public_key()
    assert doc.service_endpoint("#atproto_labeler", "AtprotoLabeler") == "http://appview.test"
    assert doc.service_endpoint("#plyr_appview", "PlyrAppView") == "http://appview.test"  # kept


async def test_without_a_key_there_is_no_labeler(client: TestClient) -> None:
    raw = await (await client.get("/.well-known/did.json")).json()
    assert "verificationMethod" not in raw and [s["id"] for s in raw["service"]] == ["#plyr_appview"]
    for path in (f"{QUERY}?uriPatterns=*", SUBSCRIBE):
        resp = await client.get(path)
        assert resp.status == 404 and (await resp.json())["error"] == "MethodNotImplemented"
    spec = await (await client.get("/openapi.json")).json()
    assert QUERY not in spec["paths"] and SUBSCRIBE not in spec["paths"]


async def test_openapi_lists_both_methods_and_stays_valid(labeler: Labeler) -> None:
    spec = await (await labeler.client.get("/openapi.json")).json()
    assert "get" in spec["paths"][QUERY] and "101" in spec["paths"][SUBSCRIBE]["get"]["responses"]
    validate(spec)


# -- queryLabels ----------------------------------------------------------------------------------


async def test_query_patterns_sources_and_paging(labeler: Labeler) -> None:
    other = "did:plc:bobbobbobbobbobbobbobbob"
    await labeler.emit(
        LabelDraft(TRACK, "porn"), LabelDraft(TRACK, "!warn"), LabelDraft(ANN, "!hide"),
        LabelDraft(f"at://{other}/fm.plyr.track/3lbob2222222", "spam"),
    )  # fmt: skip
    everything = await labeler.query(uriPatterns="*")
    assert [(lab["uri"], lab["val"]) for lab in everything["labels"]] == [
        (TRACK, "porn"), (TRACK, "!warn"), (ANN, "!hide"), (f"at://{other}/fm.plyr.track/3lbob2222222", "spam"),
    ]  # fmt: skip
    assert all(lab["src"] == SERVICE_DID and lab["ver"] == 1 and "$bytes" in lab["sig"] for lab in everything["labels"])
    exact = await labeler.query(uriPatterns=[ANN, "at://nothing/here"])
    assert [lab["val"] for lab in exact["labels"]] == ["!hide"]
    prefix = await labeler.query(uriPatterns=f"at://{ANN}/*")
    assert sorted(lab["val"] for lab in prefix["labels"]) == ["!warn", "porn"]
    both = await labeler.query(uriPatterns=[f"at://{other}*", ANN])
    assert sorted(lab["val"] for lab in both["labels"]) == ["!hide", "spam"]
    # sources: ours, or empty; another labeler's DID has nothing here
    assert len((await labeler.query(uriPatterns="*", sources=SERVICE_DID))["labels"]) == 4
    assert (await labeler.query(uriPatterns="*", sources=other))["labels"] == []
    # paging by seq: limit 3, then the rest from the cursor
    first = await labeler.query(uriPatterns="*", limit=3)
    assert len(first["labels"]) == 3
    rest = await labeler.query(uriPatterns="*", limit=3, cursor=first["cursor"])
    assert first["labels"] + rest["labels"] == everything["labels"]
    last = await labeler.query(uriPatterns="*", cursor=rest["cursor"])
    assert last == {"labels": []}


async def test_like_wildcards_in_a_prefix_are_literal(labeler: Labeler) -> None:
    await labeler.emit(
        LabelDraft("at://did:web:a_b.test/fm.plyr.track/1", "x"),
        LabelDraft("at://did:web:aXb.test/fm.plyr.track/1", "x"),
        LabelDraft("at://did:web:100%25.test/fm.plyr.track/1", "x"),
        LabelDraft("at://did:web:1000.test/fm.plyr.track/1", "x"),
    )
    underscore = await labeler.query(uriPatterns="at://did:web:a_*")
    assert [lab["uri"] for lab in underscore["labels"]] == ["at://did:web:a_b.test/fm.plyr.track/1"]
    percent = await labeler.query(uriPatterns="at://did:web:100%*")
    assert [lab["uri"] for lab in percent["labels"]] == ["at://did:web:100%25.test/fm.plyr.track/1"]


async def test_query_refuses_bad_patterns_and_cursors(labeler: Labeler) -> None:
    for params in ({"uriPatterns": "at://*/fm.plyr.track/1"}, {"uriPatterns": "*", "cursor": "x"},
                   {"uriPatterns": "*", "limit": "251"}, {}):
        resp = await labeler.client.get(QUERY, params=params)
        assert resp.status == 400 and (await resp.json())["error"] == "InvalidRequest", params


async def test_query_answers_verify_with_the_served_key(labeler: Labeler) -> None:
    await labeler.emit(LabelDraft(TRACK, "porn", cid="bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"),
                       LabelDraft(ANN, "!hide", exp="2030-01-01T00:00:00.000Z"))
    raw = await (await labeler.client.get("/.well-known/did.json")).json()
    key = parse_did_document(SERVICE_DID, raw).verification_key("#atproto_label")
    assert key is not None
    labels = (await labeler.query(uriPatterns="*"))["labels"]
    assert len(labels) == 2
    for obj in labels:
        label = parse_label(obj, encoding="json")
        assert label.verify(key), obj
        forged = dataclasses.replace(label, val="other")
        assert not forged.verify(key)


async def test_negation_replaces_the_label_and_is_dated_after_it(labeler: Labeler) -> None:
    [label] = await labeler.emit(LabelDraft(TRACK, "!takedown"))
    [negation] = await labeler.emit(LabelDraft(TRACK, "!takedown", neg=True))
    assert negation.cts > label.cts  # within one millisecond too
    labels = (await labeler.query(uriPatterns=TRACK))["labels"]
    assert len(labels) == 1 and labels[0]["neg"] is True and labels[0]["cts"] == negation.cts
    # labelling again supersedes the negation
    [again] = await labeler.emit(LabelDraft(TRACK, "!takedown"))
    labels = (await labeler.query(uriPatterns=TRACK))["labels"]
    assert len(labels) == 1 and "neg" not in labels[0] and labels[0]["cts"] == again.cts > negation.cts


async def test_emit_refuses_bad_drafts_and_writes_nothing(labeler: Labeler) -> None:
    from protocol.labels import LabelError

    for bad in (LabelDraft("not a uri", "x"), LabelDraft(TRACK, "x" * 129), LabelDraft(TRACK, ""),
                LabelDraft(TRACK, "a\x00b"), LabelDraft(TRACK, "x", cid="nope")):
        with pytest.raises(LabelError):
            await labeler.emit(LabelDraft(ANN, "fine"), bad)
    assert (await labeler.query(uriPatterns="*"))["labels"] == []


async def test_emit_joins_the_callers_transaction(labeler: Labeler, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await emit_labels(conn, labeler.signer, [LabelDraft(TRACK, "!takedown")])
                raise RuntimeError("the caller's next statement failed")
    assert (await labeler.query(uriPatterns="*"))["labels"] == []


# -- subscribeLabels ------------------------------------------------------------------------------


async def test_subscribe_backfills_then_delivers_live(labeler: Labeler) -> None:
    first = await labeler.emit(LabelDraft(TRACK, "porn"), LabelDraft(ANN, "!hide"))
    async with labeler.client.ws_connect(SUBSCRIBE, params={"cursor": "0"}) as ws:
        seq1, got1 = await _labels(ws)
        seq2, got2 = await _labels(ws)
        assert seq1 < seq2 and [got1, got2] == first  # signatures and all
        [live] = await labeler.emit(LabelDraft(TRACK, "!warn"))
        seq3, got3 = await _labels(ws)
        assert seq3 > seq2 and got3 == live
    # from a cursor: only what follows it
    async with labeler.client.ws_connect(SUBSCRIBE, params={"cursor": str(seq2)}) as ws:
        assert await _labels(ws) == (seq3, live)


async def test_subscribe_without_cursor_is_live_only(labeler: Labeler) -> None:
    await labeler.emit(LabelDraft(TRACK, "porn"))
    async with labeler.client.ws_connect(SUBSCRIBE) as ws:
        await _joined(labeler)  # what commits before the subscriber starts is not live
        [live] = await labeler.emit(LabelDraft(ANN, "!hide"))
        _seq, got = await _labels(ws)
        assert got == live


async def test_subscribe_future_cursor_is_an_error_frame_then_close(labeler: Labeler) -> None:
    await labeler.emit(LabelDraft(TRACK, "porn"))
    async with labeler.client.ws_connect(SUBSCRIBE, params={"cursor": "1000"}) as ws:
        frame = await _frame(ws)
        assert isinstance(frame, ErrorMessage) and frame.error == "FutureCursor"
        closing = await ws.receive(timeout=FRAME_WAIT)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_negation_removes_the_label_from_the_stream(labeler: Labeler) -> None:
    await labeler.emit(LabelDraft(TRACK, "!takedown"), LabelDraft(ANN, "porn"))
    [negation] = await labeler.emit(LabelDraft(TRACK, "!takedown", neg=True))
    async with labeler.client.ws_connect(SUBSCRIBE, params={"cursor": "0"}) as ws:
        _, kept = await _labels(ws)
        seq, neg = await _labels(ws)
        assert kept.uri == ANN and neg == negation and neg.neg
        # nothing else is stored: a live label is the next frame
        [live] = await labeler.emit(LabelDraft(ANN, "!warn"))
        later, got = await _labels(ws)
        assert got == live and later > seq


async def test_subscribe_delivers_by_polling_without_listen(labeler_factory: Any) -> None:
    polled: Labeler = await labeler_factory(listen=False, poll_seconds=0.05)
    async with polled.client.ws_connect(SUBSCRIBE, params={"cursor": "0"}) as ws:
        [live] = await polled.emit(LabelDraft(TRACK, "porn"))
        assert (await _labels(ws))[1] == live


async def test_subscribe_refusals_before_the_upgrade(labeler_factory: Any) -> None:
    lab: Labeler = await labeler_factory(max_subscribers=1)
    plain = await lab.client.get(SUBSCRIBE)
    assert plain.status == 426 and (await plain.json())["error"] == "UpgradeRequired"
    post = await lab.client.post(SUBSCRIBE)
    assert post.status == 405
    bad = await lab.client.get(SUBSCRIBE, params={"cursor": "-1"})
    assert bad.status == 400
    async with lab.client.ws_connect(SUBSCRIBE, params={"cursor": "0"}) as _ws:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await lab.client.ws_connect(SUBSCRIBE)
        assert refused.value.status == 429


async def test_a_slow_subscriber_is_disconnected_not_buffered(labeler_factory: Any) -> None:
    lab: Labeler = await labeler_factory(send_buffer=1)
    async with lab.client.ws_connect(SUBSCRIBE) as ws:
        # once it has joined the fan-out, several frames at once overflow its one-frame buffer
        # before its sender runs (the fan-out offers without awaiting)
        await _joined(lab)
        await lab.emit(*(LabelDraft(TRACK, f"v{i}") for i in range(5)))
        seen: list[Any] = []
        while True:
            msg = await ws.receive(timeout=FRAME_WAIT)
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            seen.append(decode_label_frame(msg.data))
        assert isinstance(seen[-1], ErrorMessage) and seen[-1].error == "ConsumerTooSlow"
        assert len(seen) <= 3


async def test_prefix_and_exact_patterns_are_index_backed(pool: asyncpg.Pool) -> None:
    from appview.labeler.query import query_sql

    sql, args = query_sql([f"at://{ANN}/*", "at://did:web:a_%b/*", ANN], 0, 50)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a tiny table: ask what is possible
        # A statement's first executions are planned with their arguments (custom plans).
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
    assert plan.count("own_labels_uri") == 3 and "Seq Scan" not in plan, plan


async def test_labels_of_an_earlier_key_are_served_signed_by_the_current_one(labeler_factory: Any) -> None:
    old: Labeler = await labeler_factory()
    [label] = await old.emit(LabelDraft(TRACK, "porn"))
    rotated: Labeler = await labeler_factory()  # same database, a new key
    raw = await (await rotated.client.get("/.well-known/did.json")).json()
    key = parse_did_document(SERVICE_DID, raw).verification_key("#atproto_label")
    assert key == rotated.signer.key.public_key() and not label.verify(key)
    [served] = (await rotated.query(uriPatterns="*"))["labels"]
    resigned = parse_label(served, encoding="json")
    assert resigned.verify(key) and resigned.cts == label.cts
    async with rotated.client.ws_connect(SUBSCRIBE, params={"cursor": "0"}) as ws:
        _seq, streamed = await _labels(ws)
        assert streamed.verify(key) and dataclasses.replace(streamed, sig=None) == dataclasses.replace(label, sig=None)


async def test_shutdown_closes_subscribers_going_away(labeler: Labeler) -> None:
    async with labeler.client.ws_connect(SUBSCRIBE) as ws:
        await _joined(labeler)
        await labeler.client.app[LABEL_STREAM_KEY].shutdown()
        msg = await ws.receive(timeout=FRAME_WAIT)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY
