"""Hypothesis strategies derived from our record lexicons (issue #10, index fidelity).

Nothing here is written per collection: `LexiconStrategies` walks the lexicon JSON of each
record type (objects, refs into other documents, unions, arrays, strings with their formats and
size limits, integers, blobs, ...) and builds strategies from what it finds, so a lexicon change
changes the generated data.

- `valid(nsid)` gives (record, rkey) pairs the lexicons accept, extremes included: strings at
  their exact byte and grapheme limits built from multi-byte and multi-code-point clusters,
  integers at their bounds (or the whole 64-bit range), arrays at their maximum length, every
  form each string format allows, every union variant, unknown extra fields of any data-model
  value (U+0000 included).
- `targets(nsid)` lists every constraint of the record type that can be broken on its own, and
  `broken(nsid, target)` gives a `Broken` record: a valid record with exactly that one
  constraint broken, and the path the lexicon validator names for it.

Where a generator cannot be exact (datetimes that normalize before year 0000, random code points
that join the cluster before them), values are filtered with `protocol.syntax.is_valid` or an
exact byte/grapheme count.
"""

from __future__ import annotations

import base64
import functools
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grapheme
import orjson
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from core.lexicons import LEXICONS_DIR
from protocol.cid import cid_for_cbor, cid_for_raw, cid_to_str
from protocol.syntax import is_valid

__all__ = ["Broken", "LexiconStrategies", "Target", "data_values", "format_values", "text_values"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Limits of the string formats (atproto specs): used to generate the longest valid values.
DID_MAX = 2048
HANDLE_MAX = 253
NSID_MAX = 317
RKEY_MAX = 512
URI_MAX = 8192
# Unbounded strings and arrays are generated up to these sizes: big enough to be interesting,
# small enough to keep examples fast.
FREE_TEXT_BYTES = 300
FREE_ITEMS = 4

# 4 authority segments of 63 characters and a 61-character name: 317 characters.
LONGEST_NSID = ".".join(("a" * 63, "b" * 63, "c" * 63, "d" * 63, "E" * 61))
_B32 = "234567abcdefghijklmnopqrstuvwxyz"
_TID_FIRST = "234567abcdefghij"
_RKEY_CHARS = string.ascii_letters + string.digits + "._:~-"
_DID_ID_CHARS = string.ascii_letters + string.digits + "._:%-"
_LABEL_CHARS = string.ascii_letters + string.digits + "-"
_ALNUM = string.ascii_letters + string.digits

# Grapheme clusters whose byte and cluster counts are known and that never join their
# neighbours: multi-byte characters, combining sequences, emoji with modifiers, ZWJ sequences,
# flags, Hangul jamo, CR LF, U+0000.
SAFE_CLUSTERS: tuple[str, ...] = (
    "a", "Z", "0", " ", "~", "\x00", "\t", "\x7f",
    "\u00e9",  # é precomposed: 2 bytes
    "e\u0301",  # e + combining acute: 3 bytes, 1 cluster
    "\u00df", "\u0436", "\u05d0", "\u0628",  # ß ж א ب: 2 bytes
    "\u4e2d", "\u3042", "\uac01", "\u20ac",  # 中 あ 각 €: 3 bytes
    "\U0001d11e", "\U0001f600", "\U00010348",  # 𝄞 😀 𐍈: 4 bytes
    "\U0001f44d\U0001f3fd",  # thumbs up + skin tone: 8 bytes
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # family ZWJ: 25 bytes
    "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag: 14 bytes
    "\U0001f1eb\U0001f1f7",  # flag FR (regional indicators): 8 bytes
    "\u1100\u1161\u11a8",  # Hangul L V T jamo: 9 bytes
    "\u0915\u094d\u0937\u093f",  # Devanagari conjunct with vowel sign
    "\r\n",
    "\ufeff", "\U0010fffd", "\uffff",
)  # fmt: skip
# Two-byte combining marks (U+0300..U+036F): appended to a base letter they make one cluster of
# any size, which is how byte counts are hit exactly under a grapheme limit.
_COMBINING = tuple(chr(c) for c in range(0x300, 0x370))
_LATIN1_LETTERS = tuple(chr(c) for c in range(0xC0, 0x100))
_ANY_CHAR = st.characters(exclude_categories=("Cs",))  # every code point a string can hold
_CLUSTER = st.one_of(st.sampled_from(SAFE_CLUSTERS), _ANY_CHAR)


# --- small helpers ------------------------------------------------------------------------


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def grapheme_len(text: str) -> int:
    return grapheme.length(text)


def json_round_trip(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def _chars(alphabet: str, min_size: int, max_size: int) -> SearchStrategy[str]:
    return st.text(alphabet=st.sampled_from(alphabet), min_size=min_size, max_size=max_size)


def _extremes(low: int, high: int, extra: Sequence[int] = ()) -> list[int]:
    points = {low, high, low + 1, high - 1, 0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, *extra}
    return sorted(p for p in points if low <= p <= high)


def ints(low: int = INT64_MIN, high: int = INT64_MAX) -> SearchStrategy[int]:
    """Integers in [low, high], with the bounds and the usual overflow points drawn often."""
    return st.one_of(st.sampled_from(_extremes(low, high)), st.integers(low, high))


# --- text with exact byte and grapheme counts -----------------------------------------------


def _filler(n: int, draw: Callable[[SearchStrategy[Any]], Any]) -> str:
    """One grapheme cluster of exactly `n` >= 1 UTF-8 bytes: a base letter and combining marks."""
    if n == 1:
        return draw(st.sampled_from(string.ascii_letters + string.digits + string.punctuation))
    if n % 2:
        base = draw(st.sampled_from(string.ascii_letters))
    else:
        base = draw(st.sampled_from(_LATIN1_LETTERS))
    marks = (n - utf8_len(base)) // 2
    mark = draw(st.sampled_from(_COMBINING))
    return base + mark * marks


def _build(
    draw: Callable[[SearchStrategy[Any]], Any], motif: Sequence[str], n_bytes: int, n_graphemes: int
) -> str:
    """`n_graphemes` clusters of `n_bytes` bytes in total (n_bytes >= n_graphemes), cycling
    through `motif`; what the motif cannot fill goes to 1-byte characters and a last filler."""
    if n_graphemes == 0:
        return ""
    parts: list[str] = []
    used = 0
    for i in range(n_graphemes - 1):
        left = n_graphemes - i - 1  # clusters still to place after this one
        cluster = motif[i % len(motif)]
        if used + utf8_len(cluster) > n_bytes - left - 1:  # keep >= 1 byte for each of the rest
            cluster = "a"
        parts.append(cluster)
        used += utf8_len(cluster)
    parts.append(_filler(n_bytes - used, draw))
    return "".join(parts)


@dataclass(frozen=True)
class TextLimits:
    """Size limits of a lexicon string: UTF-8 bytes and grapheme clusters."""

    min_bytes: int = 0
    max_bytes: int | None = None
    min_graphemes: int = 0
    max_graphemes: int | None = None

    @classmethod
    def of(cls, schema: dict[str, Any]) -> TextLimits:
        return cls(
            schema.get("minLength", 0),
            schema.get("maxLength"),
            schema.get("minGraphemes", 0),
            schema.get("maxGraphemes"),
        )

    def fits(self, text: str) -> bool:
        size = utf8_len(text)
        if size < self.min_bytes or (self.max_bytes is not None and size > self.max_bytes):
            return False
        if self.min_graphemes == 0 and self.max_graphemes is None:
            return True
        count = grapheme_len(text)
        return count >= self.min_graphemes and (
            self.max_graphemes is None or count <= self.max_graphemes
        )


@st.composite
def _sized_text(
    draw: st.DrawFn,
    min_b: int,
    max_b: int,
    min_g: int,
    max_g: int,
    safe: bool,
) -> str:
    """A string of b bytes and g clusters, min_b <= b <= max_b and min_g <= g <= max_g, aiming
    at the bounds. `safe` restricts clusters to SAFE_CLUSTERS (exact counts guaranteed)."""
    max_g = min(max_g, max_b)
    min_b = max(min_b, min_g)
    mode = draw(st.sampled_from(("free", "min", "max_bytes", "max_graphemes", "both")))
    if mode == "min":
        n_bytes = min_b
        n_graphemes = max(min_g, 1 if n_bytes else 0)
    elif mode == "max_bytes":
        n_bytes = max_b
        n_graphemes = draw(st.integers(max(min_g, 1 if n_bytes else 0), max_g))
    elif mode == "max_graphemes":
        n_graphemes = max_g
        n_bytes = draw(st.integers(max(min_b, n_graphemes), max_b))
    elif mode == "both":
        n_bytes, n_graphemes = max_b, max_g
    else:
        n_bytes = draw(st.integers(min_b, min(max_b, min_b + FREE_TEXT_BYTES)))
        n_graphemes = draw(st.integers(max(min_g, 1 if n_bytes else 0), min(max_g, n_bytes)))
    if n_bytes and not n_graphemes:
        n_graphemes = 1
    cluster = st.sampled_from(SAFE_CLUSTERS) if safe else _CLUSTER
    motif = draw(st.lists(cluster, min_size=1, max_size=6))
    return _build(draw, motif, n_bytes, n_graphemes)


# Strategies are built once: constructing them per example costs more than drawing them.
@functools.cache
def text_values(limits: TextLimits = TextLimits(), *, safe: bool = False) -> SearchStrategy[str]:
    """Strings within `limits`, at their exact extremes as often as in between."""
    max_b = limits.max_bytes if limits.max_bytes is not None else FREE_TEXT_BYTES * 4
    max_g = limits.max_graphemes if limits.max_graphemes is not None else max_b
    sized = _sized_text(limits.min_bytes, max_b, limits.min_graphemes, max_g, safe)
    options: list[SearchStrategy[str]] = [sized]
    if not safe:
        # Plain hypothesis text too: it finds odd code points the cluster motifs do not have.
        options.append(st.text(_ANY_CHAR, max_size=40))
    return st.one_of(*options).filter(limits.fits)


# --- string formats -----------------------------------------------------------------------


def _fits_len(limit: int) -> Callable[[str], bool]:
    return lambda s: len(s) <= limit


@functools.cache
def tids() -> SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(("2222222222222", "jzzzzzzzzzzzz", "3jzfcijpj2z2a")),
        st.builds(lambda a, b: a + b, st.sampled_from(_TID_FIRST), _chars(_B32, 12, 12)),
    )


@functools.cache
def record_keys() -> SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(("self", "a", "~", ":", "...", "-", "_", "3jzfcijpj2z2a", "r" * RKEY_MAX)),
        _chars(_RKEY_CHARS, 1, 40),
        _chars(_RKEY_CHARS, RKEY_MAX, RKEY_MAX),
    ).filter(lambda s: is_valid("record-key", s))


