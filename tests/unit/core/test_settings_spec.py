"""The declared-settings loader: parsing, bounds, choices, overrides and checks across fields,
with the error messages the old hand-written parsers gave."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from core.errors import ConfigError
from core.settings import CoreSettings
from core.settings_spec import Setting, Settings, option, setting, spec_of


@dataclass(frozen=True, kw_only=True)
class Sample(Settings):
    count: int = setting("PLYR_T_COUNT", 3, "a count", minimum=1)
    ratio: float = setting("PLYR_T_RATIO", 0.5, "a ratio", above=0, maximum=1)
    on: bool = setting("PLYR_T_ON", True, "a switch")
    mode: str = setting("PLYR_T_MODE", "fast", "a mode", choices=("fast", "slow"))
    name: str | None = setting("PLYR_T_NAME", None, "a name")
    ms: float = setting("PLYR_T_MS", 250.0, "milliseconds", convert=lambda ms: ms / 1000)
    derived: str = setting("PLYR_T_DERIVED", None, "derived when unset", required=True)

    @classmethod
    def finish(cls, values: dict[str, Any], core: Settings | None) -> None:
        values["derived"] = values["derived"] or f"count-{values['count']}"
        if values["count"] > 10 and values["mode"] == "fast":
            raise ConfigError("PLYR_T_COUNT above 10 needs PLYR_T_MODE=slow")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in Sample.declared():
        monkeypatch.delenv(spec.env, raising=False)


def test_defaults_and_parsed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sample.from_env()
    assert (s.count, s.ratio, s.on, s.mode, s.name, s.ms, s.derived) == (3, 0.5, True, "fast", None, 0.25, "count-3")
    for name, value in {"PLYR_T_COUNT": "7", "PLYR_T_RATIO": "1", "PLYR_T_ON": "off", "PLYR_T_MODE": " SLOW ",
                        "PLYR_T_NAME": "x", "PLYR_T_MS": "50", "PLYR_T_DERIVED": "given"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s = Sample.from_env()
    assert (s.count, s.ratio, s.on, s.mode, s.name, s.ms, s.derived) == (7, 1.0, False, "slow", "x", 0.05, "given")
    monkeypatch.setenv("PLYR_T_NAME", "")  # empty counts as unset
    assert Sample.from_env().name is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.count = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("PLYR_T_COUNT", "three", "PLYR_T_COUNT='three' is not an integer"),
        ("PLYR_T_COUNT", "0", "PLYR_T_COUNT=0 must be at least 1"),
        ("PLYR_T_RATIO", "lots", "PLYR_T_RATIO='lots' is not a number"),
        ("PLYR_T_RATIO", "0", "PLYR_T_RATIO=0 must be more than 0 and at most 1"),
        ("PLYR_T_RATIO", "nan", "PLYR_T_RATIO=nan must be more than 0"),
        ("PLYR_T_ON", "maybe", "PLYR_T_ON='maybe' is not a boolean (use true or false)"),
        ("PLYR_T_MODE", "Medium", "PLYR_T_MODE='medium' must be fast or slow"),
    ],
)
def test_refusals_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, raw: str, message: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError) as info:
        Sample.from_env()
    assert str(info.value).startswith(message)


def test_overrides_win_and_pass_the_same_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLYR_T_COUNT", "5")
    assert Sample.from_env(overrides={"count": 9}).count == 9
    assert Sample.from_env(overrides={"count": None}).count == 5  # None: the option was not given
    assert Sample.from_env(overrides={"ms": 1000.0}).ms == 1.0  # converted like the environment's text
    with pytest.raises(ConfigError, match="PLYR_T_COUNT=0 must be at least 1"):
        Sample.from_env(overrides={"count": 0})
    with pytest.raises(ConfigError, match="PLYR_T_MODE='medium' must be fast or slow"):
        Sample.from_env(overrides={"mode": "medium"})
    with pytest.raises(TypeError, match="no setting colour"):
        Sample.from_env(overrides={"colour": "red"})


def test_checks_across_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLYR_T_COUNT", "11")
    with pytest.raises(ConfigError, match="needs PLYR_T_MODE=slow"):
        Sample.from_env()
    monkeypatch.setenv("PLYR_T_MODE", "slow")
    assert Sample.from_env().count == 11


def test_core_pool_bounds_are_checked_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLYR_DB_POOL_MIN", "5")
    monkeypatch.setenv("PLYR_DB_POOL_MAX", "2")
    with pytest.raises(ConfigError, match="PLYR_DB_POOL_MAX=2 is below PLYR_DB_POOL_MIN=5"):
        CoreSettings.from_env()
    monkeypatch.setenv("PLYR_LOG_FORMAT", "XML")
    with pytest.raises(ConfigError, match="PLYR_LOG_FORMAT='xml' must be text or json"):
        CoreSettings.from_env()


def test_built_directly_gets_the_declared_defaults() -> None:
    s = Sample(derived="d")
    assert (s.count, s.ms, s.mode) == (3, 0.25, "fast")
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]  # a derived field has no default of its own


def test_a_command_line_option_reads_the_declaration() -> None:
    import click
    from click.testing import CliRunner

    @click.command()
    @option(Sample, "count", "--count")
    @option(Sample, "mode", "--mode")
    def show(count: int | None, mode: str | None) -> None:
        click.echo(Sample.from_env(overrides={"count": count, "mode": mode}).count)

    runner = CliRunner()
    help_text = runner.invoke(show, ["--help"]).output
    assert "A count; default $PLYR_T_COUNT, else 3." in help_text and "[x>=1]" in help_text
    assert runner.invoke(show, ["--count", "4"]).output == "4\n"
    assert runner.invoke(show, []).output == "3\n"
    assert runner.invoke(show, ["--count", "0"]).exit_code == 2  # click refuses it: out of range
    assert runner.invoke(show, ["--mode", "medium"]).exit_code == 2


def test_spec_of_names_the_declaration() -> None:
    spec = spec_of(Sample, "count")
    assert isinstance(spec, Setting) and spec.env == "PLYR_T_COUNT" and spec.describe_bounds() == "at least 1"
