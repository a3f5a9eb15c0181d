"""CIDs (content identifiers) in the binary and string forms atproto uses.

Binary form: throughout plyr a CID is the raw binary CID, ``bytes`` such as
``b"\\x01\\x71\\x12\\x20" + sha256_digest`` (version 1, codec, multihash code, digest length,
digest) -- 36 bytes for the "blessed" atproto formats. This is exactly the form libipld returns:
links inside blocks decoded by ``libipld.decode_dag_cbor``, the roots of a CAR header and the
keys of ``libipld.decode_car``'s block dict are all these raw bytes, *without* the 0x00
multibase-identity byte (that byte only exists inside the CBOR tag-42 payload on the wire).

String form: base32 lower-case multibase, ``"bafyrei..."`` for dag-cbor and ``"bafkrei..."`` for
raw blobs. ``cid_from_str`` also reads other multibase encodings and legacy CIDv0 ``Qm...``.

Verification: the atproto-blessed CIDs are CIDv1 with the sha2-256 hash and either the dag-cbor
(0x71) or raw (0x55) codec. ``verify_block`` recomputes SHA-256 over the bytes *as received*
(never over a re-encoding: re-encoding a decoded block can change it) and compares.
"""

from __future__ import annotations

import base64
import hashlib

import libipld

from protocol.errors import ProtocolError

CODEC_DAG_CBOR = 0x71
CODEC_RAW = 0x55
HASH_SHA2_256 = 0x12

# Every blessed CID starts with one of these four bytes (all fields fit one varint byte).
DAG_CBOR_PREFIX = bytes((0x01, CODEC_DAG_CBOR, HASH_SHA2_256, 0x20))
RAW_PREFIX = bytes((0x01, CODEC_RAW, HASH_SHA2_256, 0x20))
_BLESSED_PREFIXES = frozenset((DAG_CBOR_PREFIX, RAW_PREFIX))
BLESSED_CID_LEN = 36

_sha256 = hashlib.sha256


class CidError(ProtocolError, ValueError):
    """A CID that cannot be parsed."""


def cid_for_cbor(block: bytes) -> bytes:
    """CIDv1 (dag-cbor, sha2-256) of a DAG-CBOR block, in raw binary form."""
    return DAG_CBOR_PREFIX + _sha256(block).digest()


def cid_for_raw(data: bytes) -> bytes:
    """CIDv1 (raw codec, sha2-256) of arbitrary bytes, as used for blobs."""
    return RAW_PREFIX + _sha256(data).digest()


def is_blessed(cid: bytes) -> bool:
    """True for a CIDv1 with sha2-256 and the dag-cbor or raw codec (the atproto formats)."""
    return len(cid) == BLESSED_CID_LEN and cid[:4] in _BLESSED_PREFIXES


def is_dag_cbor_cid(cid: bytes) -> bool:
    """True for a blessed dag-cbor CID (what commits, MST nodes and records must use)."""
    return len(cid) == BLESSED_CID_LEN and cid[:4] == DAG_CBOR_PREFIX


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Read an unsigned LEB128 varint at ``pos``; return (value, next position).

    Raises CidError on truncation or on a varint longer than 9 bytes (values above 2^63).
    """
    value = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise CidError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift:
                # A trailing zero byte means the encoding was not minimal.
                raise CidError("non-minimal varint")
            return value, pos
        shift += 7
        if shift > 56:
            raise CidError("varint too long")


def cid_length(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """Length in bytes of the binary CID starting at ``buf[pos]`` (CIDv0 or CIDv1)."""
    if bytes(buf[pos : pos + 4]) in _BLESSED_PREFIXES:
        if len(buf) - pos < BLESSED_CID_LEN:
            raise CidError("truncated CID")
        return BLESSED_CID_LEN
    if bytes(buf[pos : pos + 2]) == b"\x12\x20":
        # CIDv0: a bare sha2-256 multihash.
        if len(buf) - pos < 34:
            raise CidError("truncated CID")
        return 34
    version, p = read_varint(buf, pos)
    if version != 1:
        raise CidError(f"unsupported CID version {version}")
    _codec, p = read_varint(buf, p)
    _hash_code, p = read_varint(buf, p)
    digest_len, p = read_varint(buf, p)
    if len(buf) - p < digest_len:
        raise CidError("truncated CID")
    return p + digest_len - pos


def parse_cid(cid: bytes) -> tuple[int, int, int, bytes]:
    """Split a binary CID into (version, codec, hash code, digest); CidError if malformed."""
    if len(cid) == BLESSED_CID_LEN and cid[:4] in _BLESSED_PREFIXES:
        return 1, cid[1], HASH_SHA2_256, cid[4:]
    if len(cid) == 34 and cid[:2] == b"\x12\x20":
        return 0, 0x70, HASH_SHA2_256, cid[2:]  # CIDv0 is implicitly dag-pb
    try:
        n = cid_length(cid, 0)
    except IndexError as exc:
        raise CidError("truncated CID") from exc
    if n != len(cid):
        raise CidError("trailing bytes after CID")
    version, p = read_varint(cid, 0)
    codec, p = read_varint(cid, p)
    hash_code, p = read_varint(cid, p)
    _digest_len, p = read_varint(cid, p)
    return version, codec, hash_code, bytes(cid[p:])


def cid_to_str(cid: bytes) -> str:
    """String form of a binary CID: base32 multibase ``b...`` (``Qm...`` for a CIDv0)."""
    if len(cid) == 34 and cid[:2] == b"\x12\x20":
        return libipld.encode_cid(cid)
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def cid_from_str(s: str) -> bytes:
    """Binary form of a CID string; CidError if it is not a valid CID."""
    if not isinstance(s, str) or len(s) < 2:
        raise CidError(f"not a CID string: {s!r}")
    if s[0] == "b":
        body = s[1:]
        if body != body.lower():
            raise CidError(f"not a CID string: {s!r}")
        try:
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        except ValueError as exc:
            raise CidError(f"not a CID string: {s!r}") from exc
    else:
        try:
            if s.startswith("Qm"):
                _, raw = libipld.decode_multibase("z" + s)
            else:
                _, raw = libipld.decode_multibase(s)
        except ValueError as exc:
            raise CidError(f"not a CID string: {s!r}") from exc
    parse_cid(raw)  # validates the structure
    if cid_to_str(raw) != s and s[0] == "b":
        # base32 has spare bits in its last character; reject non-canonical spellings.
        raise CidError(f"not a canonical CID string: {s!r}")
    return raw


def verify_block(cid: bytes, data: bytes | memoryview) -> bool:
    """True when ``data`` (the raw block bytes as received) hashes to ``cid``.

    Only blessed CIDs are accepted: CIDv1, sha2-256, dag-cbor or raw codec. Anything else
    (other hashes, CIDv0, malformed CIDs) is False.
    """
    return (
        len(cid) == BLESSED_CID_LEN
        and cid[:4] in _BLESSED_PREFIXES
        and _sha256(data).digest() == cid[4:]
    )


def cid_digest_matches(cid: str | bytes, data: bytes | memoryview) -> bool:
    """True when ``cid`` (string or binary) uses sha2-256 and its digest is SHA-256(data).

    Unlike ``verify_block`` the codec is not checked (useful for blobs whose CID may carry
    any codec). Unparseable CIDs give False.
    """
    try:
        raw = cid_from_str(cid) if isinstance(cid, str) else bytes(cid)
        _version, _codec, hash_code, digest = parse_cid(raw)
    except CidError:
        return False
    return hash_code == HASH_SHA2_256 and len(digest) == 32 and _sha256(data).digest() == digest
