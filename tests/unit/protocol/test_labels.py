"""protocol/labels.py: the label object, its signature, its frames and the labeler headers."""

from __future__ import annotations

import hashlib

import libipld
import pytest

from protocol.crypto import PrivateKey
from protocol.data_model import encode_dag_cbor_exact
from protocol.labels import (
    AcceptedLabeler,
    ErrorMessage,
    InfoMessage,
    Label,
    LabelError,
    LabelsMessage,
    decode_label_frame,
    encode_error_frame,
    encode_info_frame,
    encode_labels_frame,
    format_content_labelers,
    parse_accept_labelers,
    parse_label,
)

SRC = "did:plc:labeler0000000000000000"
TRACK = "at://did:plc:artist00000000000000000/fm.plyr.track/3kabcdefghij2"
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


def _label(**changes: object) -> Label:
    fields: dict[str, object] = {"src": SRC, "uri": TRACK, "val": "porn", "cts": "2026-12-02T10:00:00.000Z"}
    fields.update(changes)
    return Label(**fields)  # type: ignore[arg-type]


def test_signature_covers_the_drisl_encoding_of_the_schema_fields_without_sig() -> None:
    key = PrivateKey.generate()
    label = _label(cid=CID, exp="2027-01-01T00:00:00Z").signed(key)
    assert label.sig is not None and len(label.sig) == 64
    expected = encode_dag_cbor_exact(
        {"ver": 1, "src": SRC, "uri": TRACK, "cid": CID, "val": "porn", "cts": label.cts, "exp": label.exp}
    )
    assert label.signing_bytes() == expected
    # Independent check: libipld's canonical encoder agrees, and the key verifies the hash.
    assert libipld.encode_dag_cbor(label.unsigned_object()) == expected
    assert key.public_key().verify(expected, label.sig)
    assert hashlib.sha256(expected).digest()  # what is signed is SHA-256 of these bytes
    assert label.verify(key.public_key())


def test_any_changed_field_or_other_key_breaks_the_signature() -> None:
    key = PrivateKey.generate()
    label = _label().signed(key)
    assert not label.verify(PrivateKey.generate().public_key())
    for change in ({"val": "nudity"}, {"uri": TRACK + "x"}, {"neg": True}, {"cid": CID}, {"cts": "2026-12-02T10:00:01.000Z"}):
        forged = Label(**{**_fields(label), **change})  # type: ignore[arg-type]
        assert not forged.verify(key.public_key()), change
    assert not _label().verify(key.public_key())  # unsigned


def _fields(label: Label) -> dict[str, object]:
    return {name: getattr(label, name) for name in Label.__slots__}


def test_neg_false_is_not_encoded_and_neg_true_is() -> None:
    assert "neg" not in _label().unsigned_object()
    assert _label(neg=True).unsigned_object()["neg"] is True


def test_json_round_trip_keeps_the_signature_valid() -> None:
    key = PrivateKey.generate()
    label = _label(cid=CID).signed(key)
    as_json = label.to_json()
    assert set(as_json["sig"]) == {"$bytes"}
    again = parse_label({**as_json, "$type": "com.atproto.label.defs#label"}, encoding="json")
    assert again == label and again.verify(key.public_key())
    assert "sig" not in label.to_json(with_sig=False)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ver": 2}, "version"),
        ({"ver": None}, "ver"),
        ({"src": "not-a-did"}, "src"),
        ({"uri": "https://example.com"}, "uri"),
        ({"cid": "nope"}, "cid"),
        ({"val": ""}, "val"),
        ({"val": "x" * 129}, "val"),
        ({"neg": 1}, "neg"),
        ({"cts": "yesterday"}, "cts"),
        ({"exp": "soon"}, "exp"),
        ({"sig": b"short"}, "sig"),
    ],
)
def test_parse_refuses_what_breaks_the_schema(change: dict[str, object], message: str) -> None:
    obj = {**_label().signed(PrivateKey.generate()).to_ipld(), **change}
    with pytest.raises(LabelError, match=message):
        parse_label(obj)


def test_parse_accepts_an_account_subject() -> None:
    assert parse_label(_label(uri="did:plc:artist00000000000000000").to_ipld()).uri.startswith("did:")


def test_frames_round_trip_and_one_bad_label_does_not_spoil_the_frame() -> None:
    good = _label().signed(PrivateKey.generate())
    frame = encode_labels_frame(7, [good])
    assert decode_label_frame(frame) == LabelsMessage(7, [good])
    mixed = encode_dag_cbor_exact({"op": 1, "t": "#labels"}) + encode_dag_cbor_exact(
        {"seq": 8, "labels": [good.to_ipld(), {"ver": 1, "src": "bad"}]}
    )
    message = decode_label_frame(mixed)
    assert isinstance(message, LabelsMessage)
    assert message.labels[0] == good and isinstance(message.labels[1], LabelError)
    assert decode_label_frame(encode_info_frame("OutdatedCursor", "old")) == InfoMessage("OutdatedCursor", "old")
    assert decode_label_frame(encode_error_frame("FutureCursor")) == ErrorMessage("FutureCursor", None)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xff\xff",
        encode_dag_cbor_exact({"op": 1, "t": "#labels"}) + encode_dag_cbor_exact({"seq": -1, "labels": []}),
        encode_dag_cbor_exact({"op": 1, "t": "#labels"}) + encode_dag_cbor_exact({"seq": 1}),
        encode_dag_cbor_exact({"op": 1, "t": "#other"}) + encode_dag_cbor_exact({"seq": 1}),
        encode_dag_cbor_exact({"op": 2}) + encode_dag_cbor_exact({}),
        encode_dag_cbor_exact([1]) + encode_dag_cbor_exact({}),
    ],
)
def test_misshapen_frames_are_label_errors(frame: bytes) -> None:
    with pytest.raises(LabelError):
        decode_label_frame(frame)


def test_accept_labelers_header_merges_values_and_flags() -> None:
    parsed = parse_accept_labelers(["did:web:mod.example.com;redact, did:plc:abc123", " did:plc:abc123;redact,did:plc:xyz"])
    assert parsed == [
        AcceptedLabeler("did:web:mod.example.com", True),
        AcceptedLabeler("did:plc:abc123", True),
        AcceptedLabeler("did:plc:xyz", False),
    ]
    assert format_content_labelers(parsed) == "did:web:mod.example.com;redact, did:plc:abc123;redact, did:plc:xyz"
    assert parse_accept_labelers([""]) == []  # an empty header: hydrate nothing


@pytest.mark.parametrize(
    "value", ["not a did", "did:plc:abc,,did:plc:def", "did:plc:abc;Redact=?0", "x" * 5000, ",".join(["did:plc:a"] * 1) + ";;"]
)
def test_bad_accept_labelers_header_is_an_error(value: str) -> None:
    with pytest.raises(LabelError):
        parse_accept_labelers([value])


def test_accept_labelers_header_is_bounded_in_count() -> None:
    with pytest.raises(LabelError, match="more than"):
        parse_accept_labelers([",".join(f"did:plc:l{i}" for i in range(21))])
