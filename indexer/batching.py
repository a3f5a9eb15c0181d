"""The open batch: what the consumer gathered since its last write, and how it is cut.

A cut takes everything at once and synchronously, so a batch and its cursor seq always match.
While an event is handled across an await (a commit being verified, an account change waiting
for the writes before it) its seq is held: a batch cut meanwhile stops just below it, so the
cursor never passes an event whose ops are not in a batch yet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from indexer.records import RecordOp
from indexer.writer import DeadLetter
from protocol.syntax import InvalidSyntax, parse_datetime


@dataclass
class Batch:
    """One writer transaction: everything up to and including event `seq`, and the cursor."""

    seq: int
    event_time: datetime | None
    ops: list[RecordOp]
    letters: list[DeadLetter]
    revs: dict[str, str]
    resync: dict[str, str]
    handle_checks: set[str]


class OpenBatch:
    def __init__(self) -> None:
        self.ops: list[RecordOp] = []
        self.letters: list[DeadLetter] = []
        self.revs: dict[str, str] = {}  # newest commit rev per followed repo
        self.resync: dict[str, str] = {}  # repo -> why it must be fetched whole
        self.handle_checks: set[str] = set()
        self.opened: float | None = None  # monotonic time this batch started
        self.held: int | None = None  # seq of the event being handled across an await

    def add_ops(self, ops: list[RecordOp]) -> None:
        self.ops.extend(ops)
        if self.opened is None:
            self.opened = time.monotonic()

    def is_due(self, delay: float) -> bool:
        """True when the batch has been open for `delay` seconds."""
        opened = self.opened
        return opened is not None and time.monotonic() - opened >= delay

    @contextlib.contextmanager
    def holding(self, seq: int) -> Iterator[None]:
        """Keep batches cut meanwhile below event `seq`."""
        self.held = seq
        try:
            yield
        finally:
            self.held = None

    def cut(
        self, *, upto: int | None, last_seq: int, last_time: str | None, committed: int | None
    ) -> Batch | None:
        """Take everything gathered, with its cursor: `upto`, else just below the held event,
        else the last event decoded. None when there is nothing to write."""
        seq = last_seq if upto is None else upto
        if upto is None and self.held is not None:
            seq = self.held - 1
        self.opened = None
        if seq < 0 or (
            seq == committed
            and not (self.ops or self.letters or self.revs or self.resync or self.handle_checks)
        ):
            return None
        batch = Batch(
            seq, parse_event_time(last_time) if seq == last_seq else None,
            self.ops, self.letters, self.revs, self.resync, self.handle_checks,
        )  # fmt: skip
        self.ops, self.letters, self.revs, self.resync = [], [], {}, {}
        self.handle_checks = set()
        return batch


def parse_event_time(value: str | None) -> datetime | None:
    """The event's `time` field, or None when it is missing or not a datetime (relay's word)."""
    if not value:
        return None
    with contextlib.suppress(InvalidSyntax, TypeError):
        return parse_datetime(value)
    return None
