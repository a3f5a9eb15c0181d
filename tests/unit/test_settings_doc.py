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


def test_readme_table_is_up_to_date() -> None:
    readme = settings_doc.README.read_text(encoding="utf-8")
    wanted = settings_doc.with_table(readme, settings_doc.render_table(settings_doc.all_settings()))
    assert readme == wanted, "README.md's settings table is stale: run python -m core.settings_doc"


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


def test_the_check_mode_fails_on_a_stale_table(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    readme = settings_doc.README.read_text(encoding="utf-8")
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| `PLYR_RATE_LIMIT` |", "| `PLYR_RATE_LIMITS` |"), encoding="utf-8")
    monkeypatch.setattr(settings_doc, "README", stale)
    assert settings_doc.main(["--check"]) == 1
    assert settings_doc.main([]) == 0 and settings_doc.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == readme
