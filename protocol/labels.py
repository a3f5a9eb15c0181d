"""Labels (specs/label.md): the signed label object, its frames on `subscribeLabels`, and the
`atproto-accept-labelers` / `atproto-content-labelers` headers.

A label is signed over the DAG-CBOR (DRISL) encoding of exactly its schema fields without
`sig` (`ver` included, `$type` and anything unknown excluded), hashed with SHA-256, with the
labeler's `#atproto_label` key. Parsing is strict: a label that breaks the schema is a
`LabelError` naming the field, never a half-read object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import libipld

from protocol.crypto import PrivateKey, PublicKey
from protocol.data_model import encode_dag_cbor_exact, ipld_to_json
from protocol.errors import ProtocolError
from protocol.syntax.datetimes import is_datetime
from protocol.syntax.identifiers import is_at_uri, is_cid, is_did

LABEL_VERSION = 1
MAX_VAL_BYTES = 128
SIG_BYTES = 64
# Header values beyond these are refused rather than parsed: a request names a few labelers.
MAX_ACCEPT_LABELERS = 20
MAX_ACCEPT_HEADER_CHARS = 4096

# Frame header types of com.atproto.label.subscribeLabels.
LABELS_FRAME = "#labels"
INFO_FRAME = "#info"


class LabelError(ProtocolError, ValueError):
    """A label, a labels frame or a labelers header that breaks the spec."""


@dataclass(frozen=True, slots=True)
class Label:
    """One label (com.atproto.label.defs#label, version 1)."""

    src: str
    uri: str
    val: str
    cts: str
    cid: str | None = None
    neg: bool = False
    exp: str | None = None
    ver: int = LABEL_VERSION
    sig: bytes | None = None

    def unsigned_object(self) -> dict[str, Any]:
        """The object that is signed: schema fields only, no `sig`, `neg` only when true."""
        obj: dict[str, Any] = {"ver": self.ver, "src": self.src, "uri": self.uri, "val": self.val, "cts": self.cts}
        if self.cid is not None:
            obj["cid"] = self.cid
        if self.neg:
            obj["neg"] = True
        if self.exp is not None:
            obj["exp"] = self.exp
        return obj

    def signing_bytes(self) -> bytes:
        return encode_dag_cbor_exact(self.unsigned_object())

    def signed(self, key: PrivateKey) -> Label:
        return replace(self, sig=key.sign(self.signing_bytes()))

    def verify(self, key: PublicKey) -> bool:
        """True when `sig` is this label's signature by `key` (False when unsigned)."""
        return self.sig is not None and key.verify(self.signing_bytes(), self.sig)

    def to_ipld(self) -> dict[str, Any]:
        """The label as it travels in a CBOR frame (`sig` as bytes)."""
        obj = self.unsigned_object()
        if self.sig is not None:
            obj["sig"] = self.sig
        return obj

    def to_json(self, *, with_sig: bool = True) -> dict[str, Any]:
        """The lexicon JSON form (`sig` as `{"$bytes": base64}`); views drop the signature."""
        obj = self.unsigned_object()
        if with_sig and self.sig is not None:
            obj["sig"] = ipld_to_json(self.sig)
        return obj


def _field(obj: dict[str, Any], name: str, required: bool) -> Any:
    value = obj.get(name)
    if value is None and required:
        raise LabelError(f"label has no {name!r}")
    return value


def parse_label(obj: Any, *, encoding: Literal["cbor", "json"] = "cbor") -> Label:
    """A Label from a decoded object: a CBOR frame's (`sig` as bytes) or the JSON form
    (`sig` as `{"$bytes": ...}`). `ver` must be 1; unknown fields (e.g. `$type`) are ignored,
    as the spec signs only the schema fields."""
    if not isinstance(obj, dict):
        raise LabelError("label is not an object")
    ver = _field(obj, "ver", required=True)
    if type(ver) is not int or ver != LABEL_VERSION:
        raise LabelError(f"label version {ver!r:.20} is not {LABEL_VERSION}")
    src = _field(obj, "src", required=True)
    if not isinstance(src, str) or not is_did(src):
        raise LabelError(f"label src {src!r:.80} is not a DID")
    uri = _field(obj, "uri", required=True)
    if not isinstance(uri, str) or not (is_at_uri(uri) or is_did(uri)):
        raise LabelError(f"label uri {uri!r:.200} is neither an at:// URI nor a DID")
    cid = _field(obj, "cid", required=False)
    if cid is not None and (not isinstance(cid, str) or not is_cid(cid)):
        raise LabelError(f"label cid {cid!r:.80} is not a CID")
    val = _field(obj, "val", required=True)
    if not isinstance(val, str) or not val or len(val.encode()) > MAX_VAL_BYTES:
        raise LabelError(f"label val {val!r:.80} is empty or longer than {MAX_VAL_BYTES} bytes")
    neg = obj.get("neg", False)
    if type(neg) is not bool:
        raise LabelError(f"label neg {neg!r:.20} is not a boolean")
    cts = _field(obj, "cts", required=True)
    if not isinstance(cts, str) or not is_datetime(cts):
        raise LabelError(f"label cts {cts!r:.40} is not a datetime")
    exp = _field(obj, "exp", required=False)
    if exp is not None and (not isinstance(exp, str) or not is_datetime(exp)):
        raise LabelError(f"label exp {exp!r:.40} is not a datetime")
    sig = obj.get("sig")
    if sig is not None:
        if encoding == "json":
            if not isinstance(sig, dict) or set(sig) != {"$bytes"}:
                raise LabelError("label sig is not a {'$bytes': ...} object")
            try:
                sig = libipld.decode_multibase("m" + sig["$bytes"].rstrip("="))[1]
            except (ValueError, TypeError, AttributeError):
                raise LabelError("label sig is not base64") from None
        if not isinstance(sig, bytes) or len(sig) != SIG_BYTES:
            raise LabelError(f"label sig is not {SIG_BYTES} bytes")
    return Label(src=src, uri=uri, val=val, cts=cts, cid=cid, neg=neg, exp=exp, ver=ver, sig=sig)


# --- com.atproto.label.subscribeLabels frames -------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelsMessage:
    """A `#labels` frame: its seq and the labels in it, each parsed, or the LabelError that
    refused it (one bad label does not spoil the others)."""

    seq: int
    labels: list[Label | LabelError]


@dataclass(frozen=True, slots=True)
class InfoMessage:
    name: str
    message: str | None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    error: str
    message: str | None


LabelStreamMessage = LabelsMessage | InfoMessage | ErrorMessage
_SEQ_MAX = 2**63 - 1


def _short_text(value: Any, limit: int = 500) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def decode_label_frame(frame: bytes) -> LabelStreamMessage:
    """One binary WebSocket message of subscribeLabels. Raises LabelError when the frame itself
    is undecodable or misshapen (callers record it and go on); an unknown `t` is a LabelError
    too (the spec lets clients ignore them: the caller decides)."""
    try:
        header, body = libipld.decode_dag_cbor_multi(frame)
    except (ValueError, TypeError) as exc:
        raise LabelError(f"undecodable labels frame: {exc!s:.200}") from None
    if not isinstance(header, dict) or not isinstance(body, dict):
        raise LabelError("labels frame header or body is not a map")
    op = header.get("op")
    if op == -1:
        return ErrorMessage(_short_text(body.get("error"), 100) or "?", _short_text(body.get("message")))
    if op != 1:
        raise LabelError(f"labels frame with op {op!r:.20}")
    t = header.get("t")
    if t == INFO_FRAME:
        return InfoMessage(_short_text(body.get("name"), 100) or "?", _short_text(body.get("message")))
    if t != LABELS_FRAME:
        raise LabelError(f"unknown labels frame type {t!r:.40}")
    seq = body.get("seq")
    if type(seq) is not int or not 0 <= seq <= _SEQ_MAX:
        raise LabelError(f"labels frame with an invalid seq {seq!r:.40}")
    raw_labels = body.get("labels")
    if not isinstance(raw_labels, list):
        raise LabelError("labels frame without a labels list")
    labels: list[Label | LabelError] = []
    for raw in raw_labels:
        try:
            labels.append(parse_label(raw, encoding="cbor"))
        except LabelError as exc:
            labels.append(exc)
    return LabelsMessage(seq, labels)


def encode_labels_frame(seq: int, labels: list[Label]) -> bytes:
    return encode_dag_cbor_exact({"op": 1, "t": LABELS_FRAME}) + encode_dag_cbor_exact(
        {"seq": seq, "labels": [label.to_ipld() for label in labels]}
    )


def encode_info_frame(name: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"name": name}
    if message is not None:
        body["message"] = message
    return encode_dag_cbor_exact({"op": 1, "t": INFO_FRAME}) + encode_dag_cbor_exact(body)


def encode_error_frame(error: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": error}
    if message is not None:
        body["message"] = message
    return encode_dag_cbor_exact({"op": -1}) + encode_dag_cbor_exact(body)


# --- atproto-accept-labelers / atproto-content-labelers -----------------------------------------

ACCEPT_LABELERS_HEADER = "atproto-accept-labelers"
CONTENT_LABELERS_HEADER = "atproto-content-labelers"
_PARAM = re.compile(r"^[a-z*][a-z0-9_.*-]*$")


@dataclass(frozen=True, slots=True)
class AcceptedLabeler:
    did: str
    redact: bool = False


def parse_accept_labelers(values: list[str]) -> list[AcceptedLabeler]:
    """The labelers a request accepts, from every `atproto-accept-labelers` header value (they
    merge). Duplicates merge their flags; order is first appearance. An empty header is an empty
    list (hydrate nothing); bad syntax is a LabelError (the spec wants an error, not a guess).
    Only `redact` means something; other boolean parameters are accepted and ignored."""
    text = ",".join(values)
    if len(text) > MAX_ACCEPT_HEADER_CHARS:
        raise LabelError(f"{ACCEPT_LABELERS_HEADER} is longer than {MAX_ACCEPT_HEADER_CHARS} characters")
    merged: dict[str, bool] = {}
    for item in text.split(","):
        item = item.strip(" \t")
        if not item:
            if text.strip(" \t,"):
                raise LabelError(f"{ACCEPT_LABELERS_HEADER} has an empty item")
            continue
        did, *params = [part.strip(" \t") for part in item.split(";")]
        if not is_did(did):
            raise LabelError(f"{ACCEPT_LABELERS_HEADER}: {did!r:.100} is not a DID")
        redact = merged.get(did, False)
        for param in params:
            if not _PARAM.match(param):
                raise LabelError(f"{ACCEPT_LABELERS_HEADER}: bad parameter {param!r:.40}")
            redact = redact or param == "redact"
        merged[did] = redact
    if len(merged) > MAX_ACCEPT_LABELERS:
        raise LabelError(f"{ACCEPT_LABELERS_HEADER} names more than {MAX_ACCEPT_LABELERS} labelers")
    return [AcceptedLabeler(did, redact) for did, redact in merged.items()]


def format_content_labelers(labelers: list[AcceptedLabeler]) -> str:
    return ", ".join(f"{item.did};redact" if item.redact else item.did for item in labelers)
