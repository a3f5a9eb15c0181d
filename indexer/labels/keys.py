"""A labeler's identity: where its stream is and which key signs its labels, from its DID
document (the `#atproto_labeler` service of type AtprotoLabeler, the `#atproto_label` key).

Labels are checked as the spec says (specs/label.md): `src` must be the labeler, the signature
must verify with the `#atproto_label` key (no other key of the document is tried). When it does
not, the document is fetched again, once per batch (keys rotate; the resolver's refresh floor
bounds the lookups a flood of bad signatures can cause), and the label retried with the key
found then. Labels from before a rotation fail for good; the spec calls that acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass

from indexer.labels import metrics
from protocol.crypto import PublicKey
from protocol.identity import IdentityResolving
from protocol.labels import Label

LABELER_SERVICE = ("#atproto_labeler", "AtprotoLabeler")
LABEL_KEY = "#atproto_label"

WRONG_SRC = "wrong src"
BAD_SIGNATURE = "bad signature"


class LabelerUnavailable(Exception):
    """The labeler's DID document does not name a labeler endpoint (nothing to connect to)."""


@dataclass(slots=True)
class Verdict:
    label: Label
    seq: int
    problem: tuple[str, str] | None  # (reason kind, detail) when refused


@dataclass(frozen=True, slots=True)
class KnownLabeler:
    """A labeler whose endpoint and key the operator's configuration gives, not a DID document:
    our own AppView's labeler under `plyr up`, reached on its local address (its did:web may not
    resolve from here: a loopback public URL, a DID document on a host in front of us)."""

    did: str
    endpoint: str
    key: PublicKey


class LabelerIdentity:
    def __init__(self, did: str, resolver: IdentityResolving, known: KnownLabeler | None = None) -> None:
        self.did = did
        self.resolver = resolver
        self.known = known
        self.endpoint: str | None = None
        self.key: PublicKey | None = None

    async def load(self, *, fresh: bool = False) -> None:
        """(Re)read the document; IdentityError when it cannot be had (the caller retries)."""
        if self.known is not None:
            self.endpoint, self.key = self.known.endpoint, self.known.key
            return
        doc = await self.resolver.resolve_did(self.did, fresh=fresh)
        self.endpoint = doc.service_endpoint(*LABELER_SERVICE)
        self.key = doc.verification_key(LABEL_KEY)

    async def stream_endpoint(self, *, fresh: bool = False) -> str:
        await self.load(fresh=fresh)
        if self.endpoint is None:
            raise LabelerUnavailable(
                f"the DID document of {self.did} has no {LABELER_SERVICE[0]} service of type {LABELER_SERVICE[1]}"
            )
        return self.endpoint

    def _problem(self, label: Label) -> tuple[str, str] | None:
        if label.sig is None:
            return (BAD_SIGNATURE, "label is not signed")
        if self.key is None:
            return (BAD_SIGNATURE, f"the DID document of {self.did} has no {LABEL_KEY} key")
        if not label.verify(self.key):
            return (BAD_SIGNATURE, f"signature does not verify with {self.key.did_key()}")
        return None

    async def check(self, labels: list[tuple[int, Label]]) -> list[Verdict]:
        """A verdict per (seq, label), in order. IdentityError (a refetch that failed) is left to
        the caller: a lookup that failed proves nothing about the labels."""
        verdicts: list[Verdict] = []
        refetched = False
        for seq, label in labels:
            if label.src != self.did:
                verdicts.append(Verdict(label, seq, (WRONG_SRC, f"src {label.src} is not the labeler {self.did}")))
                continue
            problem = self._problem(label)
            if problem is not None and label.sig is not None and not refetched:
                refetched = True
                metrics.KEY_REFETCHES.labels(self.did).inc()
                await self.load(fresh=True)
                problem = self._problem(label)
            verdicts.append(Verdict(label, seq, problem))
        return verdicts
