"""The two integer prefixes of atproto's binary formats: CBOR item heads and unsigned varints.

- A **CBOR head** starts every DAG-CBOR item: the major type in the top three bits of the first
  byte, then the argument (an int, a length or a count) either in the low five bits (< 24) or in
  the 1, 2, 4 or 8 big-endian bytes that follow (low bits 24..27). DAG-CBOR forbids the
  indefinite-length forms (28..31).
- An **unsigned varint** (LEB128, as multiformats uses it) frames CAR sections and spells the
  fields of a binary CID: seven bits per byte, low groups first, the top bit set on every byte
  but the last.

This is the one definition of both; indexer/backfill/car_index_python.py unrolls the varint
reader in its hot loop (tests/unit/protocol/test_wire.py checks that the two agree).
"""

from __future__ import annotations

from protocol.errors import ProtocolError

# Nine varint bytes carry 63 bits: enough for any length, and a bound on hostile input.
MAX_VARINT_BYTES = 9


class WireError(ProtocolError, ValueError):
    """A CBOR head or varint that cannot be read."""


class TruncatedError(WireError):
    """The data ends inside a head or varint (a stream reader may wait for more bytes)."""


def encode_head(major: int, arg: int) -> bytes:
    """The shortest CBOR head of major type ``major`` with argument ``arg`` (0 <= arg < 2**64)."""
    m = major << 5
    if arg < 24:
        return bytes((m | arg,))
    if arg < 0x100:
        return bytes((m | 24, arg))
    if arg < 0x10000:
        return bytes((m | 25,)) + arg.to_bytes(2, "big")
    if arg < 0x100000000:
        return bytes((m | 26,)) + arg.to_bytes(4, "big")
    if arg < 0x10000000000000000:
        return bytes((m | 27,)) + arg.to_bytes(8, "big")
    raise WireError("integer out of the 64-bit range")


def read_head(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int]:
    """(major type, argument, position after the head) of the CBOR head at ``buf[pos]``.

    For major type 7 (simple values and floats) the argument is the raw low-bits/following
    bytes, as for every other type; callers that care about floats read them from ``buf``.
    """
    if pos >= len(buf):
        raise TruncatedError("data ends before a CBOR head")
    first = buf[pos]
    info = first & 0x1F
    pos += 1
    if info < 24:
        return first >> 5, info, pos
    if info > 27:
        raise WireError("indefinite-length or reserved CBOR head")
    end = pos + (1 << (info - 24))
    if end > len(buf):
        raise TruncatedError("data ends inside a CBOR head")
    return first >> 5, int.from_bytes(buf[pos:end], "big"), end


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128 varint of ``n`` (>= 0)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(
    buf: bytes | bytearray | memoryview,
    pos: int,
    end: int | None = None,
    *,
    minimal: bool = False,
) -> tuple[int, int]:
    """(value, position after it) of the unsigned varint at ``buf[pos]``, reading before ``end``.

    TruncatedError when the data (up to ``end``) stops inside it; WireError when it is longer
    than MAX_VARINT_BYTES or, with ``minimal`` (multiformats' rule for CIDs), when it ends in a
    zero byte that a shorter encoding would not need. CAR framing reads lengths leniently,
    as the native reader does.
    """
    stop = len(buf) if end is None else end
    value = 0
    shift = 0
    while pos < stop:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if minimal and byte == 0 and shift:
                raise WireError("non-minimal varint")
            return value, pos
        shift += 7
        if shift >= 7 * MAX_VARINT_BYTES:
            raise WireError("varint too long")
    raise TruncatedError("truncated varint")
