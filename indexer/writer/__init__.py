"""The one write path into the record index (see writer/apply.py), split by concern:

- apply.py: `apply_batch`, one transaction per batch, cursor last;
- winners.py: the rev rules per record URI, and the rows, tombstones and counters they write;
- statements.py: the set-based SQL of a batch;
- checks.py: what may be stored (`checked_rows`), the lexicons;
- counts.py: counters kept with the rows (track_counts, actor_counts, index_totals), recount;
- outbox.py: PDS blob mirror requests for media (mirror_outbox);
- accounts.py: `#account` status changes, moderation takedowns of accounts, handles;
- cursor.py, letters.py, locks.py: cursor rows, dead letters, per-DID locks;
- dump.py: `records dump`.

The names other packages use are importable from `indexer.writer`.
"""

from indexer.writer.accounts import (
    AccountChange,
    apply_account,
    apply_moderation_takedowns,
    update_handle,
)
from indexer.writer.apply import DEFAULT_SOURCE, apply_batch
from indexer.writer.checks import (
    ROW_BUILDERS,
    checked_rows,
    default_lexicons,
    hides_record,
    validate_op,
)
from indexer.writer.counts import recount
from indexer.writer.cursor import CursorConflict, CursorUpdate, read_cursor, write_cursor
from indexer.writer.dump import dump_records
from indexer.writer.letters import DeadLetter, insert_dead_letters
from indexer.writer.locks import WRITER_LOCK_CLASS, did_lock_key, lock_dids
from indexer.writer.winners import BatchResult

__all__ = [
    "DEFAULT_SOURCE",
    "ROW_BUILDERS",
    "WRITER_LOCK_CLASS",
    "AccountChange",
    "BatchResult",
    "CursorConflict",
    "CursorUpdate",
    "DeadLetter",
    "apply_account",
    "apply_moderation_takedowns",
    "apply_batch",
    "checked_rows",
    "default_lexicons",
    "did_lock_key",
    "dump_records",
    "hides_record",
    "insert_dead_letters",
    "lock_dids",
    "read_cursor",
    "recount",
    "update_handle",
    "validate_op",
    "write_cursor",
]
