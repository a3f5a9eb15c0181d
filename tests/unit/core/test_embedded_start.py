"""What a failed start of the embedded PostgreSQL leaves behind, and what the retry clears."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from core.db import _clear_failed_start


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid  # exited and reaped: no such process now


def _folder(tmp_path: Path, pid: int) -> Path:
    pgdata = tmp_path / "postgres"
    (pgdata / "global").mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("17\n")
    (pgdata / "postmaster.pid").write_text(f"{pid}\n{pgdata}\n1796198294\n5432\n\n\n  2164083  31\n")
    return pgdata


def test_a_folder_this_start_was_making_is_removed(tmp_path: Path) -> None:
    # initdb's single-user backend writes its PID negated; it is gone, initdb failed.
    pgdata = _folder(tmp_path, -_dead_pid())
    _clear_failed_start(pgdata, new_folder=True)
    assert not pgdata.exists()


def test_a_database_that_existed_keeps_its_data_and_loses_the_stale_lock(tmp_path: Path) -> None:
    pgdata = _folder(tmp_path, _dead_pid())
    _clear_failed_start(pgdata, new_folder=False)
    assert (pgdata / "PG_VERSION").exists() and not (pgdata / "postmaster.pid").exists()


def test_a_running_server_is_left_alone(tmp_path: Path) -> None:
    pgdata = _folder(tmp_path, os.getpid())  # a live process holds the lock: attach next try
    _clear_failed_start(pgdata, new_folder=True)
    assert (pgdata / "postmaster.pid").exists() and (pgdata / "PG_VERSION").exists()
