"""Prometheus metrics of the indexer (default registry: served by `plyr index` on its own port,
or by the appview's /metrics under `plyr up`).

The hot loop never touches these directly (a Counter.inc takes a lock): the consumer keeps
plain integers and publishes them at each batch and status tick.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FRAMES = Counter("plyr_indexer_frames_total", "Firehose frames received, by message type", ["type"])
BAD_FRAMES = Counter("plyr_indexer_bad_frames_total", "Frames that could not be decoded or were misshapen")
MATCHED_OPS = Counter("plyr_indexer_matched_ops_total", "fm.plyr.* record operations seen")
RECORDS_WRITTEN = Counter("plyr_indexer_records_written_total", "Rows created, updated or deleted")
STALE_OPS = Counter("plyr_indexer_stale_ops_total", "Operations ignored by the rev rules")
DEAD_LETTERS = Counter("plyr_indexer_dead_letters_total", "Records and frames sent to dead_letters")
VERIFY_FAILURES = Counter(
    "plyr_indexer_verify_failures_total", "Matched commits that failed verification", ["kind"]
)
RECONNECTS = Counter("plyr_indexer_reconnects_total", "Websocket reconnects", ["source"])
BATCHES = Counter("plyr_indexer_batches_total", "Write transactions committed")
RESYNC_MARKS = Counter("plyr_indexer_resync_marks_total", "Repos marked for resync")
CURSOR_SEQ = Gauge("plyr_indexer_cursor_seq", "Last committed cursor", ["source"])
CURSOR_LAG_SEQ = Gauge("plyr_indexer_cursor_lag_seq", "Received seq minus committed seq", ["source"])
CURSOR_LAG_SECONDS = Gauge(
    "plyr_indexer_cursor_lag_seconds", "Now minus the event time of the committed cursor", ["source"]
)
LEADER = Gauge("plyr_indexer_leader", "1 while this process holds the indexer lock", ["source"])
