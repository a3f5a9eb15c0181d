"""One repo, start to finish: resolve the DID, stream getRepo, extract, write, record the outcome.

Writing a snapshot goes through `indexer.writer.apply_batch` like every live event, with the
commit's rev on every op, so the live cutover is safe: a record the live indexer wrote at a newer
rev is not overwritten by the (older) snapshot, and a live delete's tombstone keeps an older
snapshot copy from coming back. Records the index holds for the repo but the snapshot does not
are deleted at the snapshot's rev (the same rule keeps newer live creates).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client import Counter

from indexer.backfill import state
from indexer.backfill.extract import (
    DEFAULT_MEMORY_LIMIT,
    CarIndex,
    ExtractError,
    RepoSnapshot,
    extract_records,
)
from indexer.backfill.http import FetchError, PoliteClient, xrpc_url
from indexer.records import RecordOp
from indexer.writer import BatchResult, apply_batch
from indexer.writer.checks import STORED_COLLECTIONS
from protocol.car import CarError
from protocol.identity import IdentityError, IdentityResolving
from protocol.mst import MstError

log = logging.getLogger("plyr.backfill")

SOURCE = "backfill"
CAR_TYPES = ("application/vnd.ipld.car",)

REPOS = Counter(
    "plyr_backfill_repos_total", "Repos fetched by backfill/resync/repair, by outcome.", ["outcome"]
)
RECORDS = Counter("plyr_backfill_records_total", "fm.plyr.* records extracted from fetched repos.")
CAR_BYTES = Counter("plyr_backfill_car_bytes_total", "Bytes of repo CARs downloaded.")

_INDEXED_URIS = " UNION ALL ".join(
    f"SELECT uri FROM {table} WHERE did = $1"
    for table in ("tracks", "likes", "comments", "lists", "profiles", "network_plays")
)


@dataclass
class RepoResult:
    did: str
    ok: bool
    reason: str | None = None
    rev: str | None = None
    records: int = 0
    applied: int = 0
    stale: int = 0
    invalid: int = 0
    deleted: int = 0
    car_bytes: int = 0
    seconds: float = 0.0
    fetch_s: float = 0.0  # DID resolution + getRepo + extraction
    write_s: float = 0.0  # the writer's transactions


class RepoSyncer:
    """Fetches repos and writes their plyr records; shared by backfill, resync and audit repair."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: PoliteClient,
        resolver: IdentityResolving,
        *,
        lexicons: Any,
        verify_signatures: bool = True,
        batch_size: int = 1000,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        spill_dir: str | Path | None = None,
        max_repo_bytes: int = 4 * 1024**3,
        chunk_size: int = 256 * 1024,
    ) -> None:
        self.pool = pool
        self.client = client
        self.resolver = resolver
        self.lexicons = lexicons
        self.verify_signatures = verify_signatures
        self.batch_size = batch_size
        self.memory_limit = memory_limit
        self.spill_dir = spill_dir
        self.max_repo_bytes = max_repo_bytes
        self.chunk_size = chunk_size

    async def sync(self, did: str, *, source: str = SOURCE) -> RepoResult:
        """Fetch and write one repo; failures are recorded with their reason, never raised."""
        started = time.monotonic()
        pds_url: str | None = None
        try:
            try:
                doc = await self.resolver.resolve_did(did)
            except IdentityError as exc:
                raise _Failed(f"cannot resolve DID: {exc}") from exc
            pds_url = doc.pds_endpoint
            if not pds_url:
                raise _Failed("DID document names no PDS (#atproto_pds service)")
            if self.verify_signatures and doc.signing_key is None:
                raise _Failed("DID document has no #atproto signing key")
            snapshot = await self.fetch(did, pds_url, doc.signing_key)
            fetched = time.monotonic()
            result = await self.write(snapshot)
            result.fetch_s = fetched - started
            result.write_s = time.monotonic() - fetched
        except (asyncpg.PostgresError, asyncpg.InterfaceError):
            raise  # the database, not this repo: the caller decides (the repo stays pending)
        except Exception as exc:  # noqa: BLE001 - one repo's bad data must not stop the run
            reason = _reason(exc)
            if not isinstance(exc, _Failed | FetchError | CarError | ExtractError | MstError):
                log.exception("unexpected error fetching a repo", extra={"did": did})
            await state.mark_failed(self.pool, did, reason, source=source, pds_url=pds_url)
            REPOS.labels("failed").inc()
            log.warning("repo failed", extra={"did": did, "reason": reason})
            return RepoResult(did, False, reason, seconds=time.monotonic() - started)
        result.seconds = time.monotonic() - started
        await state.mark_done(
            self.pool, did, rev=snapshot.rev, records=result.records, car_bytes=snapshot.car_bytes,
            duration_ms=int(result.seconds * 1000), pds_url=pds_url, source=source,
        )  # fmt: skip
        await self.pool.execute(
            "UPDATE actors SET pds_url = $2 WHERE did = $1 AND pds_url IS DISTINCT FROM $2",
            did,
            pds_url,
        )
        # A resync mark is cleared only if no newer commit has been seen since this snapshot.
        await self.pool.execute(
            """UPDATE actors SET needs_resync = false, resync_reason = NULL, updated_at = now()
               WHERE did = $1 AND needs_resync AND (repo_rev IS NULL OR repo_rev <= $2)""",
            did,
            snapshot.rev,
        )
        REPOS.labels("done").inc()
        RECORDS.inc(result.records)
        CAR_BYTES.inc(snapshot.car_bytes)
        log.debug("repo done", extra={"did": did, "rev": snapshot.rev, "records": result.records})
        return result

    async def fetch(self, did: str, pds_url: str, signing_key: Any) -> RepoSnapshot:
        """Stream the repo's CAR into a CarIndex and extract its verified plyr records."""
        url = xrpc_url(pds_url, "com.atproto.sync.getRepo")

        async def _read(resp: aiohttp.ClientResponse) -> RepoSnapshot:
            declared = resp.content_length
            if declared is not None and declared > self.max_repo_bytes:
                raise _Failed(
                    f"repo is {declared} bytes, above the {self.max_repo_bytes}-byte limit"
                )
            index = CarIndex(memory_limit=self.memory_limit, spill_dir=self.spill_dir)
            try:
                async for chunk in resp.content.iter_chunked(self.chunk_size):
                    index.feed(chunk)
                    if index.size > self.max_repo_bytes:
                        raise _Failed(f"repo is above the {self.max_repo_bytes}-byte limit")
                index.finish()
                return extract_records(
                    index, did, signing_key, verify_signature=self.verify_signatures
                )
            finally:
                index.close()

        return await self.client.call(url, {"did": did}, _read, accept=CAR_TYPES, what="getRepo")

    async def write(self, snapshot: RepoSnapshot) -> RepoResult:
        """Write a snapshot through the writer, in batches; delete what the repo no longer holds."""
        did, rev = snapshot.did, snapshot.rev
        result = RepoResult(
            did, True, rev=rev, records=len(snapshot.records), car_bytes=snapshot.car_bytes
        )
        async with self.pool.acquire() as conn:
            indexed = {r["uri"] for r in await conn.fetch(_INDEXED_URIS, did)}
        # Every record goes to the writer, invalid ones too: the newest version being invalid
        # hides the record (the writer keeps one dead letter per version, not one per fetch).
        ops: list[RecordOp] = []
        present: set[str] = set()
        for rec in snapshot.records:
            present.add(f"at://{did}/{rec.collection}/{rec.rkey}")
            problem = None if rec.value is not None else rec.problem or "undecodable record"
            ops.append(
                RecordOp("create", did, rec.collection, rec.rkey, rev, rec.cid, rec.value,
                         problem=problem)
            )  # fmt: skip
        for uri in sorted(indexed - present):
            _, _, rest = uri.partition("at://")
            _, collection, rkey = rest.split("/", 2)
            if collection in STORED_COLLECTIONS:
                ops.append(RecordOp("delete", did, collection, rkey, rev))
                result.deleted += 1
        if not ops:
            return result
        for start in range(0, max(len(ops), 1), self.batch_size):
            batch = ops[start : start + self.batch_size]
            async with self.pool.acquire() as conn:
                res: BatchResult = await apply_batch(
                    conn, batch, lexicons=self.lexicons, source=SOURCE, repo_revs={did: rev},
                )  # fmt: skip
            result.applied += res.applied
            result.stale += res.stale
            result.invalid += res.invalid
        return result


class _Failed(Exception):
    pass


def _reason(exc: Exception) -> str:
    if isinstance(exc, FetchError):
        return exc.reason
    if isinstance(exc, CarError):
        return f"bad CAR: {exc}"
    if isinstance(exc, MstError):
        return f"malformed MST: {exc}"
    if isinstance(exc, _Failed | ExtractError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"internal error: {exc.__class__.__name__}: {exc}"
