"""`plyr audit`: compare the index with what each PDS serves, per repo; optionally repair.

For each audited repo the truth is `com.atproto.repo.listRecords` for every indexed `fm.plyr.*`
collection, each record checked with the writer's own rule (`checked_rows`: our lexicons, the
record key type); the index side is the rows of that DID. It must hold exactly the valid ones:
- missing: valid on the PDS, not in the index;
- extra: in the index, not served by the PDS;
- stale: valid on the PDS, in the index with another cid;
- invalid: invalid on the PDS (its newest version), yet served by the index.
`--repair` refetches a drifted repo (getRepo, through the writer), which converges all four.
Each run is stored in `audit_runs`/`audit_repos`; the last run's figures are Prometheus gauges
(`plyr_audit_last{figure=...}`), refreshed from the database by the resync loop so that the
long-running process exposes them too.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import Gauge

from indexer.backfill.http import FetchError, xrpc_url
from indexer.backfill.repo import RepoSyncer
from indexer.records import INDEXED_COLLECTIONS, RecordOp
from indexer.writer import checked_rows
from protocol.identity import IdentityError

log = logging.getLogger("plyr.backfill")

AUDIT_LAST = Gauge(
    "plyr_audit_last",
    "Figures of the last drift audit (repos_checked, repos_drifted, repos_failed, missing, extra, "
    "stale, invalid, repaired, finished_timestamp_seconds).",
    ["figure"],
)
_FIGURES = (
    "repos_checked",
    "repos_drifted",
    "repos_failed",
    "missing",
    "extra",
    "stale",
    "invalid",
    "repaired",
)

_INDEX_ROWS = " UNION ALL ".join(
    f"SELECT uri, cid FROM {table} WHERE did = $1"
    for table in ("tracks", "likes", "comments", "lists", "profiles")
)
PAGE = 100


@dataclass
class RepoAudit:
    did: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # invalid on the PDS, served here
    error: str | None = None
    repaired: bool = False

    @property
    def drifted(self) -> bool:
        return bool(self.missing or self.extra or self.stale or self.invalid)


@dataclass
class AuditReport:
    run_id: int
    repos: list[RepoAudit]

    def total(self, name: str) -> int:
        return sum(len(getattr(r, name)) for r in self.repos)

    @property
    def drifted(self) -> list[RepoAudit]:
        return [r for r in self.repos if r.drifted]

    @property
    def failed(self) -> list[RepoAudit]:
        return [r for r in self.repos if r.error]

    def lines(self) -> list[str]:
        out = []
        for r in self.repos:
            if r.error:
                out.append(f"{r.did}: could not audit: {r.error}")
            elif r.drifted:
                tag = " (repaired)" if r.repaired else ""
                out.append(
                    f"{r.did}: missing {len(r.missing)}, extra {len(r.extra)}, "
                    f"stale {len(r.stale)}, invalid {len(r.invalid)}{tag}"
                )
                out.extend(f"  missing {u}" for u in r.missing[:20])
                out.extend(f"  extra   {u}" for u in r.extra[:20])
                out.extend(f"  stale   {u}" for u in r.stale[:20])
                out.extend(f"  invalid {u}" for u in r.invalid[:20])
        repaired = sum(1 for r in self.repos if r.repaired)
        out.append(
            f"audit #{self.run_id}: {len(self.repos)} repo(s) checked, {len(self.drifted)} drifted, "
            f"{len(self.failed)} could not be checked; missing {self.total('missing')}, "
            f"extra {self.total('extra')}, stale {self.total('stale')}, "
            f"invalid {self.total('invalid')}; repaired {repaired}"
        )
        return out


async def pick_repos(
    pool: asyncpg.Pool, *, sample: int | None, dids: list[str] | None
) -> list[str]:
    """The DIDs to audit: given ones, else a random sample (or all) of the repos the index knows."""
    if dids:
        return list(dict.fromkeys(dids))
    query = """SELECT did FROM (
                 SELECT did FROM actors WHERE status = 'active'
                 UNION SELECT did FROM backfill_repos WHERE status = 'done') k"""
    if sample is None:
        rows = await pool.fetch(query + " ORDER BY did")
    else:
        rows = await pool.fetch(query + " ORDER BY random() LIMIT $1", sample)
    return [r["did"] for r in rows]


@dataclass(slots=True)
class Served:
    """One record as the PDS serves it, judged by the writer's rule."""

    cid: str
    problem: str | None  # why the index must not serve it, or None when valid


