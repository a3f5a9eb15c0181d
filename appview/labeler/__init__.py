"""The AppView's own labeler: labels signed with the service DID's `#atproto_label` key, kept in
`own_labels` (this package is that table's only writer, through `store.emit_labels`), served by
`com.atproto.label.queryLabels` (query.py) and `com.atproto.label.subscribeLabels` (stream.py).

Off unless a key is configured (settings.py): then neither method exists (404
MethodNotImplemented, as for any method we do not serve) and the DID document names no labeler.
"""
