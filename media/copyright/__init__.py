"""Copyright scanning of the audio we hold (issue 16), owner of `copyright_scans`.

Every audio object media stores (an upload, a PDS blob's copy) is asked for a scan
(`store.request_scan`, a `copyright_scan` job keyed by the audio's sha-256); the job
(`scan.run_copyright_scan`) fingerprints the whole file (media/fingerprint/), stores the
fingerprint, looks for matches in the reference catalog and among the other audio we hold, and
writes one `copyright_scans` row per attempt: `flagged`, `clear`, or `error` with the message,
retried with backoff. `plyr moderation catalog add` and `plyr moderation scan` (cli.py) are the
operator's side; reviews are the AppView's (appview/moderation/copyright.py), which only reads
`copyright_scans`.
"""
