"""The label subscriber: labels from the labelers a deployment follows, verified and stored.

For each labeler DID (PLYR_LABELERS) `subscriber.py` resolves its DID document (`keys.py`: the
`#atproto_labeler` endpoint and the `#atproto_label` key), follows its
`com.atproto.label.subscribeLabels` stream (`stream.py`, from the cursor in `label_cursors`;
0 on first start, which backfills everything), checks every label (its `src`, its signature,
with one fresh look at the DID document when it fails: keys rotate) and stores each batch of
frames in one transaction with the cursor (`store.py`, rules in `rules.py`): the newest `cts`
wins per (uri, src, val), negations stay as rows, refusals go to `label_rejects`. An account
taken down by a moderation labeler (PLYR_MODERATION_LABELERS: `!takedown`, `!suspend`) is
hidden through indexer/writer/accounts.py in the same transaction; `sweep.py` lifts takedowns
whose label expired. `service.py` runs it all (`plyr up`, `plyr labels`).
"""
