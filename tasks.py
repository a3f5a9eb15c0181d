#!/usr/bin/env python3
"""Run plyr or its tests on a machine that has only Python 3.11+.

    python3 tasks.py up        # everything: embedded Postgres, migrations, indexer, appview, media
    python3 tasks.py test      # the whole test suite (extra args go to pytest)
    python3 tasks.py lint      # ruff, then mypy (extra args go to ruff)
    python3 tasks.py plyr ...  # any plyr command inside the project's environment

The first run makes `.venv/`, puts uv in it, and installs the locked dependencies (uv.lock).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
UV_VERSION = "0.13.9"


def _run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, env=env)


def ensure_environment(*, dev: bool) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before the venv exists
        sys.exit(f"plyr needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    if not (BIN / "python").exists():
        print("creating .venv ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not (BIN / "uv").exists():
        _run(BIN / "python", "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV)}
    sync: list[str | Path] = [BIN / "uv", "sync", "--frozen", "--quiet"]
    if not dev:
        sync.append("--no-dev")
    _run(*sync, env=env)


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "up":
        ensure_environment(dev=False)
        os.execv(BIN / "plyr", [str(BIN / "plyr"), "up", *rest])
    if command == "test":
        ensure_environment(dev=True)
        os.execv(BIN / "python", [str(BIN / "python"), "-m", "pytest", *rest])
    if command == "lint":
        ensure_environment(dev=True)
        # Both run even when ruff finds something, so one pass shows every problem.
        style = subprocess.run([str(BIN / "ruff"), "check", ".", *rest], cwd=ROOT)
        types = subprocess.run([str(BIN / "python"), "-m", "mypy"], cwd=ROOT)  # [tool.mypy]
        return style.returncode or types.returncode
    if command == "plyr":
        ensure_environment(dev=False)
        os.execv(BIN / "plyr", [str(BIN / "plyr"), *rest])
    print(__doc__)
    return 0 if command == "help" else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
