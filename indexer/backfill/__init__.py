"""Backfill, resync and drift audit: whole repos fetched with getRepo, written through the writer.

Data flow: discovery (relay / PDS / DID list) -> state (backfill_repos rows) -> fetch (polite
HTTP, streamed getRepo) -> extract (CAR index, signed commit, pruned MST walk, verified plyr
records) -> apply (indexer.writer.apply_batch with the rev rules) -> state done/failed.
The resync loop and `plyr audit` reuse the same per-repo pipeline (indexer/backfill/repo.py).
"""