async def served_records(syncer: RepoSyncer, pds_url: str, did: str) -> dict[str, Served]:
    """uri -> what the PDS serves, for every record of an indexed collection of `did`."""
    url = xrpc_url(pds_url, "com.atproto.repo.listRecords")
    out: dict[str, Served] = {}
    for collection in INDEXED_COLLECTIONS:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params = {"repo": did, "collection": collection, "limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            page = await syncer.client.get_json(url, params, what=f"listRecords {collection}")
            records = page.get("records") if isinstance(page, dict) else None
            if not isinstance(records, list):
                raise FetchError(
                    f"listRecords {collection}: answer has no records list", transient=False
                )
            for rec in records:
                served = _judge(rec, did, collection, syncer.lexicons)
                if served is not None:
                    out[rec["uri"]] = served
            cursor = page.get("cursor")
            if not records or not isinstance(cursor, str) or not cursor or cursor in seen:
                break
            seen.add(cursor)
    return out


def _judge(rec: object, did: str, collection: str, lexicons: Any) -> Served | None:
    if not isinstance(rec, dict):
        return None
    uri, cid = rec.get("uri"), rec.get("cid")
    if not isinstance(uri, str) or not isinstance(cid, str):
        return None
    prefix = f"at://{did}/{collection}/"
    if not uri.startswith(prefix):
        return None  # not a record of this repo and collection: not the PDS's to tell
    value = rec.get("value")
    op = RecordOp("create", did, collection, uri[len(prefix) :], "audit", cid,
                  value if isinstance(value, dict) else None)  # fmt: skip
    return Served(cid, checked_rows(op, lexicons)[0])


async def audit_repo(syncer: RepoSyncer, did: str) -> RepoAudit:
    result = RepoAudit(did)
    try:
        doc = await syncer.resolver.resolve_did(did)
        if not doc.pds_endpoint:
            raise FetchError("DID document names no PDS", transient=False)
        truth = await served_records(syncer, doc.pds_endpoint, did)
    except (IdentityError, FetchError) as exc:
        result.error = str(exc)
        return result
    async with syncer.pool.acquire() as conn:
        index = {r["uri"]: r["cid"] for r in await conn.fetch(_INDEX_ROWS, did)}
    for uri, served in truth.items():
        held = index.get(uri)
        if served.problem is not None:
            if held is not None:
                result.invalid.append(uri)
        elif held is None:
            result.missing.append(uri)
        elif held != served.cid:
            result.stale.append(uri)
    result.extra = [u for u in index if u not in truth]
    for kind in (result.missing, result.extra, result.stale, result.invalid):
        kind.sort()
    return result


async def run_audit(
    syncer: RepoSyncer, dids: list[str], *, repair: bool = False, workers: int = 4
) -> AuditReport:
    pool = syncer.pool
    run_id = await pool.fetchval("INSERT INTO audit_runs DEFAULT VALUES RETURNING id")
    sem = asyncio.Semaphore(max(1, workers))

    async def _one(did: str) -> RepoAudit:
        async with sem:
            audit = await audit_repo(syncer, did)
            if repair and audit.drifted:
                synced = await syncer.sync(did, source="audit")
                if synced.ok:
                    again = await audit_repo(syncer, did)
                    audit.repaired = not again.drifted and again.error is None
                else:
                    log.warning("repair failed", extra={"did": did, "reason": synced.reason})
            return audit

    repos = list(await asyncio.gather(*(_one(d) for d in dids)))
    report = AuditReport(run_id, repos)
    figures = {
        "repos_checked": len(repos),
        "repos_drifted": len(report.drifted),
        "repos_failed": len(report.failed),
        "missing": report.total("missing"),
        "extra": report.total("extra"),
        "stale": report.total("stale"),
        "invalid": report.total("invalid"),
        "repaired": sum(1 for r in repos if r.repaired),
    }
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """UPDATE audit_runs SET finished_at = now(), repos_checked = $2, repos_drifted = $3,
                 repos_failed = $4, missing = $5, extra = $6, stale = $7, invalid = $8,
                 repaired = $9 WHERE id = $1""",
            run_id, *(figures[f] for f in _FIGURES),
        )  # fmt: skip
        rows = [
            (run_id, r.did, len(r.missing), len(r.extra), len(r.stale), len(r.invalid), r.error,
             r.repaired)  # fmt: skip
            for r in repos
            if r.drifted or r.error
        ]
        if rows:
            await conn.executemany(
                """INSERT INTO audit_repos (run_id, did, missing, extra, stale, invalid, error,
                                           repaired)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                rows,
            )
    await refresh_audit_metrics(pool)
    return report


async def refresh_audit_metrics(pool: asyncpg.Pool) -> None:
    """Set the plyr_audit_last gauges from the last finished audit run."""
    row = await pool.fetchrow(
        """SELECT *, extract(epoch FROM finished_at) AS finished_ts FROM audit_runs
           WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"""
    )
    if row is None:
        return
    for name in _FIGURES:
        AUDIT_LAST.labels(name).set(row[name])
    AUDIT_LAST.labels("finished_timestamp_seconds").set(float(row["finished_ts"]))
