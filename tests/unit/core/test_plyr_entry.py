"""The `plyr` command: every package's commands are there, and listing them stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_help_lists_every_package_and_imports_no_network_stack() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from plyr.cli import cli\n"
        "result = CliRunner().invoke(cli, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(result.output)\n"
        "print('HEAVY', sorted(m for m in ('aiohttp', 'asyncpg') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    for command in ("up", "migrate", "index", "backfill", "serve", "media", "lexicon"):
        assert f"  {command} " in proc.stdout
    assert "HEAVY []" in proc.stdout


def test_up_runs_the_listed_services_in_order() -> None:
    from plyr.services import SERVICES

    assert list(SERVICES) == ["indexer", "resync", "labels", "appview", "media"]