def _label(min_size: int = 1, max_size: int = 63) -> SearchStrategy[str]:
    """A DNS label: letters, digits and inner hyphens."""
    return st.builds(
        lambda first, mid, last: first + mid + last if mid or last else first,
        st.sampled_from(_ALNUM),
        _chars(_LABEL_CHARS, 0, max(0, max_size - 2)),
        st.sampled_from(("", *_ALNUM)),
    ).filter(lambda s: min_size <= len(s) <= max_size and s[-1] != "-")


@functools.cache
def handles() -> SearchStrategy[str]:
    longest = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61  # 253 characters
    tld = _label().filter(lambda s: s[0].isalpha())
    return st.one_of(
        st.sampled_from(("alice.test", "a.co", "XN--LS8H.example", "0.a", longest)),
        st.builds(
            lambda labels, last: ".".join([*labels, last]),
            st.lists(_label(), min_size=1, max_size=4),
            tld,
        ),
    ).filter(lambda s: is_valid("handle", s))


@functools.cache
def dids() -> SearchStrategy[str]:
    plc = st.builds(lambda s: "did:plc:" + s, _chars("abcdefghijklmnopqrstuvwxyz234567", 24, 24))
    web = st.builds(
        lambda host, port, path: "did:web:" + host + port + path,
        handles(),
        st.sampled_from(("", "%3A8080", "%3a443")),
        st.sampled_from(("", ":u:alice", ":a.b:c_d")),
    )
    other = st.builds(
        lambda method, ident, last: f"did:{method}:{ident}{last}",
        _chars(string.ascii_lowercase, 1, 12),
        _chars(_DID_ID_CHARS, 0, 60),
        st.sampled_from(string.ascii_letters + string.digits + "._-"),
    )
    return st.one_of(plc, web, other, longest_dids()).filter(lambda s: is_valid("did", s))


@functools.cache
def longest_dids() -> SearchStrategy[str]:
    """DIDs of exactly the 2048-character limit."""
    return st.builds(
        lambda method, ident: (f"did:{method}:" + ident * DID_MAX)[:DID_MAX],
        _chars(string.ascii_lowercase, 1, 8),
        _chars(string.ascii_letters + string.digits + "._-", 1, 8),
    )


