"""What an XRPC handler gets: the pool, the caller, the checked params/body, and shared state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from appview.caches import TtlCache
from appview.errors import not_found
from appview.hydrate import TrackViewCache, ViewerLikes, hydrate_tracks, read_track_views
from appview.labeler.store import LabelSigner
from appview.settings import AppviewSettings

AuthMode = Literal["none", "optional", "required"]


@dataclass
class AppState:
    settings: AppviewSettings
    pool: asyncpg.Pool
    top_cache: TtlCache = field(default_factory=TtlCache)
    stats_cache: TtlCache = field(default_factory=TtlCache)
    views: TrackViewCache = field(default_factory=lambda: TrackViewCache(0))
    likes: ViewerLikes | None = None  # set from `pool` when not given
    label_signer: LabelSigner | None = None  # our labeler's key: moderation signs with it

    def __post_init__(self) -> None:
        if self.views.ttl != self.settings.view_cache_seconds:
            self.views = TrackViewCache(self.settings.view_cache_seconds)
        if self.likes is None:
            self.likes = ViewerLikes(self.pool)
        if self.views.loader is None:
            pool = self.pool
            self.views.loader = lambda uris: read_track_views(pool, uris, first=True)


@dataclass
class Call:
    state: AppState
    params: dict[str, Any]
    body: Any
    viewer: str | None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.state.pool

    async def tracks(self, uris: list[str]) -> list[dict[str, Any]]:
        """Views of `uris` in order, through the shared view cache, with the caller's state."""
        return await hydrate_tracks(self.state.pool, uris, self.viewer, self.state.views, self.state.likes)


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    auth: AuthMode = "optional"


HIDDEN_SQL = "EXISTS (SELECT 1 FROM actors h WHERE h.did = {col} AND NOT h.visible)"


def not_hidden(col: str) -> str:
    """A SQL condition: the actor in `col` is not hidden (unknown actors count as visible)."""
    return "NOT " + HIDDEN_SQL.format(col=col)


async def resolve_actor(pool: asyncpg.Pool, actor: str, *, must_exist: bool = False) -> str:
    """The DID of an at-identifier (DID or handle); NotFound for hidden or unknown handles."""
    if actor.startswith("did:"):
        row = await pool.fetchrow("SELECT visible FROM actors WHERE did = $1", actor)
        if (row is None and must_exist) or (row is not None and not row["visible"]):
            raise not_found(f"actor not found: {actor}")
        return actor
    row = await pool.fetchrow(
        "SELECT did, visible FROM actors WHERE lower(handle) = lower($1) "
        "ORDER BY updated_at DESC LIMIT 1",
        actor,
    )
    if row is None or not row["visible"]:
        raise not_found(f"actor not found: {actor}")
    return row["did"]


def uri_did(uri: str) -> str:
    """The authority of an at:// URI (a DID for the URIs we index)."""
    return uri[5:].split("/", 1)[0]
