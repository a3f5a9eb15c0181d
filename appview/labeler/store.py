"""MINIMAL STAND-IN (helper "admin"): the labeler helper's real `appview/labeler/store.py`
replaces this file at merge. Only the agreed API is here: `LabelDraft`, `LabelSigner` and
`emit_labels`, the one writer of `own_labels`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from core.db import Connection
from protocol.crypto import PrivateKey
from protocol.labels import Label


@dataclass(frozen=True)
class LabelDraft:
    uri: str
    val: str
    cid: str | None = None
    neg: bool = False
    exp: str | None = None


@dataclass(frozen=True)
class LabelSigner:
    did: str
    key: PrivateKey

    @property
    def did_key(self) -> str:
        return self.key.public_key().did_key()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def emit_labels(conn: Connection, signer: LabelSigner, drafts: list[LabelDraft]) -> list[Label]:
    """Sign `drafts`, store them in `own_labels` and NOTIFY; the caller holds the transaction."""
    cts = _now()
    labels = [
        Label(src=signer.did, uri=d.uri, val=d.val, cts=cts, cid=d.cid, neg=d.neg, exp=d.exp).signed(signer.key)
        for d in drafts
    ]
    for label in labels:
        if label.neg:
            await conn.execute("DELETE FROM own_labels WHERE uri = $1 AND val = $2", label.uri, label.val)
        await conn.execute(
            "INSERT INTO own_labels (uri, val, cid, neg, cts, exp, sig, signing_key) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            label.uri, label.val, label.cid, label.neg, label.cts, label.exp, label.sig, signer.did_key,
        )
    if labels:
        await conn.execute("NOTIFY own_labels")
    return labels
