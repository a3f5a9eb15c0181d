"""protocol/ is the bottom layer: it imports nothing of ours outside itself."""

from __future__ import annotations

import ast
from pathlib import Path

PROTOCOL = Path(__file__).resolve().parents[3] / "protocol"
OURS = ("core", "indexer", "appview", "media", "plyr")


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_protocol_imports_nothing_above_it() -> None:
    offenders = {
        str(path.relative_to(PROTOCOL.parent)): sorted(_imported_packages(path) & set(OURS))
        for path in sorted(PROTOCOL.rglob("*.py"))
    }
    assert {name: pkgs for name, pkgs in offenders.items() if pkgs} == {}
