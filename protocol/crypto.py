"""AT Protocol keys and signatures: K-256 and P-256 public/private keys, did:key and multikey.

Signatures are the 64-byte compact form (r || s, big-endian), over SHA-256 of the data, and must
be "low-S" (the spec forbids the malleable high-S twin); DER-encoded signatures are rejected.
Public keys are encoded as multikeys: multicodec prefix + compressed point, base58btc, "z" prefix.
The curve math is done by `cryptography` (OpenSSL); parsed keys are cached because signature
checks run on the indexer's hot path and the same few keys sign most commits.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import libipld
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from protocol.errors import ProtocolError

Curve = Literal["k256", "p256"]

DID_KEY_PREFIX = "did:key:"

# Varint-encoded multicodec prefixes: secp256k1-pub (0xe7) and p256-pub (0x1200).
_K256_CODEC = b"\xe7\x01"
_P256_CODEC = b"\x80\x24"

# Group orders, for the low-S rule and range checks.
_K256_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class _CurveInfo:
    __slots__ = ("name", "jwt_alg", "codec", "order", "half_order", "ec_curve")

    def __init__(
        self, name: Curve, jwt_alg: str, codec: bytes, order: int, ec_curve: ec.EllipticCurve
    ):
        self.name = name
        self.jwt_alg = jwt_alg
        self.codec = codec
        self.order = order
        self.half_order = order // 2
        self.ec_curve = ec_curve


_CURVES: dict[str, _CurveInfo] = {
    "k256": _CurveInfo("k256", "ES256K", _K256_CODEC, _K256_ORDER, ec.SECP256K1()),
    "p256": _CurveInfo("p256", "ES256", _P256_CODEC, _P256_ORDER, ec.SECP256R1()),
}
_ALG_TO_CURVE: dict[str, Curve] = {"ES256K": "k256", "ES256": "p256"}

# Legacy DID document verificationMethod types, naming the curve of a codec-less multibase key.
LEGACY_KEY_TYPES: dict[str, Curve] = {
    "EcdsaSecp256k1VerificationKey2019": "k256",
    "EcdsaSecp256r1VerificationKey2019": "p256",
}

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class KeyFormatError(ProtocolError, ValueError):
    """A key string or key bytes that are not a supported AT Protocol key."""


def _curve_info(curve: str) -> _CurveInfo:
    info = _CURVES.get(curve)
    if info is None:
        raise KeyFormatError(f"unsupported curve {curve!r} (expected k256 or p256)")
    return info


def curve_for_jwt_alg(alg: str) -> Curve | None:
    """The curve that a JWT `alg` value names ("ES256K" -> k256, "ES256" -> p256), else None."""
    return _ALG_TO_CURVE.get(alg)


class PublicKey:
    """A K-256 or P-256 public key that verifies AT Protocol (compact, low-S) signatures."""

    __slots__ = ("_info", "_key", "_compressed")

    def __init__(self, curve: Curve, point: bytes) -> None:
        """`point` is the SEC1 encoding: 33-byte compressed or 65-byte uncompressed."""
        info = _curve_info(curve)
        if len(point) not in (33, 65):
            raise KeyFormatError(f"{curve} public key must be 33 or 65 bytes, got {len(point)}")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(info.ec_curve, bytes(point))
        except ValueError as exc:
            raise KeyFormatError(f"not a valid {curve} curve point: {exc}") from None
        self._info = info
        self._key = key
        self._compressed = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )

    @property
    def curve(self) -> Curve:
        return self._info.name

    @property
    def jwt_alg(self) -> str:
        return self._info.jwt_alg

    def compressed(self) -> bytes:
        """The 33-byte compressed SEC1 point."""
        return self._compressed

    def uncompressed(self) -> bytes:
        """The 65-byte uncompressed SEC1 point (0x04 || x || y)."""
        return self._key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def multibase(self) -> str:
        """Multikey encoding: "z" + base58btc(multicodec prefix + compressed point)."""
        return libipld.encode_multibase("z", self._info.codec + self._compressed)

    def did_key(self) -> str:
        return DID_KEY_PREFIX + self.multibase()

    def verify(self, data: bytes, sig: bytes) -> bool:
        """True when `sig` is a valid 64-byte compact low-S signature of SHA-256(`data`).

        Never raises: anything malformed (wrong length, DER, high-S, out-of-range values, data
        that is not bytes) is simply not a valid signature.
        """
        try:
            if len(sig) != 64:
                return False
            r = int.from_bytes(sig[:32], "big")
            s = int.from_bytes(sig[32:], "big")
            # Low-S is required by the spec for both curves; r and s must be in [1, n-1].
            if not (0 < r < self._info.order) or not (0 < s <= self._info.half_order):
                return False
            self._key.verify(encode_dss_signature(r, s), bytes(data), _ECDSA_SHA256)
            return True
        except InvalidSignature:
            return False
        except (TypeError, ValueError):
            return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._info is other._info and self._compressed == other._compressed

    def __hash__(self) -> int:
        return hash((self._info.name, self._compressed))

    def __repr__(self) -> str:
        return f"PublicKey({self.did_key()!r})"


def _decode_base58btc(value: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("z") or len(value) < 2:
        raise KeyFormatError("multibase key must be a base58btc string starting with 'z'")
    # 1 KB is far above any key; refuse to spend time decoding huge hostile strings.
    if len(value) > 1024:
        raise KeyFormatError("multibase key is too long")
    try:
        return libipld.decode_multibase(value)[1]
    except ValueError:
        raise KeyFormatError("multibase key is not valid base58btc") from None


@lru_cache(maxsize=65536)
def parse_multikey(multibase: str) -> PublicKey:
    """Parse a multikey ("z" + base58btc(codec + point)), as in `publicKeyMultibase`.

    The codec selects the curve. Uncompressed points after the codec are accepted too (some
    early keys used them); `multibase()` always re-encodes compressed.
    """
    raw = _decode_base58btc(multibase)
    for info in _CURVES.values():
        if raw.startswith(info.codec):
            return PublicKey(info.name, raw[len(info.codec) :])
    raise KeyFormatError("multikey has an unknown multicodec prefix (expected k256 or p256)")


@lru_cache(maxsize=65536)
def parse_did_key(s: str) -> PublicKey:
    """Parse a `did:key:z...` identifier into a public key."""
    if not isinstance(s, str) or not s.startswith(DID_KEY_PREFIX):
        raise KeyFormatError("did:key must start with 'did:key:'")
    return parse_multikey(s[len(DID_KEY_PREFIX) :])


@lru_cache(maxsize=4096)
def parse_legacy_multibase(multibase: str, curve: Curve) -> PublicKey:
    """Parse a legacy DID-document key: base58btc of the bare point, no codec; curve from context.

    The spec describes uncompressed points; the interop fixtures also carry compressed ones, so
    both are accepted.
    """
    raw = _decode_base58btc(multibase)
    return PublicKey(curve, raw)


def verify_signature(did_key: str, data: bytes, sig: bytes) -> bool:
    """Verify `sig` over `data` with the key named by a did:key (False for a bad did:key too)."""
    try:
        key = parse_did_key(did_key)
    except KeyFormatError:
        return False
    return key.verify(data, sig)


class PrivateKey:
    """A K-256 or P-256 signing key; signs with SHA-256 and emits 64-byte low-S signatures."""

    __slots__ = ("_info", "_key")

    def __init__(self, curve: Curve, key: ec.EllipticCurvePrivateKey) -> None:
        self._info = _curve_info(curve)
        self._key = key

    @classmethod
    def generate(cls, curve: Curve = "k256") -> PrivateKey:
        info = _curve_info(curve)
        return cls(curve, ec.generate_private_key(info.ec_curve))

    @classmethod
    def from_bytes(cls, raw: bytes, curve: Curve = "k256") -> PrivateKey:
        """From the raw 32-byte big-endian secret scalar."""
        info = _curve_info(curve)
        if len(raw) != 32:
            raise KeyFormatError(f"private key must be 32 bytes, got {len(raw)}")
        secret = int.from_bytes(raw, "big")
        if not 0 < secret < info.order:
            raise KeyFormatError("private key scalar is out of range for the curve")
        return cls(curve, ec.derive_private_key(secret, info.ec_curve))

    def to_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    @property
    def curve(self) -> Curve:
        return self._info.name

    @property
    def jwt_alg(self) -> str:
        return self._info.jwt_alg

    def public_key(self) -> PublicKey:
        point = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        return PublicKey(self._info.name, point)

    def sign(self, data: bytes) -> bytes:
        """Sign SHA-256(`data`); returns the 64-byte compact r || s with s normalized to low-S."""
        r, s = decode_dss_signature(self._key.sign(bytes(data), _ECDSA_SHA256))
        if s > self._info.half_order:
            s = self._info.order - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:
        return f"PrivateKey(curve={self.curve!r}, public={self.public_key().did_key()!r})"