@functools.cache
def nsids() -> SearchStrategy[str]:
    name = st.builds(
        lambda a, b: a + b, st.sampled_from(string.ascii_letters), _chars(_ALNUM, 0, 62)
    )
    first = _label().filter(lambda s: s[0].isalpha())
    longest = LONGEST_NSID
    return st.one_of(
        st.sampled_from(("fm.plyr.track", "com.example.fooBar", "a.b.c", "a-0.b-1.c", longest)),
        st.builds(
            lambda f, rest, n: ".".join([f, *rest, n]),
            first,
            st.lists(_label(), min_size=1, max_size=4),
            name,
        ),
    ).filter(lambda s: is_valid("nsid", s))


def _cid_of(data: bytes, raw: bool) -> str:
    return cid_to_str(cid_for_raw(data) if raw else cid_for_cbor(data))


@functools.cache
def link_cids() -> SearchStrategy[str]:
    """Real CIDv1 strings (dag-cbor or raw, sha-256): what `$link` and blob refs hold."""
    return st.builds(_cid_of, st.binary(max_size=32), st.booleans())


@functools.cache
def cid_strings() -> SearchStrategy[str]:
    """Anything the `cid` string format accepts: real CIDs and loose multibase-looking text."""
    loose = _chars(_ALNUM + "+=", 8, 256)
    return st.one_of(link_cids(), loose, _chars(_ALNUM + "+=", 256, 256)).filter(
        lambda s: is_valid("cid", s)
    )


@functools.cache
def at_identifiers() -> SearchStrategy[str]:
    return st.one_of(dids(), handles())


@functools.cache
def at_uris() -> SearchStrategy[str]:
    longest = st.builds(
        lambda did, nsid, rkey: f"at://{did}/{nsid}/{rkey}",
        longest_dids().filter(lambda d: is_valid("did", d)),
        st.just(LONGEST_NSID),
        _chars(_RKEY_CHARS, RKEY_MAX, RKEY_MAX),
    )
    parts = st.builds(
        lambda authority, rest: "at://" + authority + rest,
        at_identifiers(),
        st.one_of(
            st.just(""),
            st.builds(lambda n: "/" + n, nsids()),
            st.builds(lambda n, k: f"/{n}/{k}", nsids(), record_keys()),
        ),
    )
    return st.one_of(parts, longest).filter(lambda s: is_valid("at-uri", s))


@st.composite
def _uri(draw: st.DrawFn) -> str:
    scheme = draw(
        st.one_of(
            st.sampled_from(("https", "http", "at", "did", "mailto", "urn", "ipfs", "x-a+b.c-d")),
            st.builds(
                lambda a, b: a + b,
                st.sampled_from(string.ascii_letters),
                _chars(_ALNUM + "+.-", 0, 20),
            ),
        )
    )
    slashes = draw(st.sampled_from(("//", "")))
    non_space = _ANY_CHAR.filter(lambda c: not c.isspace())
    first = draw(non_space.filter(lambda c: c != "/"))
    tail = draw(st.text(non_space, max_size=30))
    uri = f"{scheme}:{slashes}{first}{tail}"
    if draw(st.booleans()):
        # Very long: padded to a size up to the 8 KB limit, often exactly to it.
        target = draw(st.one_of(st.just(URI_MAX), st.integers(utf8_len(uri), URI_MAX)))
        pad = draw(st.sampled_from(("a", "/", "%20", "~", "\u00e9")))
        while utf8_len(uri) + utf8_len(pad) <= target:
            uri += pad * max(1, (target - utf8_len(uri)) // utf8_len(pad) // 2)
        uri += "x" * (target - utf8_len(uri))
    return uri


@functools.cache
def uris() -> SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(("https://example.com/a.mp3", "http://[::1]:8080/x?q=1#f", "a:b")),
        _uri(),
    ).filter(lambda s: is_valid("uri", s))


def _days_in(year: int, month: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]


@st.composite
def _datetime(draw: st.DrawFn) -> str:
    year = draw(st.sampled_from((1985, 0, 1, 2, 1969, 1970, 2038, 9998, 9999)) | ints(0, 9999))
    month = draw(st.integers(1, 12) | st.sampled_from((1, 2, 12)))
    day = draw(st.integers(1, _days_in(year, month)) | st.just(_days_in(year, month)))
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    digits = draw(st.one_of(st.just(0), st.sampled_from((3, 6, 9)), st.integers(1, 40)))
    frac = "." + draw(_chars(string.digits, digits, digits)) if digits else ""
    if draw(st.booleans()):
        zone = "Z"
    else:
        sign = draw(st.sampled_from("+-"))
        tz_h = draw(st.sampled_from((0, 23)) | st.integers(0, 23))
        tz_m = draw(st.sampled_from((0, 59)) | st.integers(0, 59))
        if sign == "-" and tz_h == tz_m == 0:
            sign = "+"  # -00:00 is the one offset the syntax refuses
        zone = f"{sign}{tz_h:02d}:{tz_m:02d}"
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{frac}{zone}"


@functools.cache
def datetimes() -> SearchStrategy[str]:
    return st.one_of(
        # An everyday value first: it is what failing examples shrink to, so a minimal example
        # does not drag in an extreme datetime unless that is the cause.
        st.sampled_from(
            (
                "1985-04-12T23:20:50.123Z",
                "0000-01-01T00:00:00Z",
                "0000-01-01T00:00:00-23:59",
                "0000-02-29T12:00:00.0Z",
                "0001-01-01T00:00:00Z",
                "0001-01-01T00:00:00+00:01",
                "9999-12-31T23:59:59.999999999Z",
                "9999-12-31T23:59:59-23:59",
            )
        ),
        _datetime(),
    ).filter(lambda s: is_valid("datetime", s))


@functools.cache
def languages() -> SearchStrategy[str]:
    tag = st.builds(
        lambda lang, script, region, variant, ext, private: (
            lang + script + region + variant + ext + private
        ),
        _chars(string.ascii_lowercase, 2, 3),
        st.sampled_from(("", "-Latn", "-cyrl", "-Hant")),
        st.sampled_from(("", "-US", "-gb", "-419")),
        st.sampled_from(("", "-1996", "-fonipa", "-valencia")),
        st.sampled_from(("", "-u-ca-gregory", "-t-en-a1b2c3")),
        st.sampled_from(("", "-x-private", "-X-a-b")),
    )
    return st.one_of(
        st.sampled_from(("en", "pt-BR", "zh-Hant-TW", "i-klingon", "x-whatever", "sgn-BE-FR")), tag
    ).filter(lambda s: is_valid("language", s))


FORMATS: dict[str, Callable[[], SearchStrategy[str]]] = {
    "datetime": datetimes,
    "uri": uris,
    "at-uri": at_uris,
    "did": dids,
    "handle": handles,
    "cid": cid_strings,
    "nsid": nsids,
    "tid": tids,
    "record-key": record_keys,
    "language": languages,
    "at-identifier": at_identifiers,
}


