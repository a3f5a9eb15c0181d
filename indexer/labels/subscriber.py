"""One labeler's stream, followed forever: connect from the stored cursor, check, store, and
reconnect with backoff whatever goes wrong (nothing a labeler sends is fatal).

Per batch of messages (every message already received: indexer/labels/stream.py) the frames are
decoded (`protocol.labels.decode_label_frame`), the labels checked (indexer/labels/keys.py) and
everything written in one transaction with the cursor (indexer/labels/store.py). Refused frames
and labels are recorded in `label_rejects` with a reason kind:

- `malformed frame`: undecodable, an unknown type, a text message (no seq: the cursor stays);
- `malformed label`: a label of a `#labels` frame that breaks the schema (the others apply);
- `wrong src`, `bad signature` (indexer/labels/keys.py); `unstorable` (indexer/labels/rules.py);
- `error frame`: the labeler's error message; `outdated cursor`: its `#info OutdatedCursor`.

Stream messages, and what is done about them:

- `#info OutdatedCursor`: our cursor is older than what the labeler keeps; it starts from the
  oldest it has. Labels in between are lost to us (queryLabels could fill them: not done); the
  stream goes on and the event is recorded.
- error `FutureCursor` (at a cursor above 0): our cursor is ahead of the labeler's sequence (it lost data or renumbered
  its stream). The cursor goes back to 0 and the whole stream is read again: replays change
  nothing (the newest `cts` wins), so nothing is lost and nothing doubles; resuming at its live
  tip instead would lose whatever it re-sequenced below our old cursor.
- other error frames: recorded; the labeler closes the stream and we reconnect with backoff.
- a message larger than our limit (1 MiB): recorded as `oversized frame`; the connection is
  made again at once with a 16 MiB limit (and a short read-ahead queue). A message over that
  too is skipped: its seq cannot be read, so the cursor moves one past the last stored seq (the
  labeler then starts after it; with gaps in its numbering, one more step per reconnect) and
  the skip is recorded. A labeler cannot stall its stream, nor our memory, with huge frames.

A labeler whose DID document cannot be fetched or names no endpoint, an unreachable endpoint, a
dropped connection, a database error: logged, retried with backoff (core/backoff.py), the DID
document fetched fresh on the next try. Only CursorConflict (another process took the labels
service over) ends `run`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import asyncpg

from core.backoff import Backoff
from core.errors import DatabaseError
from core.logging import get_logger
from indexer.labels import metrics
from indexer.labels.keys import KnownLabeler, LabelerIdentity, LabelerUnavailable
from indexer.labels.rules import LabelRow, account_takedown_subjects, storable_problem
from indexer.labels.store import Reject, read_label_cursor, store_batch
from indexer.labels.stream import (
    CONNECT_TIMEOUT,
    HEARTBEAT,
    MAX_MESSAGE,
    OVERSIZED_MAX_MESSAGE,
    OVERSIZED_QUEUE,
    QUEUE,
    Message,
    StreamEnded,
    TextMessage,
    open_stream,
    subscribe_url,
)
from protocol.identity import IdentityError, IdentityResolving
from protocol.labels import (
    ErrorMessage,
    InfoMessage,
    Label,
    LabelError,
    LabelsMessage,
    decode_label_frame,
)

log = get_logger("plyr.labels")

TRANSIENT = (
    OSError, TimeoutError, aiohttp.ClientError, IdentityError, LabelerUnavailable, StreamEnded,
    asyncpg.PostgresError, asyncpg.InterfaceError, DatabaseError,
)  # fmt: skip


class Subscriber:
    """Follows one labeler. `on_takedown_expiry` is called when a takedown label with an `exp`
    was stored (the sweep then knows when to look again)."""

    stable_after = 30.0  # a connection that lived this long resets the backoff

    def __init__(
        self,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        resolver: IdentityResolving,
        did: str,
        *,
        moderation: frozenset[str] = frozenset(),
        on_takedown_expiry: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
        max_message: int = MAX_MESSAGE,
        oversized_max_message: int = OVERSIZED_MAX_MESSAGE,
        heartbeat: float = HEARTBEAT,
        connect_timeout: float = CONNECT_TIMEOUT,
        known: KnownLabeler | None = None,
    ) -> None:
        self.pool = pool
        self.session = session
        self.did = did
        self.identity = LabelerIdentity(did, resolver, known)
        self.moderation = moderation
        self.on_takedown_expiry = on_takedown_expiry
        self.backoff = backoff or Backoff(base=1.0, cap=300.0)
        self.max_message = max_message
        self.oversized_max_message = max(oversized_max_message, max_message)
        # The cursor after which a message was too big for `max_message`: the next connection
        # from there reads with `oversized_max_message`.
        self._oversized_after: int | None = None
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.committed: int | None = None  # the stored cursor (our fence); None: no row
        self.connections = 0  # successful connects (tests wait on these two)
        self.connected = False
        self._reset = False  # FutureCursor seen: start over from 0

    async def run(self) -> None:
        fresh = False
        oversized = False
        while True:
            started = time.monotonic()
            restart = False  # the cursor was reset to 0 and stored: reconnect at once
            try:
                await self._follow(fresh=fresh)
                reason, restart = "stream ended", self._reset
            except TRANSIENT as exc:
                reason = f"{exc.__class__.__name__}: {exc}"
                if isinstance(exc, StreamEnded) and exc.oversized:
                    oversized = True
            finally:
                self._reset = False
                self.connected = False
                metrics.LABEL_CONNECTED.labels(self.did).set(0)
            if oversized:
                oversized = False
                try:
                    restart = await self._on_oversized()
                except TRANSIENT as exc:
                    reason = f"{reason}; then {exc.__class__.__name__}: {exc}"
            fresh = True  # whatever failed, look at the DID document again (endpoint moved?)
            if time.monotonic() - started > self.stable_after or restart:
                self.backoff.reset()
            delay = 0.0 if restart else self.backoff.next_delay()
            metrics.LABEL_RECONNECTS.labels(self.did).inc()
            log.warning(
                "label stream lost; reconnecting",
                extra={"labeler": self.did, "reason": reason, "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)

    async def _follow(self, *, fresh: bool) -> None:
        endpoint = await self.identity.stream_endpoint(fresh=fresh)
        self.committed = await read_label_cursor(self.pool, self.did)
        if self.committed is not None:
            metrics.LABEL_CURSOR.labels(self.did).set(self.committed)
        url = subscribe_url(endpoint, self.committed or 0)
        raised = self._oversized_after == (self.committed or 0)
        async with open_stream(
            self.session, url, heartbeat=self.heartbeat, connect_timeout=self.connect_timeout,
            max_message=self.oversized_max_message if raised else self.max_message,
            max_batch=OVERSIZED_QUEUE if raised else QUEUE,
        ) as batches:  # fmt: skip
            self.connections += 1
            self.connected = True
            metrics.LABEL_CONNECTED.labels(self.did).set(1)
            log.info("subscribed to labeler", extra={"labeler": self.did, "url": url})
            async for batch in batches:
                await self._handle(batch)
                if self._reset:
                    return

    async def _on_oversized(self) -> bool:
        """A message after our cursor was over the limit of the connection. True: reconnect at
        once with the larger limit; False: it was over that too and was skipped (normal backoff,
        so a labeler sending nothing but huge frames is not reconnected to in a tight loop)."""
        after = self.committed or 0
        if self._oversized_after != after:
            self._oversized_after = after
            await self._store([], [Reject(
                "oversized frame",
                f"a message after seq {after} is over {self.max_message} bytes: "
                f"reading it again with a limit of {self.oversized_max_message}",
            )], None)  # fmt: skip
            return True
        skip_to = after + 1
        log.error(
            "labeler sent a message over our largest limit: skipped",
            extra={"labeler": self.did, "after": after, "limit": self.oversized_max_message},
        )
        await self._store([], [Reject(
            "oversized frame",
            f"a message after seq {after} is over {self.oversized_max_message} bytes: skipped "
            f"(cursor moved to {skip_to})",
        )], skip_to)  # fmt: skip
        self._oversized_after = skip_to  # the next message may be big too: start with the raised limit
        return False

    # ---- one batch ----------------------------------------------------------------------------

    async def _handle(self, batch: list[Message]) -> None:
        # Refusals in stream order: None holds the place of the next label to check.
        slots: list[Reject | None] = []
        pending: list[tuple[int, Label]] = []
        cursor = self.committed
        for raw in batch:
            if isinstance(raw, TextMessage):
                slots.append(Reject("malformed frame", f"text message {raw.text!r:.100}"))
                continue
            try:
                msg = decode_label_frame(raw)
            except LabelError as exc:
                slots.append(Reject("malformed frame", str(exc)))
                continue
            if isinstance(msg, LabelsMessage):
                for item in msg.labels:
                    if isinstance(item, LabelError):
                        slots.append(Reject("malformed label", str(item), msg.seq))
                    else:
                        slots.append(None)
                        pending.append((msg.seq, item))
                # Never backwards on a misbehaving stream (only FutureCursor resets it).
                cursor = msg.seq if cursor is None else max(cursor, msg.seq)
            elif isinstance(msg, InfoMessage):
                self._on_info(msg, slots)
            elif isinstance(msg, ErrorMessage):
                self._on_error(msg, slots)
                if self._reset:
                    cursor = 0
                    break  # the labeler closes the stream after an error frame
        rows: list[LabelRow] = []
        verdicts = iter(await self.identity.check(pending))
        rejects: list[Reject] = []
        for slot in slots:
            if slot is not None:
                rejects.append(slot)
                continue
            verdict = next(verdicts)
            label, problem = verdict.label, verdict.problem
            if problem is None and (unstorable := storable_problem(label)) is not None:
                problem = ("unstorable", unstorable)
            if problem is not None:
                rejects.append(Reject(problem[0], problem[1], verdict.seq, label.to_json()))
            else:
                rows.append(LabelRow.of(label, verdict.seq))
        await self._store(rows, rejects, cursor)

    def _on_info(self, msg: InfoMessage, rejects: list[Reject | None]) -> None:
        if msg.name == "OutdatedCursor":
            log.warning(
                "labeler says our cursor is older than its history: labels in between are lost",
                extra={"labeler": self.did, "cursor": self.committed, "detail": msg.message},
            )
            rejects.append(Reject("outdated cursor", msg.message or "OutdatedCursor"))
        else:
            log.info("labeler info", extra={"labeler": self.did, "info_name": msg.name, "detail": msg.message})

    def _on_error(self, msg: ErrorMessage, rejects: list[Reject | None]) -> None:
        rejects.append(Reject("error frame", f"{msg.error}: {msg.message or ''}"))
        if msg.error == "FutureCursor" and self.committed:
            log.error(
                "labeler says our cursor is in its future (it lost or renumbered its stream): "
                "reading it again from 0",
                extra={"labeler": self.did, "cursor": self.committed, "detail": msg.message},
            )
            self._reset = True
        else:
            log.warning("labeler error frame", extra={"labeler": self.did, "error": msg.error, "detail": msg.message})

    async def _store(self, rows: list[LabelRow], rejects: list[Reject], cursor: int | None) -> None:
        subjects = account_takedown_subjects(rows, self.moderation)
        async with self.pool.acquire() as conn:
            result = await store_batch(
                conn, self.did, rows, rejects, cursor=cursor, expected=self.committed,
                takedown_subjects=subjects, moderation=self.moderation,
            )  # fmt: skip
        if cursor is not None:
            self.committed = cursor
            metrics.LABEL_CURSOR.labels(self.did).set(cursor)
        metrics.LABELS_APPLIED.labels(self.did).inc(result.applied)
        metrics.LABELS_STALE.labels(self.did).inc(result.stale)
        for reject in rejects:
            metrics.LABELS_REJECTED.labels(self.did, reject.reason).inc()
        if rejects:
            log.warning(
                "labels refused",
                extra={"labeler": self.did, "count": len(rejects), "first": f"{rejects[0].reason}: {rejects[0].detail}"[:300]},
            )
        for did, outcome in result.takedowns.items():
            metrics.ACCOUNT_TAKEDOWNS.labels("taken down" if outcome.startswith("taken") else "restored").inc()
            log.warning("account takedown by a moderation labeler", extra={"labeler": self.did, "did": did, "outcome": outcome})
        if self.on_takedown_expiry is not None and any(
            row.exp is not None and row.label.uri in subjects for row in rows
        ):
            self.on_takedown_expiry()
        if result.applied:
            log.debug("labels stored", extra={"labeler": self.did, "applied": result.applied, "cursor": cursor})
