"""`own_labels`: the labels our labeler signed, in stream order. `emit_labels` is the only
writer; the readers (queryLabels, subscribeLabels) share the row -> Label mapping below.

Rules kept here:
- One coherent state per (uri, val) (specs/label.md): a new label, negation or not, deletes the
  earlier rows of the same subject and value, so the table and the stream hold only the latest
  word on each; a negation stays as a row (the stream keeps the negation, consumers learn of it).
- A label that supersedes another is dated after it (`cts` at least 1 ms later), so consumers
  that keep the newest `cts` never prefer the label over its own negation, even within one
  millisecond or across a clock step back.
- seq order is commit order: writers take one transaction-scoped advisory lock before their
  first insert, so no row can commit with a smaller seq than a row a reader has already seen
  (subscribeLabels reads `seq > last` and would miss it otherwise). Labels are operator
  actions, a few a minute: one lock costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from core.db import Connection
from protocol.crypto import PrivateKey
from protocol.labels import Label, LabelError, parse_label

NOTIFY_CHANNEL = "own_labels"
# Two-int advisory lock space: classid "plyl" (see indexer/ha.py "plyi", writer/locks.py "plyw").
_LOCK_CLASS = 0x706C796C
_LOCK_KEY = 0
_STEP = timedelta(milliseconds=1)

# The columns every reader selects, in the order `row_label` reads them.
LABEL_COLUMNS = "seq, uri, val, cid, neg, cts, exp, sig, signing_key"


@dataclass(frozen=True, slots=True)
class LabelDraft:
    """A label to sign: subject (at:// URI or DID), value, and the optional fields. `cts` is
    normally left to `emit_labels` (now, or just after the label it supersedes)."""

    uri: str
    val: str
    cid: str | None = None
    neg: bool = False
    exp: str | None = None
    cts: str | None = None


@dataclass(frozen=True)
class LabelSigner:
    """Our labeler's identity: the DID labels carry as `src` and the `#atproto_label` key."""

    did: str
    key: PrivateKey

    @classmethod
    def configured(cls, did: str, key: PrivateKey | None) -> LabelSigner | None:
        """The signer of `did` with the configured key (`AppviewSettings.labeler.key`); None
        when no key is configured (the labeler is off)."""
        return cls(did, key) if key is not None else None

    @cached_property
    def did_key(self) -> str:
        return self.key.public_key().did_key()

    @cached_property
    def public_multibase(self) -> str:
        """The key as the DID document's Multikey `publicKeyMultibase`."""
        return self.key.public_key().multibase()


def format_cts(moment: datetime) -> str:
    """UTC, milliseconds, `Z`: the form the reference implementation writes."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_cts(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None  # a caller-given form Python does not read: it simply does not bound ours
    return moment if moment.tzinfo is not None else None


def _checked(signer: LabelSigner, draft: LabelDraft) -> Label:
    """The draft as an unsigned Label, refused (LabelError) if it breaks the label schema."""
    if "\x00" in draft.val:
        raise LabelError("label val contains a NUL character")
    label = Label(src=signer.did, uri=draft.uri, val=draft.val, cid=draft.cid, neg=draft.neg,
                  exp=draft.exp, cts=draft.cts or format_cts(datetime.now(UTC)))
    return parse_label(label.to_json(with_sig=False), encoding="json")


async def emit_labels(conn: Connection, signer: LabelSigner, drafts: list[LabelDraft]) -> list[Label]:
    """Sign and store `drafts` in order; returns the signed labels. Raises LabelError (nothing
    written) when a draft breaks the schema. Runs in the caller's transaction when there is one
    (a savepoint), else in its own; subscribers are told on commit (NOTIFY `own_labels` with the
    new largest seq)."""
    checked = [_checked(signer, draft) for draft in drafts]
    if not checked:
        return []
    signed: list[Label] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _LOCK_KEY)
        last_seq = 0
        for draft, label in zip(drafts, checked, strict=True):
            superseded = await conn.fetch(
                "DELETE FROM own_labels WHERE uri = $1 AND val = $2 RETURNING cts", label.uri, label.val
            )
            if draft.cts is None:
                label = _after(label, [row["cts"] for row in superseded])
            label = label.signed(signer.key)
            assert label.sig is not None
            last_seq = await conn.fetchval(
                "INSERT INTO own_labels (uri, val, cid, neg, cts, exp, sig, signing_key) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
                label.uri, label.val, label.cid, label.neg, label.cts, label.exp, label.sig, signer.did_key,
            )  # fmt: skip
            signed.append(label)
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last_seq))
    return signed


def _after(label: Label, earlier: list[str]) -> Label:
    """`label` dated at least 1 ms after every `earlier` cts it supersedes."""
    bounds = [moment for moment in map(_parse_cts, earlier) if moment is not None]
    own = _parse_cts(label.cts)
    if not bounds or own is None or own > max(bounds):
        return label
    return Label(src=label.src, uri=label.uri, val=label.val, cid=label.cid, neg=label.neg,
                 exp=label.exp, cts=format_cts(max(bounds) + _STEP))


def row_label(signer: LabelSigner, row: Any) -> Label:
    """A stored row (LABEL_COLUMNS) as the signed Label. Every row's `src` is our DID (the
    service DID: changing PLYR_SERVICE_DID starts a new labeler, whose old rows no longer
    verify). A row signed by an earlier key is signed again with the current one as it is
    served, `cts` unchanged (specs/label.md, key rotation): what we serve always verifies
    against the key our DID document names."""
    label = Label(src=signer.did, uri=row["uri"], val=row["val"], cts=row["cts"], cid=row["cid"],
                  neg=row["neg"], exp=row["exp"], sig=bytes(row["sig"]))
    if row["signing_key"] != signer.did_key:
        label = label.signed(signer.key)
    return label


async def max_seq(conn: Any) -> int:
    """The largest seq stored (0 when none). A superseded row is only deleted in the transaction
    that inserts its successor, so this never goes down."""
    value = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM own_labels")
    return int(value)


async def rows_after(conn: Any, after: int, limit: int, *, through: int | None = None) -> list[Any]:
    """Up to `limit` rows with seq > `after` (and <= `through` when given), in seq order."""
    if through is None:
        return list(await conn.fetch(
            f"SELECT {LABEL_COLUMNS} FROM own_labels WHERE seq > $1 ORDER BY seq LIMIT $2", after, limit
        ))  # fmt: skip
    return list(await conn.fetch(
        f"SELECT {LABEL_COLUMNS} FROM own_labels WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        after, through, limit,
    ))  # fmt: skip