@functools.cache
def format_values(fmt: str) -> SearchStrategy[str]:
    try:
        return FORMATS[fmt]()
    except KeyError:
        raise NotImplementedError(f"no generator for string format {fmt!r}") from None


# Strings each format refuses, checked with is_valid when drawn: wrong shapes, one character
# off, and values just past the format's length limit.
_BAD_FORMAT: dict[str, tuple[str, ...]] = {
    "datetime": (
        "1985-04-12T23:20:50.123", "1985-04-12 23:20:50Z", "1985-04-12T23:20:50.123-00:00",
        "1985-04-12t23:20:50z", "2023-02-29T00:00:00Z", "1985-04-12T24:00:00Z", "1985-04-12",
        "0000-01-01T00:00:00+00:01", "1985-04-12T23:20:50.Z", "+1985-04-12T23:20:50Z",
        "1985-04-12T23:20:50+24:00", "1985-04-12T23:20:60Z", "1985-04-12T23:20:50." + "1" * 60 + "Z",
    ),
    "uri": ("no-scheme", "https:// space", "1http://a", ":x", "https:/", "a:" + "b" * URI_MAX),
    "at-uri": (
        "at://", "at://did:plc:x/", "https://a.b/c", "at://a.b/c/d/e", "at://a.b/fm.plyr.track/.",
        "at://a.b?q", "at://a.b#frag", "at://did:plc:" + "a" * DID_MAX, "at://a.b/not an nsid",
    ),
    "did": ("did:plc:", "DID:plc:abc", "did:PLC:abc", "did:plc:abc:", "did:plc:ab%", "plc:abc", "did:x:" + "a" * DID_MAX),
    "handle": ("alice", "-a.test", "a.test-", "a..test", "a.0test", "a.b_c", "a" * 64 + ".test", ("a." * 127) + "test"),
    "cid": ("bafy", "Qm" + "a" * 44, "bafy/reib", "bafy rei" + "a" * 10, "a" * 257),
    "nsid": ("fm.plyr", "fm..plyr.track", "1fm.plyr.track", "fm.plyr.track-x", "fm.plyr.tr_ack", "fm.plyr." + "a" * 64),
    "tid": ("3jzfcijpj2z2", "3jzfcijpj2z2aa", "kjzfcijpj2z2a", "3JZFCIJPJ2Z2A", "3jzfcijpj2z21"),
    "record-key": ("", ".", "..", "a/b", "a b", "\u00e9", "a" * (RKEY_MAX + 1), "a#b"),
    "language": ("", "e", "english", "EN", "en_US", "en-", "1en"),
    "at-identifier": ("", "alice", "did:plc", "@alice.test", "did:plc:ab%"),
}  # fmt: skip


@functools.cache
def bad_format_values(fmt: str) -> SearchStrategy[str]:
    mangled = format_values(fmt).flatmap(
        lambda good: st.sampled_from(
            (good + " ", " " + good, good[:-1] + "\u00e9", good.replace(":", "", 1), good[:1])
        )
    )
    return st.one_of(st.sampled_from(_BAD_FORMAT[fmt]), mangled).filter(
        lambda s: not is_valid(fmt, s)
    )


# --- data-model values (unknown fields) -----------------------------------------------------


@functools.cache
def bytes_values(min_size: int = 0, max_size: int = 64) -> SearchStrategy[dict[str, str]]:
    """`{"$bytes": ...}`: standard base64 without padding, the JSON form of bytes."""
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda b: {"$bytes": base64.b64encode(b).decode().rstrip("=")}
    )


@functools.cache
def links() -> SearchStrategy[dict[str, str]]:
    return link_cids().map(lambda c: {"$link": c})


def _mime_matches(accept: Sequence[str] | None, mime: str) -> bool:
    """Our own reading of the lexicon `accept` list (type/subtype, type/*, */*)."""
    if accept is None:
        return True
    mime = mime.partition(";")[0].strip().lower()
    for pattern in accept:
        pattern = pattern.lower()
        if pattern == "*/*" or pattern == mime:
            return True
        if (
            pattern.endswith("/*")
            and mime.startswith(pattern[:-1])
            and len(mime) > len(pattern) - 1
        ):
            return True
    return False


def _mime_types(accept: Sequence[str] | None) -> SearchStrategy[str]:
    """MIME types matching `accept` (any MIME type when there is no accept list)."""
    subtype = st.one_of(
        st.sampled_from(("mpeg", "ogg", "flac", "x-m4a", "vnd.example+json", "mp4")),
        _chars(_ALNUM + ".+-", 1, 20).filter(lambda s: s[0].isalnum()),
    )
    options: list[SearchStrategy[str]] = []
    for pattern in accept or ("*/*",):
        major, _, minor = pattern.partition("/")
        if pattern == "*/*":
            main = st.sampled_from(("audio", "image", "video", "application", "text", "x-custom"))
            options.append(st.builds(lambda a, b: f"{a}/{b}", main, subtype))
        elif minor == "*":
            options.append(st.builds(lambda b, m=major: f"{m}/{b}", subtype))
        else:
            options.append(st.just(pattern))
    params = st.sampled_from(("", "; codecs=opus", ";charset=utf-8"))
    case = st.sampled_from((str, str.upper))
    return st.builds(lambda m, p, c: c(m) + p, st.one_of(*options), params, case).filter(
        lambda m: _mime_matches(accept, m)
    )


def blobs(
    accept: Sequence[str] | None = None, max_size: int | None = None
) -> SearchStrategy[dict[str, Any]]:
    return _blobs(tuple(accept) if accept is not None else None, max_size)


@functools.cache
def _blobs(accept: tuple[str, ...] | None, max_size: int | None) -> SearchStrategy[dict[str, Any]]:
    high = max_size if max_size is not None else INT64_MAX
    current = st.builds(
        lambda cid, mime, size: {
            "$type": "blob",
            "ref": {"$link": cid},
            "mimeType": mime,
            "size": size,
        },
        link_cids(),
        _mime_types(accept),
        ints(1, high),
    )
    # The legacy form (a CID string and a MIME type, no size) is still valid data.
    legacy = st.builds(
        lambda cid, mime: {"cid": cid, "mimeType": mime}, link_cids(), _mime_types(accept)
    )
    return st.one_of(current, legacy)


@functools.cache
def field_names(exclude: frozenset[str] = frozenset()) -> SearchStrategy[str]:
    """Names of fields no schema declares: any text, but not `$`-prefixed (reserved)."""
    return st.one_of(
        st.sampled_from(("extra", "x", "\x00", "emoji\U0001f600", "a" * 200)),
        st.text(_ANY_CHAR, min_size=1, max_size=20),
    ).filter(lambda k: not k.startswith("$") and k not in exclude)


