"""Declared settings: each environment variable is declared once (name, type, default, bounds or
choices, one line of help) as a field of a frozen dataclass, and one loader turns the
environment (and `.env`) into that dataclass.

A package declares its settings next to its code:

    @dataclass(frozen=True, kw_only=True)
    class AppviewSettings(Settings):
        port: int = setting("PLYR_APPVIEW_PORT", 8080, "port", minimum=0)

and gets them with `AppviewSettings.from_env(overrides=..., core=...)`. A variable two packages read
is one `Setting` object that both classes use as a field (`SOME_SETTING.field()`). Values a
setting's default depends on (another setting, CoreSettings) and checks across fields are done
in the class's `finish`, which sees every value before the object is built. The README table and
the command-line options come from the same declarations (core/settings_doc.py, `option`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from core.errors import ConfigError

_dotenv_loaded = False
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def load_env_file() -> None:
    """Load `.env` from the working directory once; real environment variables win."""
    global _dotenv_loaded
    if not _dotenv_loaded:
        from dotenv import load_dotenv  # only when settings are read: keeps `plyr --help` quick

        load_dotenv(Path.cwd() / ".env", override=False)
        _dotenv_loaded = True


def env_str(name: str, default: str | None = None) -> str | None:
    """The raw value of `name`; empty counts as unset."""
    load_env_file()
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


_PARSERS: dict[type, Callable[[str, str], Any]] = {
    int: parse_int,
    float: parse_float,
    bool: parse_bool,
    str: lambda _name, raw: raw,
}


@dataclass(frozen=True)
class Setting:
    """One environment variable: how its text becomes a value, and what it is for."""

    env: str
    kind: type  # str, int, float or bool: how the text is parsed
    default: Any  # the value when unset (None: unset is meaningful, or `finish` derives it)
    help: str
    minimum: float | None = None  # value >= minimum
    above: float | None = None  # value > above
    maximum: float | None = None  # value <= maximum
    bounds_text: str | None = None  # replaces "must be at least ..." when the bounds say more
    choices: tuple[str, ...] = ()  # allowed values, compared lower-cased
    # the text after parsing and checks becomes the field's value through this (units, lists)
    convert: Callable[[Any], Any] | None = None
    default_text: str | None = None  # the default as the README shows it, when not the value
    group: str = ""  # heading of the README table section

    def parse(self, raw: str) -> Any:
        text = raw.strip().lower() if self.choices else raw
        return self.check(_PARSERS[self.kind](self.env, text))

    def check(self, value: Any) -> Any:
        """Refuse a value outside the choices or bounds (nan included); returns it unchanged."""
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.env}={value!r} must be {_either(self.choices)}")
        if self.kind in (int, float) and not self._within(value):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise ConfigError(f"{self.env}={shown} must be {self.bounds_text or self.describe_bounds()}")
        return value

    def _within(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.minimum is not None and not value >= self.minimum:
            return False
        if self.above is not None and not value > self.above:
            return False
        return self.maximum is None or value <= self.maximum

    def describe_bounds(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"{_number(self.minimum)} to {_number(self.maximum)}"
        parts = []
        if self.minimum is not None:
            parts.append(f"at least {_number(self.minimum)}")
        if self.above is not None:
            parts.append(f"more than {_number(self.above)}")
        if self.maximum is not None:
            parts.append(f"at most {_number(self.maximum)}")
        return " and ".join(parts)

    def read(self) -> Any:
        """The value from the environment: parsed, checked and converted; the default if unset."""
        raw = env_str(self.env)
        return self.to_value(self.default if raw is None else self.parse(raw))

    def to_value(self, value: Any) -> Any:
        return self.convert(value) if self.convert is not None and value is not None else value

    def field(self, *, required: bool = False) -> Any:
        """A dataclass field holding this setting; `required` when `finish` always derives it
        (so code building the object directly must say it)."""
        meta = {"setting": self}
        if required:
            return dataclasses.field(metadata=meta)
        default = self.to_value(self.default)
        if isinstance(default, list | dict | set):
            raise TypeError(f"{self.env}: a mutable default needs a tuple")
        return dataclasses.field(default=default, metadata=meta)

    def describe_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def setting(
    env: str,
    default: Any,
    help: str,
    *,
    kind: type | None = None,
    required: bool = False,
    **options: Any,
) -> Any:
    """Declare a setting as a dataclass field. `kind` defaults to the default's type (str when
    the default is None); `options` are `Setting`'s (minimum, above, maximum, choices, ...)."""
    kind = kind or (type(default) if default is not None else str)
    return Setting(env, kind, default, help, **options).field(required=required)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _either(choices: tuple[str, ...]) -> str:
    return " or ".join(choices) if len(choices) <= 2 else "one of " + ", ".join(choices)


class Settings:
    """Base of every declared settings dataclass: `from_env` and the hook `finish`."""

    @classmethod
    def from_env(cls, *, overrides: Mapping[str, Any] | None = None, core: Settings | None = None) -> Self:
        """Read every declared setting; `overrides` (field name -> value, e.g. from command-line
        options; None means not given) win over the environment and pass the same checks."""
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            spec: Setting | None = f.metadata.get("setting")
            if f.name in given:
                value = given.pop(f.name)
                values[f.name] = spec.to_value(spec.check(value)) if spec is not None else value
            elif spec is not None:
                values[f.name] = spec.read()
        if given:
            raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(given))}")
        cls.finish(values, core)
        return cls(**values)

    @classmethod
    def finish(cls, values: dict[str, Any], core: Settings | None) -> None:
        """Derive defaults that depend on other values and check across fields, in place."""

    @classmethod
    def declared(cls) -> Iterator[Setting]:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "setting" in f.metadata:
                yield f.metadata["setting"]


def spec_of(cls: type, name: str) -> Setting:
    """The declaration behind field `name` of settings class `cls`."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata["setting"]
    raise KeyError(name)


def option(cls: type, name: str, *flags: str, dest: str | None = None, **attrs: Any) -> Callable[[Any], Any]:
    """A click option overriding setting `name` of `cls`: its type, bounds, default and help come
    from the declaration; the command passes the value on as an override (None: not given).
    The command's parameter is `dest`, else `name`."""
    import click

    spec = spec_of(cls, name)
    kind: Any = spec.kind
    if spec.choices:
        kind = click.Choice(spec.choices, case_sensitive=False)
    elif spec.kind is int and (spec.minimum is not None or spec.maximum is not None):
        kind = click.IntRange(_int_or_none(spec.minimum), _int_or_none(spec.maximum))
    text = f"{spec.help[:1].upper()}{spec.help[1:]}; default ${spec.env}, else {spec.describe_default()}."
    text = text.replace("`", "")
    return click.option(*flags, dest or name, type=kind, default=None, help=text, **attrs)


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def declared_settings(classes: list[type[Settings]]) -> list[Setting]:
    """Every setting the classes declare, each once, in declaration order."""
    seen: dict[str, Setting] = {}
    for cls in classes:
        for spec in cls.declared():
            known = seen.get(spec.env)
            if known is not None and known is not spec:
                raise TypeError(f"{spec.env} is declared twice ({cls.__name__}); share one Setting")
            seen.setdefault(spec.env, spec)
    return list(seen.values())


__all__ = [
    "Setting", "Settings", "declared_settings", "env_str", "load_env_file", "option", "setting", "spec_of",
]  # fmt: skip
