"""The one rule for what may be stored: our lexicons, the record key type, and what the row
builders (indexer/records.py) can turn into rows. The writer, dead-letter replays and the audit
all ask `checked_rows`."""

from __future__ import annotations

from typing import Any

from indexer.network_plays import PLAY, PLAY_ALPHA, network_play_row
from indexer.records import (
    COMMENT,
    LIKE,
    LIST,
    PROFILE,
    TRACK,
    RecordOp,
    RowError,
    check_op,
    comment_row,
    like_row,
    list_row,
    profile_row,
    track_row,
)
from protocol.lexicon import Lexicons
from protocol.syntax import is_valid

ROW_BUILDERS = {
    TRACK: track_row,
    LIKE: like_row,
    COMMENT: comment_row,
    LIST: list_row,
    PROFILE: profile_row,
    PLAY_ALPHA: network_play_row,
    PLAY: network_play_row,
}
# Every collection the writer stores: ours, and the network plays (indexer/network_plays.py).
STORED_COLLECTIONS = frozenset(ROW_BUILDERS)


def validate_op(op: RecordOp, lexicons: Any) -> str | None:
    """The reason `op` cannot be applied, or None. Records and their keys are checked against
    the lexicons (the key type too: `tid`, `literal:self`, ...)."""
    if op.problem is not None:
        return op.problem
    problem = check_op(op)
    if problem is not None or op.action == "delete":
        return problem  # a delete at any well-formed key: it can only remove
    problems = lexicons.validate_record(op.collection, op.record, op.rkey)
    if problems:
        return "; ".join(problems[:5])
    return None


def hides_record(op: RecordOp) -> bool:
    """Whether an invalid create/update names its record and version well enough to hide the
    record: the newest version of a record being invalid removes it from the index like a
    delete (docs/invariants.md), so that two indexes of the same network agree."""
    return (
        op.action in ("create", "update")
        and isinstance(op.did, str)
        and is_valid("did", op.did)
        and isinstance(op.rkey, str)
        and is_valid("record-key", op.rkey)
        and isinstance(op.rev, str)
        and bool(op.rev)
    )


def checked_rows(op: RecordOp, lexicons: Any) -> tuple[str | None, Any]:
    """(why `op` cannot be applied or None, the rows of its record). One rule for the writer,
    dead-letter replays and the audit: what our lexicons accept is stored."""
    problem = validate_op(op, lexicons)
    if problem is not None or op.action == "delete":
        return problem, None
    try:  # the row builders encode the record once (records.storable_record)
        return None, ROW_BUILDERS[op.collection](op)
    except (RowError, KeyError, TypeError) as exc:
        return f"cannot store record: {exc}", None


def default_lexicons() -> Lexicons:
    """The project's lexicons: the process's one shared instance (core/lexicons.py)."""
    from core.lexicons import project_lexicons

    return project_lexicons()
