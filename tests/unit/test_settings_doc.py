"""The README's settings table is generated from the declarations, and every variable the code
reads is declared (so it is in that table)."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from core import settings_doc

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "protocol", "indexer", "appview", "media")
# A variable name inside a string or comment; "PLYR_S3_*" (a family, not a name) is skipped.
VARIABLE = re.compile(r"\b(PLYR_[A-Z0-9_]+|DATABASE_URL)\b(?!\*)")


def _mentioned_variables(path: Path) -> set[str]:
    """Variable names in the strings and comments of `path` (identifiers such as PLYR_PREFIX,
    a Python constant, are not variables)."""
    found: set[str] = set()
    identifiers: set[str] = set()
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT):
            found.update(VARIABLE.findall(token.string))
        elif token.type == tokenize.NAME:
            identifiers.add(token.string)
    return found - identifiers


def test_readme_tables_are_up_to_date() -> None:
    stale = settings_doc.stale_tables()
    assert not stale, f"settings tables out of date in {sorted(map(str, stale))}: run python -m core.settings_doc"


def test_every_variable_the_code_names_is_declared() -> None:
    declared = {spec.env for spec in settings_doc.all_settings()}
    mentioned: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _mentioned_variables(path):
                mentioned.setdefault(name, []).append(str(path.relative_to(ROOT)))
    undeclared = {name: where for name, where in mentioned.items() if name not in declared}
    assert not undeclared, f"read or named but not declared: {undeclared}"
    assert "DATABASE_URL" in declared and "PLYR_ALLOW_PRIVATE_NETWORK" in declared


def test_the_check_mode_fails_on_a_stale_table(tmp_path: Path) -> None:
    originals = {name: (ROOT / name).read_text(encoding="utf-8") for name in settings_doc.TABLES}
    for name, text in originals.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(originals["README.md"].replace("| `PLYR_RATE_LIMIT` |", "| `PLYR_RATE_LIMITS` |"), encoding="utf-8")
    assert settings_doc.main(["--check"], root=tmp_path) == 1
    assert settings_doc.main([], root=tmp_path) == 0 and settings_doc.main(["--check"], root=tmp_path) == 0
    assert readme.read_text(encoding="utf-8") == originals["README.md"]
