"""What moderation acts on: an account (a DID) or a record (an at:// URI whose authority is a
DID), optionally one version of it (a CID); and the label values operators may set."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.syntax.errors import InvalidSyntax
from protocol.syntax.identifiers import AtUri, is_cid, is_did

# Subjects are keys of btree indexes (reports, moderation_actions, own_labels): far below what
# an index entry can hold, and far above any DID or record URI we index.
MAX_SUBJECT_CHARS = 2048
# Label values (specs/label.md): lower-case ASCII letters and hyphens; `!` marks the values
# with a meaning fixed by the protocol (`!takedown`, `!warn`, ...).
LABEL_VALUE = re.compile(r"!?[a-z][a-z-]{0,126}")


class ModerationError(ValueError):
    """A request moderation refuses (a bad subject, value or cursor): the caller's to fix."""


@dataclass(frozen=True)
class Subject:
    uri: str                 # a DID (an account) or an at:// record URI
    cid: str | None = None   # one version of a record; None: every version

    @property
    def is_account(self) -> bool:
        return self.uri.startswith("did:")

    @property
    def did(self) -> str:
        """The account itself, or the record's author."""
        return self.uri if self.is_account else self.uri[5:].split("/", 1)[0]


def parse_subject(text: str, cid: str | None = None) -> Subject:
    """A subject from its text (DID or at:// URI) and an optional CID; ModerationError if bad."""
    text = text.strip()
    if not text or len(text) > MAX_SUBJECT_CHARS:
        raise ModerationError(f"a subject is a DID or an at:// URI of at most {MAX_SUBJECT_CHARS} characters")
    if cid is not None and not is_cid(cid):
        raise ModerationError(f"not a CID: {cid[:100]!r}")
    if text.startswith("did:"):
        if not is_did(text):
            raise ModerationError(f"not a DID: {text[:200]!r}")
        if cid is not None:
            raise ModerationError("an account has no versions: a CID goes with a record URI only")
        return Subject(text)
    try:
        uri = AtUri.parse(text)
    except InvalidSyntax as exc:
        raise ModerationError(str(exc)) from None
    if uri.did is None or uri.collection is None or uri.rkey is None:
        # Labels name records by DID (handles change hands); a bare authority is an account.
        raise ModerationError("a record subject is at://DID/COLLECTION/RKEY (an account is its DID)")
    return Subject(str(uri), cid)


def check_label_value(val: str) -> str:
    if not LABEL_VALUE.fullmatch(val):
        raise ModerationError(
            f"label value {val[:130]!r} is not lower-case letters and hyphens (optionally after `!`)"
        )
    return val
