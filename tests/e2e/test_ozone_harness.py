"""The real-labeler harness works end to end, and our label code reads a real labeler.

Against the session's Ozone (tests/e2e/ozone): a moderator labels a plyr record and an account
through the PDS; `com.atproto.label.subscribeLabels?cursor=0` replays them in frames that
`protocol.labels.decode_label_frame` parses, signed with the `#atproto_label` key of Ozone's DID
document as our identity code resolves it from the PLC (the legacy key form); a negation arrives
live on the open stream; `queryLabels` answers the same labels in JSON, which verify too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType

import aiohttp
import pytest

from core.identity import resolver_from_env
from protocol.crypto import PublicKey
from protocol.labels import (
    InfoMessage,
    Label,
    LabelError,
    LabelsMessage,
    decode_label_frame,
    parse_label,
)

from .ozone_network import OzoneNetwork

pytestmark = pytest.mark.e2e

WAIT_S = 60.0  # bound on each wait for a label to show up (they come within a second here)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class LabelStream:
    """An open subscribeLabels WebSocket; keeps every labels frame it read, in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[LabelsMessage] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def __aenter__(self) -> LabelStream:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, max_msg_size=1 << 20)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    @property
    def labels(self) -> list[Label]:
        out: list[Label] = []
        for message in self.messages:
            for label in message.labels:
                assert not isinstance(label, LabelError), label  # Ozone's labels all parse
                out.append(label)
        return out

    async def until(self, done: Callable[[list[Label]], bool], within_s: float = WAIT_S) -> list[Label]:
        """Read frames until `done(all labels so far)`; fails after `within_s` seconds."""
        assert self._ws is not None
        deadline = time.monotonic() + within_s
        while not done(self.labels):
            left = deadline - time.monotonic()
            assert left > 0, f"labels wanted did not arrive within {within_s}s; got {self.labels}"
            msg = await self._ws.receive(timeout=left)
            assert msg.type == aiohttp.WSMsgType.BINARY, f"unexpected message {msg.type}: {msg.data!r:.200}"
            frame = decode_label_frame(msg.data)
            if isinstance(frame, InfoMessage):  # e.g. OutdatedCursor: informative only
                continue
            assert isinstance(frame, LabelsMessage), frame
            self.messages.append(frame)
        return self.labels


async def label_key(net: OzoneNetwork, monkeypatch: pytest.MonkeyPatch) -> PublicKey:
    """Ozone's #atproto_label key, resolved by our identity code from the harness's PLC."""
    for name, value in net.identity_env().items():
        monkeypatch.setenv(name, value)
    async with resolver_from_env() as resolver:
        doc = await resolver.resolve_did(net.ozone_did, fresh=True)
    key = doc.verification_key("#atproto_label")
    assert key is not None, doc.raw
    return key


async def test_ozone_did_document(ozone_network: OzoneNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    net = ozone_network
    for name, value in net.identity_env().items():
        monkeypatch.setenv(name, value)
    async with resolver_from_env() as resolver:
        doc = await resolver.resolve_did(net.ozone_did, fresh=True)
    assert doc.service_endpoint("#atproto_labeler", "AtprotoLabeler") == net.ozone_public_url
    label_key = doc.verification_key("#atproto_label")
    assert label_key is not None and label_key.curve == "k256"
    # The PLC writes the label key in the older form, not Multikey: our parser takes both.
    entry = next(m for m in doc.raw["verificationMethod"] if m["id"].endswith("#atproto_label"))
    assert entry["type"] == "EcdsaSecp256k1VerificationKey2019"
    # The labeler's signing key is not its repo key (#atproto).
    assert doc.signing_key is not None and doc.signing_key.compressed() != label_key.compressed()


async def test_labels_stream_verify_and_negate_live(
    ozone_network: OzoneNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = ozone_network
    key = await label_key(net, monkeypatch)
    async with net.client() as pds:
        user = await net.new_account(pds, "labelled")
        uri, cid = await pds.create_record(
            user,
            "fm.plyr.track",
            {"title": "Label me", "artist": "e2e", "fileType": "mp3", "createdAt": now()},
        )
        mod = await net.moderator_session(pds)
        await mod.label(uri, cid=cid, create=["rude", "!hide"])
        await mod.label(user.did, create=["spam"])

        async with LabelStream(net.subscribe_labels_url(cursor=0)) as stream:

            def ours(labels: list[Label]) -> list[Label]:
                return [x for x in labels if x.uri in (uri, user.did)]

            got = ours(await stream.until(lambda ls: len(ours(ls)) >= 3))
            assert {(x.uri, x.cid, x.val, x.neg) for x in got} == {
                (uri, cid, "rude", False),
                (uri, cid, "!hide", False),
                (user.did, None, "spam", False),
            }
            for label in stream.labels:
                assert label.src == net.ozone_did
                assert label.verify(key), label
            seqs = [m.seq for m in stream.messages]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

            # A negation reaches the stream that is already open.
            await mod.label(uri, cid=cid, negate=["!hide"])
            await stream.until(lambda ls: any(x.uri == uri and x.neg for x in ls))
            neg = next(x for x in stream.labels if x.uri == uri and x.neg)
            assert (neg.val, neg.cid, neg.src) == ("!hide", cid, net.ozone_did)
            assert neg.verify(key)
            # A signature covers every field: the same label claiming not to be a negation fails.
            assert not replace(neg, neg=False).verify(key)

        # queryLabels: the JSON form, `sig` as {"$bytes": ...}; the negation replaced the label
        # it negates, the others stand.
        async with aiohttp.ClientSession() as http, http.get(
            f"{net.ozone_url}/xrpc/com.atproto.label.queryLabels",
            params=[("uriPatterns", uri), ("uriPatterns", user.did), ("limit", "50")],
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        labels = [parse_label(obj, encoding="json") for obj in body["labels"]]
        assert all(x.verify(key) for x in labels), labels
        assert {(x.uri, x.val, x.neg) for x in labels} == {
            (uri, "rude", False),
            (uri, "!hide", True),
            (user.did, "spam", False),
        }
