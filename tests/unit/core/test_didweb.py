"""core.didweb: the did:web document a service serves, and the refusal of a DID whose host is
not the service's public one (at settings time, so `plyr serve` / `plyr up` exit with one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appview.settings import AppviewSettings
from core.didweb import check_did_host, did_document, did_web_for, did_web_host, url_host
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_hosts_of_dids_and_urls() -> None:
    assert did_web_host("did:web:plyr.fm") == "plyr.fm"
    assert did_web_host("did:web:localhost%3A2584") == "localhost:2584"
    assert did_web_host("did:web:Localhost%3a2584") == "localhost:2584"
    assert did_web_host("did:plc:abc") is None
    for path_based in ("did:web:plyr.fm:user:alice", "did:web:", "did:web:plyr.fm#x"):
        with pytest.raises(ConfigError):
            did_web_host(path_based)
    assert url_host("https://plyr.fm/") == "plyr.fm"
    assert url_host("https://plyr.fm:443") == "plyr.fm"     # the scheme's own port is no port
    assert url_host("http://Localhost:2584/x") == "localhost:2584"
    assert did_web_for("http://localhost:2584") == "did:web:localhost%3A2584"
    assert did_web_for("https://api.plyr.fm/") == "did:web:api.plyr.fm"


def test_document_shape() -> None:
    doc = did_document("did:web:plyr.fm", [("plyr_appview", "PlyrAppView", "https://plyr.fm")])
    assert doc == {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": "did:web:plyr.fm",
        "service": [{"id": "#plyr_appview", "type": "PlyrAppView", "serviceEndpoint": "https://plyr.fm"}],
    }


def test_mismatch_refused() -> None:
    check_did_host("did:web:plyr.fm", "https://plyr.fm", did_var="D", url_var="U")
    check_did_host("did:web:localhost%3A2584", "http://localhost:2584", did_var="D", url_var="U")
    check_did_host("did:plc:abc", "https://anything.test", did_var="D", url_var="U")  # not ours to serve
    for did, url in (("did:web:plyr.fm", "https://api.plyr.fm"),
                     ("did:web:localhost%3A2584", "http://localhost:2585"),
                     ("did:web:localhost", "http://localhost:2584")):
        with pytest.raises(ConfigError, match="names host"):
            check_did_host(did, url, did_var="D", url_var="U")


def test_appview_settings_refuse_a_foreign_did(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLYR_PUBLIC_URL", "https://api.plyr.fm")
    monkeypatch.setenv("PLYR_SERVICE_DID", "did:web:plyr.fm")
    with pytest.raises(ConfigError, match="PLYR_SERVICE_DID=did:web:plyr.fm names host 'plyr.fm'"):
        AppviewSettings.from_env()
    monkeypatch.setenv("PLYR_SERVICE_DID", "did:web:api.plyr.fm")
    assert AppviewSettings.from_env().service_did == "did:web:api.plyr.fm"
    monkeypatch.delenv("PLYR_SERVICE_DID")
    monkeypatch.setenv("PLYR_PUBLIC_URL", "http://localhost:2584")
    assert AppviewSettings.from_env().service_did == "did:web:localhost%3A2584"


def test_plyr_serve_says_one_line_and_exits_1(tmp_path: Path) -> None:
    env = {**os.environ, "PLYR_PUBLIC_URL": "https://api.plyr.fm", "PLYR_SERVICE_DID": "did:web:plyr.fm",
           "PLYR_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "plyr", "serve"], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PLYR_SERVICE_DID=did:web:plyr.fm names host"), proc.stderr
