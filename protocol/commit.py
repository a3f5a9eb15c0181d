"""Signed repository commits: parse, encode, sign and verify (repo format v3).

A commit block is the DAG-CBOR map ``{did, version, data, rev, prev, sig}`` (see
specs/repository.md). The signature covers SHA-256 of the DAG-CBOR of the same map without
``sig`` (the hashing is done by protocol.crypto's sign/verify).

Signatures are checked against the bytes *received*: the unsigned form is cut out of the raw
block (the ``sig`` entry removed, the map length decremented) rather than re-encoded from decoded
values, so unknown extra fields and exotic encodings cannot make a valid signature fail or an
invalid one pass. Commits are also encoded by hand, never with ``libipld.encode_dag_cbor``,
which would write a signature that happens to parse as a CID as a link (see data_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import libipld

from protocol.cid import is_dag_cbor_cid
from protocol.data_model import Link, encode_dag_cbor_exact
from protocol.errors import ProtocolError
from protocol.wire import WireError, read_head


class CommitError(ProtocolError, ValueError):
    """A block that is not a well-formed repository commit."""


class _Signer(Protocol):
    def sign(self, data: bytes) -> bytes: ...


class SigningKey(Protocol):
    """A public key that checks signatures (protocol.crypto.PublicKey is one)."""

    def verify(self, data: bytes, sig: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Commit:
    did: str
    version: int
    data: bytes  # binary CID of the MST root
    rev: str
    prev: bytes | None
    sig: bytes


def parse_commit(raw_block: bytes) -> Commit:
    """Decode and shape-check a commit block (version 3, or legacy 2); CommitError otherwise."""
    try:
        obj = libipld.decode_dag_cbor(raw_block)
    except (ValueError, RecursionError) as exc:
        raise CommitError(f"commit is not valid DAG-CBOR: {exc}") from exc
    if not isinstance(obj, dict):
        raise CommitError("commit is not a map")
    version = obj.get("version")
    if type(version) is not int or version not in (2, 3):
        raise CommitError(f"unsupported commit version {version!r}")
    did = obj.get("did")
    if not isinstance(did, str) or not did.startswith("did:"):
        raise CommitError("commit did is missing or not a DID")
    data = obj.get("data")
    if not isinstance(data, bytes) or not is_dag_cbor_cid(data):
        raise CommitError("commit data is not a dag-cbor CID link")
    rev = obj.get("rev")
    if version == 3:
        if not isinstance(rev, str) or not rev:
            raise CommitError("commit rev is missing")
        if "prev" not in obj:
            raise CommitError("v3 commit must have a prev field (null allowed)")
    elif rev is None:
        rev = ""
    elif not isinstance(rev, str):
        raise CommitError("commit rev is not a string")
    prev = obj.get("prev")
    if prev is not None and (not isinstance(prev, bytes) or not is_dag_cbor_cid(prev)):
        raise CommitError("commit prev is not a dag-cbor CID link")
    sig = obj.get("sig")
    if not isinstance(sig, bytes):
        raise CommitError("commit sig is missing or not bytes")
    return Commit(did=did, version=version, data=data, rev=rev, prev=prev, sig=sig)


def _unsigned_map(commit: Commit) -> dict[str, object]:
    out: dict[str, object] = {
        "did": commit.did,
        "version": commit.version,
        "data": Link(commit.data),
        "prev": Link(commit.prev) if commit.prev is not None else None,
    }
    if commit.rev or commit.version >= 3:
        out["rev"] = commit.rev
    return out


def unsigned_bytes(commit: Commit) -> bytes:
    """DAG-CBOR of the commit without ``sig``: the bytes the signature covers."""
    return encode_dag_cbor_exact(_unsigned_map(commit))


def encode_commit(commit: Commit) -> bytes:
    """DAG-CBOR block of a signed commit."""
    obj = _unsigned_map(commit)
    obj["sig"] = bytes(commit.sig)
    return encode_dag_cbor_exact(obj)


def sign_commit(
    *, did: str, data: bytes, rev: str, key: _Signer, prev: bytes | None = None, version: int = 3
) -> Commit:
    """Build and sign a commit with ``key`` (a protocol.crypto.PrivateKey)."""
    unsigned = Commit(did=did, version=version, data=data, rev=rev, prev=prev, sig=b"")
    sig = key.sign(unsigned_bytes(unsigned))
    return Commit(did=did, version=version, data=data, rev=rev, prev=prev, sig=sig)


# ---------------------------------------------------------------- raw-byte signature check


def _arg(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(major type, argument, next pos) of the CBOR head at ``pos``."""
    try:
        return read_head(buf, pos)
    except WireError as exc:
        raise CommitError(f"bad CBOR head in commit: {exc}") from None


def _item_end(buf: bytes, pos: int, depth: int = 0) -> int:
    """Position just after the CBOR item starting at ``pos``."""
    if depth > 64:
        raise CommitError("commit nested too deep")
    major, arg, pos = _arg(buf, pos)
    if major in (2, 3):
        return pos + arg
    if major == 4:
        for _ in range(arg):
            pos = _item_end(buf, pos, depth + 1)
        return pos
    if major == 5:
        for _ in range(2 * arg):
            pos = _item_end(buf, pos, depth + 1)
        return pos
    if major == 6:
        return _item_end(buf, pos, depth + 1)
    return pos  # ints and simple values: the argument was the whole item


def unsigned_bytes_from_block(raw_block: bytes) -> bytes:
    """The signed-over bytes, cut out of a received commit block (the ``sig`` entry removed)."""
    major, count, pos = _arg(raw_block, 0)
    if major != 5:
        raise CommitError("commit is not a map")
    kept: list[bytes] = []
    found = False
    for _ in range(count):
        key_start = pos
        kmajor, klen, kpos = _arg(raw_block, pos)
        if kmajor != 3:
            raise CommitError("commit map key is not a string")
        key = raw_block[kpos : kpos + klen]
        value_end = _item_end(raw_block, kpos + klen)
        if key == b"sig":
            found = True
        else:
            kept.append(raw_block[key_start:value_end])
        pos = value_end
    if not found:
        raise CommitError("commit has no sig")
    # The map head for count-1 entries; counts stay small, so a one-byte head suffices.
    if count - 1 >= 24:
        raise CommitError("commit map too large")
    return bytes((0xA0 | (count - 1),)) + b"".join(kept)


def verify_commit_signature(raw_block: bytes, public_key: SigningKey) -> bool:
    """True when the commit block is well formed and signed by ``public_key``."""
    try:
        commit = parse_commit(raw_block)
        unsigned = unsigned_bytes_from_block(bytes(raw_block))
    except (CommitError, IndexError):
        return False
    return public_key.verify(unsigned, commit.sig)
