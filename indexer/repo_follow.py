"""Following the repos we index through `#commit` and `#sync` events.

- `#commit` with fm.plyr.* ops: verified (rev not in the future, CIDs, signature, MST
  inversion against `prevData`; see indexer/verify.py) into RecordOps, added to the batch;
  failures become dead letters (with the raw frame) and the stream goes on; a failed inversion
  or a missing/corrupt block also marks the repo for resync. Repos we index are followed on
  every commit: a `since` that does not match the rev we hold, or a `tooBig` commit, marks the
  repo for resync (the backfill fetches it). A commit whose rev is in the future is rejected
  before its rev is tracked.
- `#sync` of an indexed repo: ignored when its rev is not newer than the one we hold (spec);
  otherwise its signed commit is verified and only then is the repo marked for resync (a
  `#sync` that fails is counted and ignored).

While a commit is verified (an await) its seq is held in the batch (indexer/batching.py).
"""

from __future__ import annotations

from core.logging import get_logger
from indexer import metrics
from indexer.batching import OpenBatch
from indexer.consumer_status import Stats
from indexer.frames import CommitEvent, SyncEvent
from indexer.records import RecordOp
from indexer.verify import Verifier, VerifyError, check_rev
from indexer.writer import DeadLetter

log = get_logger("plyr.indexer")

# Verification failures after which the stream cannot give us the repo's state back.
_RESYNC_ON = frozenset({"inversion", "car"})


class RepoFollower:
    def __init__(
        self, verifier: Verifier, watched: dict[str, str | None], batch: OpenBatch, stats: Stats
    ) -> None:
        self.verifier = verifier
        self.watched = watched  # DIDs we index -> newest rev we know (shared with the decoder)
        self.batch = batch
        self.stats = stats

    def follow(self, ev: CommitEvent) -> bool:
        """Everything about a commit that needs no verification (an await); False when its
        plyr ops are still to be verified (`on_commit`). Most commits that reach the consumer
        are of repos we index without plyr ops, so the consumer calls this first, inline."""
        try:
            # Before the rev is tracked: a far-future rev would stall the repo's rev chain.
            check_rev(ev.rev)
        except VerifyError as exc:
            self._reject_commit(ev, exc)
            return True
        if ev.too_big:
            self._track_rev(ev)
            self.mark_resync(ev.repo, f"tooBig commit at seq {ev.seq}")
            return True
        if ev.records is not None:  # Jetstream: no blocks, nothing to verify
            self._track_rev(ev, start=True)
            self._add_ops(ev.records)
            return True
        if not ev.ops:
            # A commit of a repo we index without plyr ops: followed for its rev, not verified.
            self._track_rev(ev)
            return True
        return False

    async def on_commit(self, ev: CommitEvent) -> None:
        if self.follow(ev):
            return
        did = ev.repo
        with self.batch.holding(ev.seq):
            try:
                ops = await self.verifier.commit_ops(ev)
            except VerifyError as exc:
                # Its rev is not tracked either: the next commit's `since` then shows the gap.
                self._reject_commit(ev, exc)
                if exc.kind in _RESYNC_ON:
                    # A diff whose ops do not add up (inversion) or whose blocks are missing or
                    # corrupt (car): replaying the same bytes cannot help, so the repo is fetched
                    # whole from its PDS.
                    self.mark_resync(did, f"commit at seq {ev.seq} failed verification ({exc.kind}): {exc}")
                return
            self._track_rev(ev, start=True)
            self._add_ops(ops)

    async def on_sync(self, ev: SyncEvent) -> None:
        known = self.watched.get(ev.did)
        if ev.rev is not None and known is not None and ev.rev <= known:
            # Sync spec: #sync events with a rev not above the last one processed are ignored.
            log.info(
                "stale #sync ignored",
                extra={"seq": ev.seq, "did": ev.did, "rev": ev.rev, "known": known},
            )
            return
        with self.batch.holding(ev.seq):
            try:
                await self.verifier.sync_commit(ev)
            except VerifyError as exc:
                # Not trusted, so it causes no work; no dead letter either (nothing to replay).
                self.stats.verify_failures += 1
                metrics.VERIFY_FAILURES.labels(f"sync_{exc.kind}").inc()
                log.warning(
                    "#sync failed verification; ignored",
                    extra={"seq": ev.seq, "did": ev.did, "kind": exc.kind, "reason": str(exc)},
                )
                return
        self.mark_resync(ev.did, f"#sync event at seq {ev.seq}")
        if ev.rev:
            self.watched[ev.did] = ev.rev

    def mark_resync(self, did: str, reason: str) -> None:
        self.stats.resync_marks += 1
        self.batch.resync[did] = reason
        log.info("repo marked for resync", extra={"did": did, "reason": reason})

    def mark_all_resync(self, reason: str) -> None:
        """Events were (or may have been) lost: every repo we index is fetched again."""
        for did in self.watched:
            self.batch.resync[did] = reason
        self.stats.resync_marks += len(self.watched)

    def _track_rev(self, ev: CommitEvent, *, start: bool = False) -> None:
        """Follow the repo's newest rev (and see gaps: a `since` that is not the rev we hold).

        `start`: also begin following a repo not watched yet (its first plyr commit)."""
        did, watched = ev.repo, self.watched
        if did not in watched:
            if start:
                watched[did] = ev.rev
                self.batch.revs[did] = ev.rev
            return
        known = watched[did]
        if known is None or ev.rev > known:
            if known is not None and ev.since is not None and ev.since != known:
                self.mark_resync(did, f"commit at seq {ev.seq} has since={ev.since}, we hold rev {known}")
            watched[did] = ev.rev
            self.batch.revs[did] = ev.rev

    def _reject_commit(self, ev: CommitEvent, exc: VerifyError) -> None:
        """Count a commit that failed verification and keep it as a dead letter; nothing of it
        is applied."""
        self.stats.verify_failures += 1
        metrics.VERIFY_FAILURES.labels(exc.kind).inc()
        log.warning(
            "commit failed verification",
            extra={"seq": ev.seq, "did": ev.repo, "kind": exc.kind, "reason": str(exc)},
        )
        raw = ev.frame or None  # Jetstream events carry no frame
        self.batch.letters.append(
            DeadLetter(reason=f"{exc.kind}: {exc}", seq=ev.seq, did=ev.repo, rev=ev.rev, raw=raw)
        )

    def _add_ops(self, ops: list[RecordOp]) -> None:
        self.stats.matched_ops += len(ops)
        self.batch.add_ops(ops)