@functools.cache
def data_values(max_leaves: int = 8) -> SearchStrategy[Any]:
    """Any atproto data-model value in JSON form (no floats)."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        ints(),
        text_values(),
        bytes_values(),
        links(),
        blobs(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(field_names(), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


# --- targets and broken records -------------------------------------------------------------

ITEM = "[]"  # schema step into array items


@dataclass(frozen=True)
class Target:
    """One constraint of a record type. `steps` leads from the record to the constrained value
    (property names, ITEM for array items, `<nsid#name>` for a union variant); `kind` is the
    lexicon keyword (minLength, format, required, ...) or a data-model rule (type, null,
    int64-min, blob-size, union-type, $type, rkey)."""

    steps: tuple[str, ...]
    kind: str

    def __str__(self) -> str:
        return "/".join(self.steps) + f" [{self.kind}]" if self.steps else f"[{self.kind}]"


@dataclass(frozen=True)
class Broken:
    """A record with exactly one constraint broken. `path` is where the lexicon validator
    reports it (`record/features/0/did`, `record/$type`, `rkey`); `names` are the ways a
    dead-letter reason may name that field."""

    record: dict[str, Any]
    rkey: str
    target: Target
    path: str
    names: tuple[str, ...]


# Keywords of lexicon schemas that constrain nothing (documentation, or handled structurally).
NON_CONSTRAINT_KEYWORDS = frozenset(
    ("type", "description", "properties", "items", "ref", "refs", "knownValues", "default",
     "nullable", "record", "lexicon", "id", "defs")
)  # fmt: skip


class LexiconStrategies:
    """Strategies for the record types of a set of lexicon documents."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs
        self._memo: dict[tuple[str, ...], SearchStrategy[Any]] = {}

    def _cached(
        self, key: tuple[str, ...], build: Callable[[], SearchStrategy[Any]]
    ) -> SearchStrategy[Any]:
        # Tests draw these per example; building the strategy tree each time is the slow part.
        strategy = self._memo.get(key)
        if strategy is None:
            strategy = self._memo[key] = build()
        return strategy

    @classmethod
    def load(cls, folder: Path = LEXICONS_DIR) -> LexiconStrategies:
        docs: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.rglob("*.json")):
            doc = orjson.loads(path.read_bytes())
            docs[doc["id"]] = doc
        return cls(docs)

    def record_types(self) -> list[str]:
        return sorted(
            nsid
            for nsid, doc in self.docs.items()
            if doc["defs"].get("main", {}).get("type") == "record"
        )

    def key_type(self, nsid: str) -> str:
        return self.docs[nsid]["defs"]["main"]["key"]

    def resolve(self, ref: str, doc_id: str) -> tuple[dict[str, Any], str, str]:
        """(schema, its document id, full `nsid#name`) of a reference made from `doc_id`."""
        full = doc_id + ref if ref.startswith("#") else (ref if "#" in ref else ref + "#main")
        nsid, _, name = full.partition("#")
        return self.docs[nsid]["defs"][name], nsid, full

    # record keys

    def rkeys(self, nsid: str) -> SearchStrategy[str]:
        key = self.key_type(nsid)
        if key == "tid":
            return tids()
        if key == "nsid":
            return nsids().filter(lambda s: is_valid("record-key", s))
        if key.startswith("literal:"):
            return st.just(key[len("literal:") :])
        return record_keys()

    def bad_rkeys(self, nsid: str) -> SearchStrategy[str]:
        """Record keys the key type refuses; for tid/nsid/literal mostly valid record-key syntax
        (the case only the lexicon's key type catches)."""
        key = self.key_type(nsid)
        malformed = st.sampled_from(_BAD_FORMAT["record-key"])
        if key == "any":
            return malformed
        literal = key[len("literal:") :] if key.startswith("literal:") else None

        def fits(rkey: str) -> bool:
            return rkey == literal if literal is not None else is_valid(key, rkey)

        near = st.sampled_from(
            (
                "my-favourite-track",
                "self",
                "Self",
                "self2",
                "fm.plyr",
                "3jzfcijpj2z2a",
                "3JZFCIJPJ2Z2A",
            )
        )
        return st.one_of(near, record_keys(), malformed).filter(lambda s: not fits(s))

    # valid values

    def valid(self, nsid: str) -> SearchStrategy[tuple[dict[str, Any], str]]:
        """(record, rkey) pairs the lexicons accept."""
        return self._cached(
            ("valid", nsid), lambda: st.tuples(self.record_values(nsid), self.rkeys(nsid))
        )

    def record_values(self, nsid: str) -> SearchStrategy[dict[str, Any]]:
        record = self.docs[nsid]["defs"]["main"]["record"]
        return self._cached(
            ("record", nsid), lambda: self._object(record, nsid, (), type_value=nsid)
        )

    def value(
        self, schema: dict[str, Any], doc_id: str, stack: tuple[str, ...] = ()
    ) -> SearchStrategy[Any]:
        """Valid values of one field schema. `stack` holds the definitions being expanded (a
        recursive definition would otherwise never end)."""
        t = schema["type"]
        if t == "ref":
            target, target_doc, full = self.resolve(schema["ref"], doc_id)
            if full in stack:
                raise NotImplementedError(f"recursive lexicon definition {full}")
            if target["type"] == "record":
                target = target["record"]
            return self.value(target, target_doc, (*stack, full))
        if t == "object":
            return self._object(schema, doc_id, stack)
        if t == "union":
            return st.one_of(*self._union_members(schema, doc_id, stack))
        if t == "array":
            return self._array(schema, self.value(schema["items"], doc_id, stack))
        if t == "string":
            return self._string(schema)
        if t == "integer":
            if "const" in schema:
                return st.just(schema["const"])
            if "enum" in schema:
                return st.sampled_from(schema["enum"])
            return ints(schema.get("minimum", INT64_MIN), schema.get("maximum", INT64_MAX))
        if t == "boolean":
            return st.just(schema["const"]) if "const" in schema else st.booleans()
        if t == "null":
            return st.none()
        if t == "bytes":
            low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
            return st.one_of(
                bytes_values(low, low), bytes_values(high, high), bytes_values(low, high)
            )
        if t == "cid-link":
            return links()
        if t == "blob":
            return blobs(schema.get("accept"), schema.get("maxSize"))
        if t == "unknown":
            return st.dictionaries(field_names(), data_values(), max_size=4)
        raise NotImplementedError(f"no generator for lexicon type {t!r}")

    def _string(self, schema: dict[str, Any]) -> SearchStrategy[str]:
        limits = TextLimits.of(schema)
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "format" in schema:
            return format_values(schema["format"]).filter(limits.fits)
        free = text_values(limits)
        known = [v for v in schema.get("knownValues", ()) if limits.fits(v)]
        # Known values and any other string: knownValues do not restrict the value.
        return st.one_of(st.sampled_from(known), free) if known else free

    def _array(
        self, schema: dict[str, Any], items: SearchStrategy[Any]
    ) -> SearchStrategy[list[Any]]:
        low = schema.get("minLength", 0)
        high = schema.get("maxLength")
        free = st.lists(
            items,
            min_size=low,
            max_size=min(high if high is not None else FREE_ITEMS, low + FREE_ITEMS),
        )
        if high is None or high <= low + FREE_ITEMS:
            return free
        # The longest array: a few drawn items repeated to the exact maximum (drawing hundreds
        # of distinct items would exhaust hypothesis' data budget).
        longest = st.lists(items, min_size=1, max_size=3).map(
            lambda pool: [pool[i % len(pool)] for i in range(high)]
        )
        return st.one_of(free, longest)

    def _union_members(
        self, schema: dict[str, Any], doc_id: str, stack: tuple[str, ...]
    ) -> list[SearchStrategy[Any]]:
        members: list[SearchStrategy[Any]] = []
        for ref in schema["refs"]:
            target, target_doc, full = self.resolve(ref, doc_id)
            if target["type"] == "record":
                target = target["record"]
            members.append(
                self._object(target, target_doc, (*stack, full), type_value=_type_value(full))
            )
        if not schema.get("closed"):
            # Open union: an object of a type we do not know is valid, as data.
            known = {_type_value(self.resolve(r, doc_id)[2]) for r in schema["refs"]}
            other = st.builds(
                lambda t, fields: {**fields, "$type": t},
                st.one_of(nsids(), nsids().map(lambda n: n + "#other")).filter(
                    lambda t: t not in known
                ),
                st.dictionaries(field_names(), data_values(), max_size=3),
            )
            members.append(other)
        return members

    def _object(
        self,
        schema: dict[str, Any],
        doc_id: str,
        stack: tuple[str, ...],
        *,
        type_value: str | None = None,
        override: dict[str, Any] | None = None,
        omit: str | None = None,
    ) -> SearchStrategy[dict[str, Any]]:
        """Objects of `schema`: required properties always, optional ones or not, nullable
        ones maybe null, plus unknown fields. `override` fixes properties (forced present),
        `omit` leaves one out."""
        props: dict[str, dict[str, Any]] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        nullable = set(schema.get("nullable", ()))
        fixed: dict[str, SearchStrategy[Any]] = {}
        optional: dict[str, SearchStrategy[Any]] = {}
        for name, prop in props.items():
            if name == omit:
                continue
            if override is not None and name in override:
                fixed[name] = st.just(override[name])
                continue
            strategy = self.value(prop, doc_id, stack)
            if name in nullable:
                strategy = st.one_of(st.none(), strategy)
            (fixed if name in required else optional)[name] = strategy
        extras = st.dictionaries(field_names(frozenset(props)), data_values(), max_size=2)

        def merge(parts: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
            declared, unknown = parts
            out = {**unknown, **declared}
            if type_value is not None:
                out["$type"] = type_value
            return out

        return st.tuples(st.fixed_dictionaries(fixed, optional=optional), extras).map(merge)

    # constraints

    def targets(self, nsid: str) -> list[Target]:
        """Every constraint of record type `nsid` that can be broken alone."""
        record = self.docs[nsid]["defs"]["main"]["record"]
        found = [Target((), "$type"), Target((), "rkey")]
        found.extend(self._targets(record, nsid, (), ()))
        return found

    def _targets(
        self, schema: dict[str, Any], doc_id: str, steps: tuple[str, ...], stack: tuple[str, ...]
    ) -> Iterator[Target]:
        t = schema["type"]
        if t == "ref":
            target, target_doc, full = self.resolve(schema["ref"], doc_id)
            if target["type"] == "record":
                target = target["record"]
            yield from self._targets(target, target_doc, steps, (*stack, full))
        elif t == "object":
            nullable = set(schema.get("nullable", ()))
            for name in schema.get("required", ()):
                yield Target((*steps, name), "required")
            for name, prop in schema.get("properties", {}).items():
                yield Target((*steps, name), "type")
                if name not in nullable and prop["type"] != "null":
                    yield Target((*steps, name), "null")
                yield from self._targets(prop, doc_id, (*steps, name), stack)
        elif t == "array":
            for key in ("minLength", "maxLength"):
                if key in schema and not (key == "minLength" and schema[key] == 0):
                    yield Target(steps, key)
            yield Target((*steps, ITEM), "type")
            yield from self._targets(schema["items"], doc_id, (*steps, ITEM), stack)
        elif t == "union":
            yield Target(steps, "union-type")
            if schema.get("closed"):
                yield Target(steps, "closed")
            for ref in schema["refs"]:
                target, target_doc, full = self.resolve(ref, doc_id)
                if target["type"] == "record":
                    target = target["record"]
                yield from self._targets(target, target_doc, (*steps, f"<{full}>"), (*stack, full))
        elif t == "string":
            limits = TextLimits.of(schema)
            if limits.min_bytes > 0:
                yield Target(steps, "minLength")
            if limits.max_bytes is not None:
                yield Target(steps, "maxLength")
            if limits.min_graphemes > 0:
                yield Target(steps, "minGraphemes")
            # maxGraphemes can only be broken alone while a longer string fits in maxLength.
            if limits.max_graphemes is not None and (
                limits.max_bytes is None or limits.max_graphemes < limits.max_bytes
            ):
                yield Target(steps, "maxGraphemes")
            for key in ("format", "enum", "const"):
                if key in schema:
                    yield Target(steps, key)
        elif t == "integer":
            yield Target(steps, "minimum" if "minimum" in schema else "int64-min")
            yield Target(steps, "maximum" if "maximum" in schema else "int64-max")
            for key in ("enum", "const"):
                if key in schema:
                    yield Target(steps, key)
        elif t == "boolean":
            if "const" in schema:
                yield Target(steps, "const")
        elif t == "bytes":
            if schema.get("minLength", 0) > 0:
                yield Target(steps, "minLength")
            if "maxLength" in schema:
                yield Target(steps, "maxLength")
        elif t == "cid-link":
            yield Target(steps, "link")
        elif t == "blob":
            yield Target(steps, "blob-size")
            if "accept" in schema and "*/*" not in schema["accept"]:
                yield Target(steps, "accept")
            if "maxSize" in schema:
                yield Target(steps, "maxSize")

    def broken(self, nsid: str, target: Target) -> SearchStrategy[Broken]:
        """A record of `nsid` that is valid except for `target`."""
        key = ("broken", nsid, target.kind, *target.steps)
        return self._cached(key, lambda: self._broken_record(nsid, target))

    def _broken_record(self, nsid: str, target: Target) -> SearchStrategy[Broken]:
        if target.kind == "rkey":
            return st.builds(
                lambda rec, rkey: Broken(rec, rkey, target, "rkey", ("rkey", "record key")),
                self.record_values(nsid),
                self.bad_rkeys(nsid),
            )
        if target.kind == "$type":
            others = st.one_of(
                st.none(),
                st.sampled_from([n for n in self.record_types() if n != nsid]),
                st.just(nsid.upper()),
                st.just(nsid + "#main"),
                nsids().filter(lambda n: n != nsid),
            )

            def retype(rec: dict[str, Any], other: str | None) -> dict[str, Any]:
                out = {k: v for k, v in rec.items() if k != "$type"}
                if other is not None:
                    out["$type"] = other
                return out

            return st.builds(
                lambda rec, other, rkey: Broken(
                    retype(rec, other), rkey, target, "record/$type", ("record/$type", "$type")
                ),
                self.record_values(nsid),
                others,
                self.rkeys(nsid),
            )
        record = self.docs[nsid]["defs"]["main"]["record"]
        walk = self._broken(record, nsid, target.steps, target.kind, (), type_value=nsid)

        def make(pair: tuple[tuple[Any, tuple[str | int, ...]], str]) -> Broken:
            (rec, rel), rkey = pair
            path = "/".join(["record", *map(str, rel)])
            return Broken(rec, rkey, target, path, (path,))

        return st.tuples(walk, self.rkeys(nsid)).map(make)

    def _broken(
        self,
        schema: dict[str, Any],
        doc_id: str,
        steps: tuple[str, ...],
        kind: str,
        stack: tuple[str, ...],
        type_value: str | None = None,
    ) -> SearchStrategy[tuple[Any, tuple[str | int, ...]]]:
        """(value, path from this value to the reported field) with the constraint broken."""
        t = schema["type"]
        if t == "ref" and not (not steps and kind in ("type", "null")):
            target, target_doc, full = self.resolve(schema["ref"], doc_id)
            if target["type"] == "record":
                target = target["record"]
            return self._broken(target, target_doc, steps, kind, (*stack, full), type_value)
        if not steps:
            return self._break_here(schema, doc_id, kind, stack)
        step, rest = steps[0], steps[1:]
        if t == "object":
            if not rest and kind == "required":
                return self._object(schema, doc_id, stack, type_value=type_value, omit=step).map(
                    lambda o: (o, (step,))
                )
            sub = self._broken(schema["properties"][step], doc_id, rest, kind, stack)

            @st.composite
            def with_field(draw: st.DrawFn) -> tuple[Any, tuple[str | int, ...]]:
                value, rel = draw(sub)
                obj = draw(
                    self._object(
                        schema, doc_id, stack, type_value=type_value, override={step: value}
                    )
                )
                return obj, (step, *rel)

            return with_field()
        if t == "array":
            item_schema = schema["items"]
            sub = self._broken(item_schema, doc_id, rest, kind, stack)
            low = max(1, schema.get("minLength", 0))
            high = schema.get("maxLength")
            valid_items = self._array(
                {**schema, "minLength": low}, self.value(item_schema, doc_id, stack)
            )
            assert high is None or high >= low

            @st.composite
            def with_item(draw: st.DrawFn) -> tuple[Any, tuple[str | int, ...]]:
                items = list(draw(valid_items))
                index = draw(st.integers(0, len(items) - 1))
                value, rel = draw(sub)
                items[index] = value
                return items, (index, *rel)

            return with_item()
        if t == "union":
            full = step[1:-1]
            target, target_doc, _ = self.resolve(full, doc_id)
            if target["type"] == "record":
                target = target["record"]
            return self._broken(target, target_doc, rest, kind, (*stack, full), _type_value(full))
        raise AssertionError(f"cannot step into {t} with {step!r}")

    def _break_here(
        self, schema: dict[str, Any], doc_id: str, kind: str, stack: tuple[str, ...]
    ) -> SearchStrategy[tuple[Any, tuple[str | int, ...]]]:
        t = schema["type"]
        here: tuple[str | int, ...] = ()
        if kind == "null":
            return st.just((None, here))
        if kind == "type":
            return wrong_type(t).map(lambda v: (v, here))
        if t == "string":
            limits = TextLimits.of(schema)
            if kind == "format":
                bad = bad_format_values(schema["format"]).filter(limits.fits)
                return bad.map(lambda v: (v, here))
            if kind in ("enum", "const"):
                allowed = set(schema["enum"]) if kind == "enum" else {schema["const"]}
                return (
                    text_values(limits).filter(lambda v: v not in allowed).map(lambda v: (v, here))
                )
            return _broken_text(limits, kind).map(lambda v: (v, here))
        if t == "integer":
            low, high = schema.get("minimum", INT64_MIN), schema.get("maximum", INT64_MAX)
            if kind in ("minimum", "int64-min"):
                bad = st.one_of(
                    st.just(low - 1), st.just(INT64_MIN - 1), st.integers(max_value=low - 1)
                )
            elif kind in ("maximum", "int64-max"):
                bad = st.one_of(
                    st.just(high + 1), st.just(INT64_MAX + 1), st.integers(min_value=high + 1)
                )
            else:
                allowed = set(schema["enum"]) if kind == "enum" else {schema["const"]}
                bad = ints(low, high).filter(lambda v: v not in allowed)
            return bad.map(lambda v: (v, here))
        if t == "boolean" and kind == "const":
            return st.just((not schema["const"], here))
        if t == "array":
            low, high = schema.get("minLength", 0), schema.get("maxLength")
            items = st.lists(self.value(schema["items"], doc_id, stack), min_size=1, max_size=3)
            size = (high + 1) if kind == "maxLength" else (low - 1)
            return items.map(lambda pool: ([pool[i % len(pool)] for i in range(size)], here))
        if t == "bytes":
            low, high = schema.get("minLength", 0), schema.get("maxLength", 0)
            size = (high + 1) if kind == "maxLength" else (low - 1)
            return bytes_values(size, size).map(lambda v: (v, here))
        if t == "cid-link":
            bad_link = st.sampled_from(
                ({"$link": "not a cid"}, {"$link": 1}, {"$link": "bafy", "x": 1})
            )
            return bad_link.map(lambda v: (v, here))
        if t == "blob":
            accept, max_size = schema.get("accept"), schema.get("maxSize")
            good = blobs(accept, max_size).filter(lambda b: "size" in b)
            if kind == "blob-size":
                sizes = st.one_of(st.just(0), st.just(-1), st.integers(max_value=0))
                return st.tuples(good, sizes).map(lambda p: ({**p[0], "size": p[1]}, ("size",)))
            if kind == "maxSize":
                sizes = st.one_of(st.just(max_size + 1), st.integers(max_size + 1, INT64_MAX))
                return st.tuples(good, sizes).map(lambda p: ({**p[0], "size": p[1]}, ("size",)))
            if kind == "accept":
                mimes = _mime_types(None).filter(lambda m: not _mime_matches(accept, m))
                return st.tuples(good, mimes).map(
                    lambda p: ({**p[0], "mimeType": p[1]}, ("mimeType",))
                )
        if t == "union":
            if kind == "union-type":
                # A member without $type: the validator cannot tell which variant it is.
                members = st.one_of(*self._union_members(schema, doc_id, stack))
                return members.map(
                    lambda m: ({k: v for k, v in m.items() if k != "$type"}, ("$type",))
                )
            if kind == "closed":
                known = {_type_value(self.resolve(r, doc_id)[2]) for r in schema["refs"]}
                other = nsids().filter(lambda n: n not in known)
                return other.map(lambda n: ({"$type": n}, ("$type",)))
        raise NotImplementedError(f"cannot break {kind} of a {t}")


def _type_value(full: str) -> str:
    """The `$type` that names a definition: the bare NSID for main."""
    return full[: -len("#main")] if full.endswith("#main") else full


@functools.cache
def wrong_type(lexicon_type: str) -> SearchStrategy[Any]:
    """Values of the wrong JSON type for a field of `lexicon_type`."""
    options: dict[str, tuple[Any, ...]] = {
        "string": (0, 1, True, ["a"], {"a": "b"}, {"$bytes": "AA"}),
        "integer": ("0", "1", True, False, 1.5, 0.0, [1], {"n": 1}),
        "boolean": ("true", 0, 1, [True]),
        "object": ("{}", 0, True, [], [{}]),
        "array": ("[]", 0, {}, {"0": "a"}, True),
        "union": ("x", 0, [], True),
        "ref": ("x", 0, [], True),
        "blob": (
            "bafkreidfgllqfu4v7kfchkaqgfkjbgvsw2m3rsbbfxsfrmmqaov6uthsqi",
            0,
            [],
            {"mimeType": "audio/mpeg"},
        ),
        "bytes": ("AAEC", 0, [1, 2], {"$bytes": "not base64!"}),
        "cid-link": ("bafyreidfgllqfu4v7kfchkaqgfkjbgvsw2m3rsbbfxsfrmmqaov6uthsqi", 0, []),
        "null": (0, "", False),
        "unknown": ("x", 0, [], {"$bytes": "AA"}),
    }
    return st.sampled_from(options[lexicon_type])


def _broken_text(limits: TextLimits, kind: str) -> SearchStrategy[str]:
    """Strings breaking one size limit of `limits` while keeping the others."""
    max_b = limits.max_bytes if limits.max_bytes is not None else URI_MAX * 4
    max_g = limits.max_graphemes if limits.max_graphemes is not None else max_b
    if kind == "maxLength":
        # Just over the limit, or over it because the last multi-byte character does not fit.
        over = st.integers(max_b + 1, max_b + 4) | st.integers(max_b + 1, max_b * 2 + 8)
        strategy = over.flatmap(
            lambda n: _sized_text(n, n, limits.min_graphemes, min(max_g, n), True)
        )
    elif kind == "minLength":
        n = limits.min_bytes - 1
        strategy = _sized_text(0, n, 0, min(max_g, n), True)
    elif kind == "maxGraphemes":
        g = max_g + 1
        strategy = st.integers(g, min(max_b, g * 4)).flatmap(
            lambda n: _sized_text(n, n, g, g, True)
        )
    elif kind == "minGraphemes":
        g = limits.min_graphemes - 1
        strategy = _sized_text(limits.min_bytes, max_b, 0, g, True)
    else:
        raise NotImplementedError(f"cannot break {kind} of a string")

    def broken_only_there(text: str) -> bool:
        others = TextLimits(
            limits.min_bytes if kind != "minLength" else 0,
            limits.max_bytes if kind != "maxLength" else None,
            limits.min_graphemes if kind != "minGraphemes" else 0,
            limits.max_graphemes if kind != "maxGraphemes" else None,
        )
        return others.fits(text) and not limits.fits(text)

    return strategy.filter(broken_only_there)


def constraint_keywords(
    docs: dict[str, dict[str, Any]], nsid: str
) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every (steps, keyword) a record type's schema constrains, read straight from the JSON
    with no knowledge of the generators: what a coverage test compares `targets` with."""

    def resolve(ref: str, doc_id: str) -> tuple[dict[str, Any], str, str]:
        full = doc_id + ref if ref.startswith("#") else (ref if "#" in ref else ref + "#main")
        n, _, name = full.partition("#")
        node = docs[n]["defs"][name]
        return (node["record"] if node["type"] == "record" else node), n, full

    def walk(
        node: dict[str, Any], doc_id: str, steps: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], str]]:
        for key in node:
            if key not in NON_CONSTRAINT_KEYWORDS and key != "required":
                yield steps, key
        for name in node.get("required", ()):
            yield (*steps, name), "required"
        for name in node.get("properties", {}):
            yield (*steps, name), "property"  # any field can hold a value of the wrong type
        t = node["type"]
        if t == "ref":
            target, target_doc, _ = resolve(node["ref"], doc_id)
            yield from walk(target, target_doc, steps)
        for name, prop in node.get("properties", {}).items():
            yield from walk(prop, doc_id, (*steps, name))
        if "items" in node:
            yield from walk(node["items"], doc_id, (*steps, ITEM))
        for ref in node.get("refs", ()):
            target, target_doc, full = resolve(ref, doc_id)
            yield (*steps,), "union"
            yield from walk(target, target_doc, (*steps, f"<{full}>"))

    main = docs[nsid]["defs"]["main"]
    yield (), "key"
    yield from walk(main["record"], nsid, ())


def values_at(value: Any, steps: Sequence[str]) -> Iterator[Any]:
    """The values a target's steps lead to in a record (none when an optional part is absent)."""
    if not steps:
        yield value
        return
    step, rest = steps[0], steps[1:]
    if step == ITEM:
        if isinstance(value, list):
            for item in value:
                yield from values_at(item, rest)
    elif step.startswith("<"):
        if isinstance(value, dict) and value.get("$type") == _type_value(step[1:-1]):
            yield from values_at(value, rest)
    elif isinstance(value, dict) and step in value:
        yield from values_at(value[step], rest)
