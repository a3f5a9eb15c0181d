"""Every failure a musician meets is one line: what the PDS or the media service said, or that
it could not be reached. The SDK's own exception classes are used as the SDK raises them; the
unreachable cases are real refused connections on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from atproto import Client
from atproto_client import exceptions as sdk
from atproto_client.models.common import XrpcError
from atproto_client.request import Response

from publish.errors import NotLoggedIn, PublishError, media_failure, pds_failure
from publish.media_client import MediaService, sha256_in_url
from publish.publisher import parse_tags
from publish.records import parse_uri

ROOT = Path(__file__).resolve().parents[3]


def answer(status: int, error: str | None, message: str | None) -> Response:
    content = XrpcError(error=error or "", message=message) if error else b"upstream went away"
    return Response(success=False, status_code=status, content=content, headers={})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once closed


def test_wrong_password() -> None:
    exc = sdk.UnauthorizedError(answer(401, "AuthenticationRequired", "Invalid identifier or password"))
    text = str(pds_failure(exc, "log in", pds_url="https://pds.example"))
    assert text == "could not log in: wrong handle or password (AuthenticationRequired: Invalid identifier or password (HTTP 401))"


def test_record_refused_by_the_pds() -> None:
    exc = sdk.BadRequestError(answer(400, "InvalidRecord", "Record/title must not be empty"))
    assert str(pds_failure(exc, "write the track record")) == (
        "could not write the track record: the PDS refused it (InvalidRecord: Record/title must not be empty (HTTP 400))"
    )
    swap = sdk.BadRequestError(answer(400, "InvalidSwap", "Record was at bafy..."))
    assert "InvalidSwap" in str(pds_failure(swap, "write the track record"))


def test_expired_session_and_pds_failures() -> None:
    expired = pds_failure(sdk.BadRequestError(answer(400, "ExpiredToken", "Token has expired")), "list your records")
    assert isinstance(expired, NotLoggedIn) and "plyr publish login" in str(expired)
    down = pds_failure(sdk.NetworkError(answer(502, None, None)), "write the track record", pds_url="https://p.example")
    assert str(down).startswith("could not write the track record: your PDS at https://p.example failed (")
    email = pds_failure(sdk.UnauthorizedError(answer(401, "AuthFactorTokenRequired", "A sign in code has been sent")), "log in")
    assert "app password" in str(email)


def test_pds_unreachable_is_said_so() -> None:
    client = Client(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(sdk.NetworkError) as caught:
        client.login("ann.test", "pw", fetch_bsky_profile=False)
    text = str(pds_failure(caught.value, "log in", pds_url="http://127.0.0.1:1"))
    assert text.startswith("could not log in: your PDS at http://127.0.0.1:1 is unreachable (") and "\n" not in text


def test_media_refusals_carry_our_message() -> None:
    refused = media_failure(415, b'{"error":"UnsupportedMediaType","message":"expected an audio file, got png (image)"}',
                            "upload x.flac", "http://m")  # fmt: skip
    assert str(refused) == (
        "could not upload x.flac: the media service refused it "
        "(UnsupportedMediaType: expected an audio file, got png (image) (HTTP 415))"
    )
    assert "is unavailable" in str(media_failure(503, b"<html>bad gateway</html>", "upload x", "http://m"))
    assert "refused our token" in str(media_failure(401, b'{"error":"InvalidToken","message":"bad"}', "upload", "http://m"))


def test_media_unreachable() -> None:
    media = MediaService(f"http://127.0.0.1:{closed_port()}", show_progress=False)
    try:
        with pytest.raises(PublishError, match="is unreachable"):
            _ = media.did
    finally:
        media.close()


def test_small_parsers() -> None:
    sha = "ab" * 32
    assert sha256_in_url(f"http://m/media/audio/ab/{sha}.320.mp3") == sha
    assert sha256_in_url(f"https://bucket.example/images/ab/{sha}.display.webp") == sha
    assert sha256_in_url("https://cdn.example.com/a.mp3") is None and sha256_in_url(None) is None
    assert parse_tags(" rock, live ,rock,, ") == ["rock", "live"]
    with pytest.raises(PublishError):
        parse_tags(",".join(str(i) for i in range(30)))
    assert parse_uri("at://did:plc:x/fm.plyr.track/3k") == ("did:plc:x", "fm.plyr.track", "3k")
    with pytest.raises(PublishError, match="not a record URI"):
        parse_uri("https://example.com")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLYR_")}
    return subprocess.run(
        [sys.executable, "-m", "plyr", "publish", *args], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_failures_are_one_line(tmp_path: Path) -> None:
    audio = tmp_path / "a.flac"
    audio.write_bytes(b"fLaC")
    no_session = run_cli("track", str(audio), env={"PLYR_CONFIG_DIR": str(tmp_path), "PLYR_PUBLISH_MEDIA_URL": "http://127.0.0.1:9"})
    assert no_session.returncode == 1 and "Traceback" not in no_session.stderr
    assert no_session.stderr.strip().splitlines() == ["error: not logged in: run `plyr publish login HANDLE` first"]
    no_media = run_cli("track", str(audio), env={"PLYR_CONFIG_DIR": str(tmp_path)})
    assert no_media.returncode == 1
    assert no_media.stderr.strip() == "error: which media service? set PLYR_PUBLISH_MEDIA_URL or pass --media URL"
    missing = run_cli("track", str(tmp_path / "nope.flac"), env={"PLYR_CONFIG_DIR": str(tmp_path)})
    assert missing.returncode == 1 and missing.stderr.strip().endswith("nope.flac: no such file")
