"""Prometheus metrics of the label subscriber (default registry: served by the AppView's /metrics
under `plyr up`, or by `plyr labels --metrics-port`). `labeler` is a configured DID: a bounded
set, as is `reason` (the kinds in indexer/labels/subscriber.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LABELS_APPLIED = Counter(
    "plyr_labels_applied_total", "Labels stored (newer than what was stored for their key)", ["labeler"]
)
LABELS_STALE = Counter(
    "plyr_labels_stale_total", "Verified labels ignored: not newer than the stored state of their key", ["labeler"]
)
LABELS_REJECTED = Counter(
    "plyr_labels_rejected_total", "Frames and labels refused (recorded in label_rejects), by reason",
    ["labeler", "reason"],
)  # fmt: skip
LABEL_CURSOR = Gauge("plyr_labels_cursor", "Last committed subscribeLabels seq", ["labeler"])
LABEL_CONNECTED = Gauge("plyr_labels_connected", "1 while the labeler's stream is open", ["labeler"])
LABEL_RECONNECTS = Counter("plyr_labels_reconnects_total", "subscribeLabels reconnects", ["labeler"])
KEY_REFETCHES = Counter(
    "plyr_labels_key_refetches_total", "Fresh DID document lookups after a signature failed", ["labeler"]
)
ACCOUNT_TAKEDOWNS = Counter(
    "plyr_labels_account_takedowns_total",
    "Accounts taken down or restored by moderation labelers", ["change"],
)  # fmt: skip
