"""Language tags (BCP 47, as atproto applies RFC 5646): checking and parsing them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.syntax.errors import InvalidSyntax, preview

# RFC 5646 "well-formed" grammar, as atproto applies it: the primary language subtag is 2-3
# lowercase letters (4-8 letter and uppercase primaries are rejected by the interop vectors);
# other subtags are case-insensitive.

_GRANDFATHERED = frozenset(
    """en-GB-oed i-ami i-bnn i-default i-enochian i-hak i-klingon i-lux i-mingo i-navajo i-pwn
    i-tao i-tay i-tsu sgn-BE-FR sgn-BE-NL sgn-CH-DE art-lojban cel-gaulish no-bok no-nyn
    zh-guoyu zh-hakka zh-min zh-min-nan zh-xiang""".split()
)
_LANGTAG_RE = re.compile(
    r"(?P<language>[a-z]{2,3}(?:-[A-Za-z]{3}){0,3})"
    r"(?:-(?P<script>[A-Za-z]{4}))?"
    r"(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
    r"(?P<extensions>(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*)"
    r"(?:-(?P<private>[xX](?:-[A-Za-z0-9]{1,8})+))?"
)
_PRIVATE_TAG_RE = re.compile(r"[xX](?:-[A-Za-z0-9]{1,8})+")


def is_language(value: str) -> bool:
    return (
        _LANGTAG_RE.fullmatch(value) is not None
        or _PRIVATE_TAG_RE.fullmatch(value) is not None
        or value in _GRANDFATHERED
    )


@dataclass(frozen=True, slots=True)
class LanguageTag:
    """A parsed BCP 47 tag. `language` is the primary subtag (with any extended language
    subtags); grandfathered and private-use-only tags keep the whole tag in `tag` with
    `language` set to the tag itself."""

    tag: str
    language: str
    script: str | None = None
    region: str | None = None
    variants: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    private_use: str | None = None

    def __str__(self) -> str:
        return self.tag


def parse_language(value: str) -> LanguageTag:
    """Parse a language tag that is well-formed *and* valid in the RFC 5646 sense that no
    variant or extension singleton repeats. Raises InvalidSyntax otherwise."""
    if not isinstance(value, str):
        raise InvalidSyntax(f"language tag must be a string, not {type(value).__name__}")
    if value in _GRANDFATHERED or _PRIVATE_TAG_RE.fullmatch(value):
        return LanguageTag(tag=value, language=value)
    m = _LANGTAG_RE.fullmatch(value)
    if m is None:
        raise InvalidSyntax(f"invalid language tag {preview(value)}: not a well-formed BCP 47 tag")
    variants = tuple(v for v in m.group("variants").split("-") if v)
    seen = [v.lower() for v in variants]
    if len(set(seen)) != len(seen):
        raise InvalidSyntax(f"invalid language tag {preview(value)}: a variant subtag repeats")
    extensions: list[str] = []
    for sub in m.group("extensions").split("-"):
        if len(sub) == 1:
            extensions.append(sub)
        elif sub:
            extensions[-1] += "-" + sub
    singletons = [e[0].lower() for e in extensions]
    if len(set(singletons)) != len(singletons):
        raise InvalidSyntax(
            f"invalid language tag {preview(value)}: an extension singleton repeats"
        )
    return LanguageTag(
        tag=value,
        language=m.group("language"),
        script=m.group("script"),
        region=m.group("region"),
        variants=variants,
        extensions=tuple(extensions),
        private_use=m.group("private"),
    )
