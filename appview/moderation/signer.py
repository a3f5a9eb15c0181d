"""Our labeler's signer as moderation uses it: from the settings, or none (no key configured:
the moderation methods that label answer 503 and `plyr admin` says what to set).

The one place that reads the labeler's key settings for moderation: when the labeler
(appview/labeler/) offers its own loader, this delegates to it."""

from __future__ import annotations

from pathlib import Path

from appview.labeler.store import LabelSigner
from appview.settings import AppviewSettings
from core.errors import ConfigError
from protocol.crypto import KeyFormatError, PrivateKey


def signer_from_settings(settings: AppviewSettings) -> LabelSigner | None:
    """The signer for our service DID, or None when no labeler key is configured."""
    text = settings.labeler_key
    source = "PLYR_LABELER_KEY"
    if not text and settings.labeler_key_file:
        source = f"PLYR_LABELER_KEY_FILE ({settings.labeler_key_file})"
        try:
            text = Path(settings.labeler_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if not text:
        return None
    try:
        key = PrivateKey.from_bytes(bytes.fromhex(text.strip()))
    except (ValueError, KeyFormatError):
        raise ConfigError(f"{source}: not a hex secp256k1 private key") from None
    return LabelSigner(did=settings.service_did, key=key)
