"""`plyr media --port/--workers` are overrides of the declared settings, never written into the
environment (which the rest of the process, and its children, would then inherit)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from core.errors import ConfigError
from media import cli as media_cli
from media.settings import MediaSettings


def test_options_pass_overrides_and_leave_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLYR_MEDIA_PORT", "PLYR_MEDIA_WORKERS", "PLYR_MEDIA_SERVER_KEY", "PLYR_MEDIA_SERVICE_DID"):
        monkeypatch.delenv(name, raising=False)
    seen: list[MediaSettings] = []

    def refuse(settings: MediaSettings) -> None:
        seen.append(settings)
        raise ConfigError("refusing to start without authentication")

    monkeypatch.setattr("media.auth.require_auth_configured", refuse)
    result = CliRunner().invoke(media_cli.media, ["--port", "9123", "--workers", "0"])
    assert isinstance(result.exception, ConfigError)
    assert (seen[0].port, seen[0].workers) == (9123, 0)
    assert "PLYR_MEDIA_PORT" not in os.environ and "PLYR_MEDIA_WORKERS" not in os.environ


def test_out_of_range_options_are_refused_by_the_declared_bounds() -> None:
    result = CliRunner().invoke(media_cli.media, ["--workers", "-1"])
    assert result.exit_code == 2 and "x>=0" in result.output
    help_text = CliRunner().invoke(media_cli.media, ["--help"]).output
    assert "$PLYR_MEDIA_PORT, else 8081" in help_text
