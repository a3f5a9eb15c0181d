"""`plyr up` on the embedded PostgreSQL: comes up, stops on Ctrl-C, reuses its data next time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLYR = [sys.executable, "-m", "plyr"]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PLYR_TEST_DATABASE_URL")}
    env.update(PLYR_DATA_DIR=str(data_dir), PLYR_LOG_FORMAT="json", **extra)
    # Keep the services' ports away from anything else running on this machine.
    env.setdefault("PLYR_APPVIEW_PORT", "18080")
    env.setdefault("PLYR_MEDIA_PORT", "18081")
    env.setdefault("PLYR_INDEXER_METRICS_PORT", "19101")
    return env


def _start_up(data_dir: Path) -> tuple[subprocess.Popen[str], list[str]]:
    # The indexer would dial the public relay; point it at a closed loopback port instead.
    env = _env(data_dir, PLYR_RELAY_URL="ws://127.0.0.1:9/xrpc/com.atproto.sync.subscribeRepos")
    proc = subprocess.Popen(
        [*PLYR, "up", "--only", "indexer"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + 300  # a hang guard only: initdb on a busy machine is slow
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if '"msg":"up"' in line:
            return proc, lines
    proc.kill()
    pytest.fail("plyr up did not come up:\n" + "".join(lines))


def _postmaster_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_stops_cleanly_and_reuses_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc, lines = _start_up(data_dir)
    assert any("0001_records.sql" in line for line in lines)
    assert _postmaster_running(data_dir)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0
    assert not _postmaster_running(data_dir), "Ctrl-C must stop the embedded PostgreSQL"

    proc, lines = _start_up(data_dir)
    try:
        assert not any("applied migration" in line for line in lines), "second start re-applied migrations"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    assert not _postmaster_running(data_dir)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@127.0.0.1/x", "must start with postgresql://"),
        ("postgresql://postgres@127.0.0.1:notaport/x", "port that is not a number"),
        ("postgresql://postgres@127.0.0.1:9/x", "cannot connect to the database"),
    ],
)
def test_bad_database_url_is_one_clear_line(tmp_path: Path, url: str, message: str) -> None:
    result = subprocess.run(
        [*PLYR, "migrate"], cwd=ROOT, env=_env(tmp_path, DATABASE_URL=url),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_db_url_prints_the_embedded_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [*PLYR, "db-url"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("postgresql://")
    assert not _postmaster_running(tmp_path), "db-url must not leave a server behind"
