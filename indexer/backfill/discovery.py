"""Which repos to fetch: a relay's listReposByCollection, a PDS's listRepos, or given DIDs.

Each source yields `(did, source)` pairs; `discover` takes the union in first-seen order. Paging
follows the server's cursor and stops when it is absent, repeats, or a page comes back empty.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import PlyrError
from indexer.backfill.http import PoliteClient, xrpc_url
from indexer.records import INDEXED_COLLECTIONS
from protocol.syntax import is_valid

log = logging.getLogger("plyr.backfill")

RELAY_PAGE = 2000
PDS_PAGE = 1000


@dataclass
class Discovery:
    """What was asked for; `skipped` counts repos a source listed as inactive."""

    relay: str | None = None
    collections: tuple[str, ...] = INDEXED_COLLECTIONS
    pds: list[str] = field(default_factory=list)
    dids: list[str] = field(default_factory=list)
    skipped: int = 0


async def _paged(
    client: PoliteClient, url: str, params: dict[str, str | int], what: str
) -> AsyncIterator[dict]:
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        page = await client.get_json(url, query, what=what)
        repos = page.get("repos") if isinstance(page, dict) else None
        if not isinstance(repos, list):
            raise PlyrError(f"{what}: answer has no repos list")
        for repo in repos:
            if isinstance(repo, dict):
                yield repo
        cursor = page.get("cursor")
        if not repos or not isinstance(cursor, str) or not cursor or cursor in seen:
            return
        seen.add(cursor)


async def relay_repos(
    client: PoliteClient, relay: str, collections: Iterable[str] = INDEXED_COLLECTIONS
) -> AsyncIterator[str]:
    """DIDs of repos holding any of `collections`, per the relay (one listing per collection)."""
    url = xrpc_url(relay, "com.atproto.sync.listReposByCollection")
    for collection in collections:
        async for repo in _paged(
            client, url, {"collection": collection, "limit": RELAY_PAGE},
            f"listReposByCollection {collection}",
        ):  # fmt: skip
            did = repo.get("did")
            if isinstance(did, str) and is_valid("did", did):
                yield did


async def pds_repos(
    client: PoliteClient, pds: str, discovery: Discovery | None = None
) -> AsyncIterator[str]:
    """DIDs of the active repos a PDS hosts."""
    url = xrpc_url(pds, "com.atproto.sync.listRepos")
    async for repo in _paged(client, url, {"limit": PDS_PAGE}, f"listRepos {pds}"):
        did = repo.get("did")
        if not isinstance(did, str) or not is_valid("did", did):
            continue
        if repo.get("active") is False:
            if discovery is not None:
                discovery.skipped += 1
            continue
        yield did


def read_dids_file(path: Path) -> list[str]:
    """One DID a line; blank lines and `#` comments ignored. Bad lines are an error (line number)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlyrError(f"{path}: {exc.strerror or exc}") from None
    dids = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        if not is_valid("did", value):
            raise PlyrError(f"{path}:{number}: not a DID: {value[:80]!r}")
        dids.append(value)
    return dids


def check_dids(dids: Iterable[str]) -> list[str]:
    out = []
    for did in dids:
        if not is_valid("did", did):
            raise PlyrError(f"not a DID: {did[:80]!r}")
        out.append(did)
    return out


async def discover(client: PoliteClient, discovery: Discovery) -> dict[str, str]:
    """did -> source, the union of every source asked for, in first-seen order."""
    found: dict[str, str] = {}
    for did in discovery.dids:
        found.setdefault(did, "did")
    for pds in discovery.pds:
        async for did in pds_repos(client, pds, discovery):
            found.setdefault(did, "pds")
    if discovery.relay:
        async for did in relay_repos(client, discovery.relay, discovery.collections):
            found.setdefault(did, "relay")
    log.info("discovered repos", extra={"repos": len(found), "inactive_skipped": discovery.skipped})
    return found
