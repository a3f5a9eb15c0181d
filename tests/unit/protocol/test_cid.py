"""CIDs: binary/string forms, hashing helpers, block verification."""

from __future__ import annotations

import base64
import hashlib

import libipld
import pytest

from protocol.cid import (
    CidError,
    cid_digest_matches,
    cid_for_cbor,
    cid_for_raw,
    cid_from_str,
    cid_length,
    cid_to_str,
    is_blessed,
    parse_cid,
    verify_block,
)
from tests.conftest import reference_json, require_reference


def _fixtures() -> list[dict]:
    return reference_json("interop/data-model/data-model-fixtures.json")


@pytest.mark.parametrize("fx", _fixtures(), ids=lambda f: f["cid"][:16])
def test_cid_for_cbor_matches_fixture(fx: dict) -> None:
    block = base64.b64decode(fx["cbor_base64"] + "==")
    cid = cid_for_cbor(block)
    assert cid_to_str(cid) == fx["cid"]
    assert cid_from_str(fx["cid"]) == cid
    assert libipld.encode_cid(cid) == fx["cid"]
    assert verify_block(cid, block)
    assert not verify_block(cid, block + b"\x00")


def test_binary_form_is_libipld_link_form() -> None:
    """Links inside decoded blocks are raw binary CIDs with no 0x00 prefix, like ours."""
    require_reference("interop/data-model/data-model-fixtures.json")
    target = cid_for_cbor(b"\xa0")
    block = base64.b64decode(_fixtures()[1]["cbor_base64"] + "==")
    link = libipld.decode_dag_cbor(block)["a"]
    assert isinstance(link, bytes) and link[:1] == b"\x01" and len(link) == 36
    assert cid_to_str(link) == "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
    encoded = libipld.encode_dag_cbor({"x": target})
    assert libipld.decode_dag_cbor(encoded)["x"] == target
    # On the wire the tag-42 payload carries the 0x00 multibase prefix; decoded form does not.
    assert b"\x00" + target in encoded


def test_raw_codec_for_blobs() -> None:
    data = b"\xff\xd8 not really a jpeg"
    cid = cid_for_raw(data)
    s = cid_to_str(cid)
    assert s.startswith("bafkrei")
    assert parse_cid(cid) == (1, 0x55, 0x12, hashlib.sha256(data).digest())
    assert verify_block(cid, data)
    assert libipld.decode_cid(s)["codec"] == 0x55


def test_verify_block_rejects_other_cids() -> None:
    data = b"abc"
    digest = hashlib.sha256(data).digest()
    dag_pb = bytes((0x01, 0x70, 0x12, 0x20)) + digest
    v0 = b"\x12\x20" + digest
    blake = bytes((0x01, 0x71, 0x1E, 0x20)) + digest
    assert not verify_block(dag_pb, data)
    assert not verify_block(v0, data)
    assert not verify_block(blake, data)
    assert not verify_block(b"", data)
    assert not verify_block(cid_for_cbor(data)[:-1], data)
    # Digest matching ignores the codec but still insists on sha2-256.
    assert cid_digest_matches(dag_pb, data)
    assert cid_digest_matches(cid_to_str(dag_pb), data)
    assert cid_digest_matches(v0, data)
    assert not cid_digest_matches(blake, data)
    assert not cid_digest_matches("not a cid", data)
    assert not cid_digest_matches(dag_pb, b"abd")


def test_string_round_trip_and_errors() -> None:
    cid = cid_for_cbor(b"\xa1aa\x01")
    s = cid_to_str(cid)
    assert s.startswith("bafyrei") and s == libipld.encode_cid(cid)
    assert cid_from_str(s) == cid
    assert cid_from_str(s.upper()) == cid  # multibase "B" is base32 upper-case
    v0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
    raw = cid_from_str(v0)
    assert raw[:2] == b"\x12\x20" and cid_to_str(raw) == v0
    for bad in ["", "b", "bafyreiINVALID", "B" + s[1:].upper() + "!", "xyz", s + "a"]:
        with pytest.raises(CidError):
            cid_from_str(bad)


def test_parse_cid_general_and_truncated() -> None:
    digest = hashlib.sha256(b"x").digest()
    odd = bytes((0x01, 0x81, 0x01, 0x12, 0x20)) + digest  # two-byte codec varint (0x81)
    assert parse_cid(odd) == (1, 0x81, 0x12, digest)
    assert cid_length(odd + b"tail") == len(odd)
    assert is_blessed(cid_for_cbor(b"x")) and not is_blessed(odd)
    with pytest.raises(CidError):
        parse_cid(odd[:-1])
    with pytest.raises(CidError):
        parse_cid(odd + b"\x00")
    with pytest.raises(CidError):
        parse_cid(bytes((0x02, 0x71, 0x12, 0x20)) + digest)
    with pytest.raises(CidError):
        parse_cid(b"\x01\xff")
