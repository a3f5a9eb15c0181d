"""Keys and signatures against the atproto interop fixtures, plus round trips on both curves."""

from __future__ import annotations

import base64
import time

import libipld
import pytest

from protocol.crypto import (
    KeyFormatError,
    PrivateKey,
    PublicKey,
    parse_did_key,
    parse_legacy_multibase,
    parse_multikey,
    verify_signature,
)
from tests.conftest import reference_json, require_reference

K256_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ORDERS = {"k256": K256_ORDER, "p256": P256_ORDER}


def _b64(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))


def _load(name: str) -> list[dict]:
    return reference_json(f"interop/crypto/{name}")


SIGNATURE_FIXTURES = _load("signature-fixtures.json")


@pytest.mark.parametrize("case", SIGNATURE_FIXTURES, ids=lambda c: c["comment"])
def test_signature_fixtures(case: dict) -> None:
    key = parse_did_key(case["publicKeyDid"])
    assert key.jwt_alg == case["algorithm"]
    message = _b64(case["messageBase64"])
    signature = _b64(case["signatureBase64"])
    assert key.verify(message, signature) is case["validSignature"]
    assert verify_signature(case["publicKeyDid"], message, signature) is case["validSignature"]
    # The legacy (codec-less) multibase form names the same key; the curve comes from the suite.
    curve = "k256" if case["didDocSuite"] == "EcdsaSecp256k1VerificationKey2019" else "p256"
    assert parse_legacy_multibase(case["publicKeyMultibase"], curve) == key


def test_fixtures_cover_high_s_and_der() -> None:
    require_reference("interop/crypto/signature-fixtures.json")
    tags = {tag for case in SIGNATURE_FIXTURES for tag in case["tags"]}
    assert {"high-s", "der-encoded"} <= tags
    assert any(case["validSignature"] for case in SIGNATURE_FIXTURES)


@pytest.mark.parametrize("case", _load("w3c_didkey_K256.json"), ids=lambda c: c["publicDidKey"])
def test_didkey_k256_fixtures(case: dict) -> None:
    private = PrivateKey.from_bytes(bytes.fromhex(case["privateKeyBytesHex"]), "k256")
    assert private.public_key().did_key() == case["publicDidKey"]
    parsed = parse_did_key(case["publicDidKey"])
    assert parsed.curve == "k256" and parsed.jwt_alg == "ES256K"
    assert parsed == private.public_key()
    assert parsed.did_key() == case["publicDidKey"]


@pytest.mark.parametrize("case", _load("w3c_didkey_P256.json"), ids=lambda c: c["publicDidKey"])
def test_didkey_p256_fixtures(case: dict) -> None:
    raw = libipld.decode_multibase("z" + case["privateKeyBytesBase58"])[1]
    private = PrivateKey.from_bytes(raw, "p256")
    assert private.to_bytes() == raw
    assert private.public_key().did_key() == case["publicDidKey"]
    parsed = parse_did_key(case["publicDidKey"])
    assert parsed.curve == "p256" and parsed.jwt_alg == "ES256"
    assert parsed.did_key() == case["publicDidKey"]


