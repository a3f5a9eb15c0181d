"""PLYR_CRASH_AT parsing, and the process ending (exit 137) at exactly the N-th hit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from indexer import crashpoints

ROOT = Path(__file__).resolve().parents[3]


def test_parse() -> None:
    assert crashpoints._parse(None) == (None, 0)
    assert crashpoints._parse("") == (None, 0)
    assert crashpoints._parse("before_commit") == ("before_commit", 1)
    assert crashpoints._parse("account_after_commit:7") == ("account_after_commit", 7)
    for bad in ("nowhere", "before_commit:x", "before_commit:0"):
        with pytest.raises(SystemExit):
            crashpoints._parse(bad)


def test_unset_is_disarmed() -> None:
    if "PLYR_CRASH_AT" not in os.environ:
        assert crashpoints.ARMED is False
        crashpoints.hit("before_commit")  # no effect


def test_exits_at_the_nth_hit_of_its_point_only() -> None:
    code = (
        "from indexer import crashpoints as c\n"
        "assert c.ARMED\n"
        "for i in range(5):\n"
        "    c.hit('after_commit_before_ack')\n"
        "    print('hit', i, flush=True)\n"
        "    c.hit('before_commit')\n"
    )
    env = {**os.environ, "PLYR_CRASH_AT": "before_commit:3"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 137, proc.stderr
    assert proc.stdout.split("\n")[:-1] == ["hit 0", "hit 1", "hit 2"]
    assert "crashing at before_commit #3" in proc.stderr
