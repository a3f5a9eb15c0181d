"""Our labeler without a database: its key settings (inline, file, permissions), keygen, the
DID document entries, LIKE escaping and the dating of superseding labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from appview.labeler.cli import keygen
from appview.labeler.query import like_prefix
from appview.labeler.settings import LabelerSettings, Secret
from appview.labeler.store import LabelDraft, LabelSigner, _after, _checked
from core.didweb import did_document
from core.errors import ConfigError
from protocol.crypto import PrivateKey, parse_did_key
from protocol.identity import parse_did_document
from protocol.labels import Label

ROOT = Path(__file__).resolve().parents[3]
KEY = PrivateKey.from_bytes(bytes(range(1, 33)))
HEX = KEY.to_bytes().hex()


def _key_file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "label.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_inline_or_from_a_private_file(tmp_path: Path) -> None:
    inline = LabelerSettings.from_env(overrides={"key_hex": HEX})
    assert inline.enabled and inline.key is not None and inline.key.to_bytes() == KEY.to_bytes()
    path = _key_file(tmp_path, HEX + "\n", 0o600)
    from_file = LabelerSettings.from_env(overrides={"key_file": str(path)})
    assert from_file.key is not None and from_file.key.public_key() == KEY.public_key()
    assert not LabelerSettings.from_env().enabled  # no key: no labeler


def test_the_key_text_is_never_shown(tmp_path: Path) -> None:
    settings = LabelerSettings.from_env(overrides={"key_hex": HEX})
    assert HEX not in repr(settings) and HEX not in str(settings.key_hex)
    assert isinstance(settings.key_hex, Secret) and settings.key_hex.reveal() == HEX
    bad = HEX[:-2] + "zz"
    with pytest.raises(ConfigError) as refused:
        LabelerSettings.from_env(overrides={"key_hex": bad})
    assert bad not in str(refused.value) and "PLYR_LABELER_KEY" in str(refused.value)
    path = _key_file(tmp_path, bad, 0o600)
    with pytest.raises(ConfigError) as refused:
        LabelerSettings.from_env(overrides={"key_file": str(path)})
    assert bad not in str(refused.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_a_key_file_group_or_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, HEX, mode)
    with pytest.raises(ConfigError, match=r"group or others .*chmod 600"):
        LabelerSettings.from_env(overrides={"key_file": str(path)})


def test_key_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open"):
        LabelerSettings.from_env(overrides={"key_file": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="not a regular file"):
        LabelerSettings.from_env(overrides={"key_file": str(tmp_path)})
    with pytest.raises(ConfigError, match="larger"):
        LabelerSettings.from_env(overrides={"key_file": str(_key_file(tmp_path, "0" * 5000, 0o600))})
    with pytest.raises(ConfigError, match="not both"):
        LabelerSettings.from_env(overrides={"key_hex": HEX, "key_file": str(tmp_path / "x")})


def test_keygen_writes_a_private_key_file_and_prints_its_did_key(tmp_path: Path) -> None:
    out = tmp_path / "label.key"
    result = CliRunner().invoke(keygen, ["--out", str(out)])
    assert result.exit_code == 0, result.output
    did_key = result.stdout.strip()
    assert os.stat(out).st_mode & 0o777 == 0o600
    loaded = LabelerSettings.from_env(overrides={"key_file": str(out)}).key
    assert loaded is not None and loaded.public_key() == parse_did_key(did_key)
    assert loaded.curve == "k256"
    again = CliRunner().invoke(keygen, ["--out", str(out)])
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    assert LabelerSettings.from_env(overrides={"key_file": str(out)}).key.to_bytes() == loaded.to_bytes()  # type: ignore[union-attr]


def test_plyr_serve_refuses_an_open_key_file_in_one_line(tmp_path: Path) -> None:
    path = _key_file(tmp_path, HEX, 0o644)
    env = {**os.environ, "PLYR_LABELER_KEY_FILE": str(path), "PYTHONPATH": str(ROOT)}
    env.pop("PLYR_LABELER_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "plyr", "serve", "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1
    assert "PLYR_LABELER_KEY_FILE" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_did_document_with_the_label_key() -> None:
    did = "did:web:plyr.test"
    signer = LabelSigner(did, KEY)
    doc = did_document(did, [("plyr_appview", "PlyrAppView", "https://plyr.test"),
                             ("atproto_labeler", "AtprotoLabeler", "https://plyr.test")],
                       [("atproto_label", signer.public_multibase)])
    parsed = parse_did_document(did, doc)
    assert parsed.verification_key("#atproto_label") == KEY.public_key()
    assert parsed.service_endpoint("#atproto_labeler", "AtprotoLabeler") == "https://plyr.test"
    assert doc["verificationMethod"][0] == {
        "id": f"{did}#atproto_label", "type": "Multikey", "controller": did,
        "publicKeyMultibase": signer.public_multibase,
    }  # fmt: skip
    assert signer.did_key == "did:key:" + signer.public_multibase


def test_like_prefix_makes_wildcards_literal() -> None:
    assert like_prefix("at://a_b%c\\d") == "at://a\\_b\\%c\\\\d%"
    assert like_prefix("") == "%"


def test_a_superseding_label_is_dated_after_what_it_supersedes() -> None:
    signer = LabelSigner("did:web:plyr.test", KEY)
    label = _checked(signer, LabelDraft("did:plc:annannannannannannannann", "!takedown", neg=True))
    assert label.cts.endswith("Z") and len(label.cts) == len("2026-01-01T00:00:00.000Z")
    # the earlier label is from the same millisecond, or from a clock that was ahead
    same = _after(label, [label.cts])
    assert same.cts > label.cts
    ahead = _after(label, ["2999-01-01T00:00:00.000Z", "not a date"])
    assert ahead.cts == "2999-01-01T00:00:00.001Z"
    assert _after(label, ["2000-01-01T00:00:00Z"]) is label
    assert isinstance(ahead, Label) and ahead.neg and ahead.sig is None