def test_spec_examples_and_legacy_uncompressed() -> None:
    assert parse_multikey("zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo").curve == "p256"
    assert parse_multikey("zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc").curve == "k256"
    # DID spec: the same K-256 key in the legacy (uncompressed, no codec) and current encodings.
    legacy = parse_legacy_multibase(
        "zQYEBzXeuTM9UR3rfvNag6L3RNAs5pQZyYPsomTsgQhsxLdEgCrPTLgFna8yqCnxPpNT7DBk6Ym3dgPKNu86vt9GR",
        "k256",
    )
    assert legacy.multibase() == "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"
    assert len(legacy.uncompressed()) == 65 and legacy.uncompressed()[0] == 4


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_sign_verify_round_trip(curve: str) -> None:
    private = PrivateKey.generate(curve)  # type: ignore[arg-type]
    public = private.public_key()
    assert public.curve == curve
    data = b"plyr track record bytes"
    for _ in range(20):  # ECDSA is randomized: every signature must come out low-S
        sig = private.sign(data)
        assert len(sig) == 64
        assert int.from_bytes(sig[32:], "big") <= ORDERS[curve] // 2
        assert public.verify(data, sig)
    assert not public.verify(data + b"!", sig)
    assert not PrivateKey.generate(curve).public_key().verify(data, sig)  # type: ignore[arg-type]
    # A multikey round trip gives back an equal key, and the cache hands back the same object.
    assert parse_multikey(public.multibase()) == public
    assert parse_did_key(public.did_key()) is parse_did_key(public.did_key())
    assert PrivateKey.from_bytes(private.to_bytes(), curve).public_key() == public  # type: ignore[arg-type]


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_high_s_twin_is_rejected(curve: str) -> None:
    private = PrivateKey.generate(curve)  # type: ignore[arg-type]
    data = b"malleable?"
    sig = private.sign(data)
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    twin = r + (ORDERS[curve] - s).to_bytes(32, "big")
    assert private.public_key().verify(data, sig)
    assert not private.public_key().verify(data, twin)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00" * 64,
        b"\xff" * 64,
        b"\x01" * 63,
        b"\x01" * 65,
        b"\x30" + b"\x00" * 70,
        None,
        "text",
    ],
)
def test_verify_never_raises_on_garbage(garbage: object) -> None:
    key = PrivateKey.generate("k256").public_key()
    assert key.verify(b"data", garbage) is False  # type: ignore[arg-type]
    assert key.verify(None, b"\x01" * 64) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "did:key:",
        "did:key:z",
        "did:key:zzzz",
        "did:web:example.com",
        "did:key:z0OIl",  # not base58
        "did:key:" + libipld.encode_multibase("z", b"\xed\x01" + b"\x01" * 32),  # ed25519
        "did:key:" + libipld.encode_multibase("z", b"\xe7\x01" + b"\x02" * 31),  # short
        "did:key:" + libipld.encode_multibase("z", b"\xe7\x01" + b"\x05" * 33),  # bad point prefix
        "did:key:" + libipld.encode_multibase("u", b"\xe7\x01" + b"\x02" * 33),  # not base58btc
        "did:key:z" + "1" * 5000,
    ],
)
def test_bad_did_keys(value: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_did_key(value)


def test_bad_private_keys() -> None:
    with pytest.raises(KeyFormatError):
        PrivateKey.from_bytes(b"\x00" * 32)
    with pytest.raises(KeyFormatError):
        PrivateKey.from_bytes(b"\x01" * 31)
    with pytest.raises(KeyFormatError):
        PrivateKey.from_bytes(K256_ORDER.to_bytes(32, "big"), "k256")
    with pytest.raises(KeyFormatError):
        PrivateKey.generate("ed25519")  # type: ignore[arg-type]
    with pytest.raises(KeyFormatError):
        PublicKey("k256", b"\x02" * 10)


def test_uncompressed_multikey_is_accepted_and_reencoded_compressed() -> None:
    public = PrivateKey.generate("p256").public_key()
    uncompressed = libipld.encode_multibase("z", b"\x80\x24" + public.uncompressed())
    parsed = parse_multikey(uncompressed)
    assert parsed == public
    assert parsed.multibase() == public.multibase()


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_verification_rate(curve: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints verifications per second on one core (a figure for the report, not an assertion)."""
    private = PrivateKey.generate(curve)  # type: ignore[arg-type]
    did_key = private.public_key().did_key()
    messages = [f"commit {i}".encode() for i in range(200)]
    sigs = [private.sign(m) for m in messages]
    start = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for message, sig in zip(messages, sigs, strict=True):
            # The hot-path shape: parse (cached) did:key, then verify.
            assert parse_did_key(did_key).verify(message, sig)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n{curve}: {rounds * len(messages) / elapsed:,.0f} signature verifications/s")
