"""protocol.wire: CBOR heads and varints, against libipld and the encoders' own round trips."""

from __future__ import annotations

import libipld
import pytest

from protocol.wire import (
    MAX_VARINT_BYTES,
    TruncatedError,
    WireError,
    encode_head,
    encode_varint,
    read_head,
    read_varint,
)

EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


@pytest.mark.parametrize("arg", EDGES)
def test_heads_are_the_shortest_form_and_read_back(arg: int) -> None:
    assert encode_head(0, arg) == libipld.encode_dag_cbor(arg)
    for major in range(8):
        head = encode_head(major, arg)
        assert read_head(head + b"rest", 0) == (major, arg, len(head))


def test_bad_heads() -> None:
    with pytest.raises(WireError, match="64-bit"):
        encode_head(0, 2**64)
    with pytest.raises(WireError, match="indefinite"):
        read_head(b"\x5f", 0)  # indefinite-length byte string
    for cut in (b"", b"\x19\x01", b"\x1b" + bytes(7)):
        with pytest.raises(TruncatedError):
            read_head(cut, 0)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**21, 2**28, 2**63 - 1])
def test_varints_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert read_varint(b"x" + raw + b"y", 1) == (value, 1 + len(raw))
    assert read_varint(raw, 0, minimal=True) == (value, len(raw))
    with pytest.raises(TruncatedError):
        read_varint(raw, 0, len(raw) - 1)


def test_varint_limits() -> None:
    assert read_varint(b"\x81\x00", 0) == (1, 2)  # lenient: CAR framing accepts it
    with pytest.raises(WireError, match="non-minimal"):
        read_varint(b"\x81\x00", 0, minimal=True)
    with pytest.raises(WireError, match="too long"):
        read_varint(b"\xff" * MAX_VARINT_BYTES + b"\x01", 0)
    with pytest.raises(TruncatedError):
        read_varint(b"\x80\x80", 0)
