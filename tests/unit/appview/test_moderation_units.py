"""Moderation without a database: subjects, label values, and the labeler key from settings."""

from __future__ import annotations

import dataclasses

import pytest

from appview.labeler.settings import LabelerSettings
from appview.moderation.signer import signer_from_settings
from appview.moderation.subjects import ModerationError, check_label_value, parse_subject
from appview.settings import AppviewSettings
from core.errors import ConfigError
from protocol.crypto import PrivateKey

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


def _settings(**values: str) -> AppviewSettings:
    base = AppviewSettings(host="127.0.0.1", public_url="https://plyr.test", service_did="did:web:plyr.test")
    return dataclasses.replace(base, **values)


def test_subjects() -> None:
    assert parse_subject(DID).is_account
    record = parse_subject(f" at://{DID}/fm.plyr.track/3kabc ", CID)
    assert (record.uri, record.cid, record.did, record.is_account) == (
        f"at://{DID}/fm.plyr.track/3kabc", CID, DID, False)
    for text, cid in (("", None), ("did:x", None), (DID, CID), (f"at://{DID}/fm.plyr.track/3kabc", "nope"),
                      ("at://alice.test/fm.plyr.track/3kabc", None), (f"at://{DID}", None),
                      ("at://" + DID + "/fm.plyr.track/" + "a" * 3000, None)):  # fmt: skip
        with pytest.raises(ModerationError):
            parse_subject(text, cid)


def test_label_values() -> None:
    for ok in ("!takedown", "!warn", "porn", "graphic-media"):
        assert check_label_value(ok) == ok
    for bad in ("", "!", "Porn", "a b", "-x", "x" * 128, "!!warn", "é"):
        with pytest.raises(ModerationError):
            check_label_value(bad)


def test_signer_from_settings() -> None:
    key = PrivateKey.generate("k256")
    assert signer_from_settings(_settings()) is None
    with_key = dataclasses.replace(_settings(), labeler=LabelerSettings(key=key))
    signer = signer_from_settings(with_key)
    assert signer is not None and signer.did == "did:web:plyr.test"
    assert signer.did_key == key.public_key().did_key()


def test_moderators_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLYR_MODERATORS", f"{DID}, did:web:mod.test,{DID}")
    assert AppviewSettings.from_env().moderators == (DID, "did:web:mod.test")
    monkeypatch.setenv("PLYR_MODERATORS", "alice.test")
    with pytest.raises(ConfigError, match="PLYR_MODERATORS"):
        AppviewSettings.from_env()
