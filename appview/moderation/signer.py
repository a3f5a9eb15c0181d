"""Our labeler's signer as moderation uses it: from the settings (appview/labeler/settings.py
reads and checks the key), or none (no key configured: the moderation methods that label
answer 503 and `plyr admin` says what to set)."""

from __future__ import annotations

from appview.labeler.store import LabelSigner
from appview.settings import AppviewSettings


def signer_from_settings(settings: AppviewSettings) -> LabelSigner | None:
    """The signer for our service DID, or None when no labeler key is configured."""
    return LabelSigner.configured(settings.service_did, settings.labeler.key)
