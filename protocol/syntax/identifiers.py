"""Identifier syntax: handles, DIDs, NSIDs, record keys, CIDs, URIs and AT-URIs, with the
parsed forms of AT-URIs and NSIDs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.syntax.errors import InvalidSyntax, preview

# Patterns are used with fullmatch(): `$` would also accept a trailing newline. Character
# classes are spelled out ([0-9], not \d) because \d and \w match non-ASCII digits/letters.

_HANDLE_MAX = 253
_HANDLE_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)

_DID_MAX = 2048
_DID_RE = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")

# The spec also caps the authority at 253 characters, but the interop vectors (and the
# reference implementations) accept longer ones within the 317 total; we follow them.
_NSID_MAX = 317
# Groups: 1 = authority (the domain, reversed), 2 = name.
_NSID_RE = re.compile(
    r"([a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+)"
    r"\.([a-zA-Z][a-zA-Z0-9]{0,62})"
)

_RKEY_RE = re.compile(r"[A-Za-z0-9._:~-]{1,512}")

# Loose CID syntax, as Lexicon `cid` strings allow any multibase CIDv1; the blessed subset
# (base32 dag-cbor/raw sha-256) is a data-model concern, not a string-format one.
_CID_RE = re.compile(r"[a-zA-Z0-9+=]{8,256}")

_URI_MAX = 8192
# RFC-3986 scheme, then something that is not whitespace (an authority or a path).
_URI_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:(?://)?[^\s/]\S*")

_AT_URI_MAX = 8192
# Restricted (Lexicon) AT-URI: authority, optional collection, optional rkey; no query or
# fragment. Parts are validated separately so errors can say which part is wrong.
_AT_URI_RE = re.compile(r"at://([^/?#\s]+)(?:/([^/?#\s]+)(?:/([^/?#\s]+))?)?")


def is_handle(value: str) -> bool:
    return len(value) <= _HANDLE_MAX and _HANDLE_RE.fullmatch(value) is not None


def is_did(value: str) -> bool:
    return len(value) <= _DID_MAX and _DID_RE.fullmatch(value) is not None


def is_nsid(value: str) -> bool:
    if len(value) > _NSID_MAX:
        return False
    return _NSID_RE.fullmatch(value) is not None


def is_record_key(value: str) -> bool:
    return _RKEY_RE.fullmatch(value) is not None and value != "." and value != ".."


def is_at_identifier(value: str) -> bool:
    # A DID always starts with "did:" and a handle never contains ":", so one test decides.
    return is_did(value) if value.startswith("did:") else is_handle(value)


def is_cid(value: str) -> bool:
    if _CID_RE.fullmatch(value) is None:
        return False
    # CIDv0 (bare base58btc sha-256 multihash, "Qm..." with 46 chars) is not allowed.
    return not (len(value) == 46 and value.startswith("Qm"))


def is_uri(value: str) -> bool:
    if len(value) > _URI_MAX or (not value.isascii() and len(value.encode()) > _URI_MAX):
        return False
    return _URI_RE.fullmatch(value) is not None


# --- AT-URI ------------------------------------------------------------------------------


def _split_at_uri(value: str) -> tuple[str, str | None, str | None] | str:
    """The (authority, collection, rkey) of a restricted AT-URI, or a message saying why not."""
    if len(value) > _AT_URI_MAX:
        return f"longer than {_AT_URI_MAX} characters"
    m = _AT_URI_RE.fullmatch(value)
    if m is None:
        if not value.startswith("at://"):
            return "must start with 'at://'"
        if "?" in value or "#" in value:
            return "query and fragment parts are not allowed"
        if value.endswith("/"):
            return "trailing slash is not allowed"
        return "must be at://AUTHORITY[/COLLECTION[/RKEY]] with no empty parts or spaces"
    authority, collection, rkey = m.groups()
    if not is_at_identifier(authority):
        return f"authority {authority!r} is not a valid DID or handle"
    if collection is not None and not is_nsid(collection):
        return f"collection {collection!r} is not a valid NSID"
    if rkey is not None and not is_record_key(rkey):
        return f"record key {rkey!r} is not valid"
    return authority, collection, rkey


def is_at_uri(value: str) -> bool:
    return not isinstance(_split_at_uri(value), str)


@dataclass(frozen=True, slots=True)
class AtUri:
    """A restricted AT-URI: `at://AUTHORITY[/COLLECTION[/RKEY]]`.

    A handle authority is lowercased (handles are case-insensitive); DIDs, collections and
    record keys are case-sensitive and kept as given. `str()` gives the canonical form.
    """

    authority: str
    collection: str | None = None
    rkey: str | None = None

    @classmethod
    def parse(cls, value: str) -> AtUri:
        if not isinstance(value, str):
            raise InvalidSyntax(f"AT-URI must be a string, not {type(value).__name__}")
        parts = _split_at_uri(value)
        if isinstance(parts, str):
            raise InvalidSyntax(f"invalid AT-URI {preview(value)}: {parts}")
        authority, collection, rkey = parts
        if not authority.startswith("did:"):
            authority = authority.lower()
        return cls(authority, collection, rkey)

    @property
    def did(self) -> str | None:
        """The authority when it is a DID (durable), else None (a handle)."""
        return self.authority if self.authority.startswith("did:") else None

    def __str__(self) -> str:
        if self.collection is None:
            return f"at://{self.authority}"
        if self.rkey is None:
            return f"at://{self.authority}/{self.collection}"
        return f"at://{self.authority}/{self.collection}/{self.rkey}"


def make_uri(did: str, collection: str, rkey: str) -> str:
    """The AT-URI of a record, after checking each part (raises InvalidSyntax)."""
    if not (isinstance(did, str) and is_did(did)):
        raise InvalidSyntax(f"not a valid DID: {preview(did)}")
    if not (isinstance(collection, str) and is_nsid(collection)):
        raise InvalidSyntax(f"not a valid collection NSID: {preview(collection)}")
    if not (isinstance(rkey, str) and is_record_key(rkey)):
        raise InvalidSyntax(f"not a valid record key: {preview(rkey)}")
    return f"at://{did}/{collection}/{rkey}"


# --- NSID --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nsid:
    """A namespaced identifier: `authority` is the reversed domain (`com.example`), `name` the
    final segment (`fooBar`). NSIDs are case-sensitive and are not normalized."""

    authority: str
    name: str

    @property
    def domain(self) -> str:
        """The authority as a domain name, for lexicon resolution (`example.com`)."""
        return ".".join(reversed(self.authority.split("."))).lower()

    def __str__(self) -> str:
        return f"{self.authority}.{self.name}"


def parse_nsid(value: str) -> Nsid:
    if not isinstance(value, str):
        raise InvalidSyntax(f"NSID must be a string, not {type(value).__name__}")
    if len(value) > _NSID_MAX:
        raise InvalidSyntax(f"invalid NSID {preview(value)}: longer than {_NSID_MAX} characters")
    m = _NSID_RE.fullmatch(value)
    if m is None:
        raise InvalidSyntax(
            f"invalid NSID {preview(value)}: must be a reversed domain name followed by a name"
            " segment of ASCII letters and digits (e.g. com.example.fooBar)"
        )
    authority, name = m.groups()
    return Nsid(authority, name)
