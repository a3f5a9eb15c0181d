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
from appview.labels import Moderation
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
    labeler: LabelSigner | None = None  # our labeler's signer (emit_labels); None: no key, off
    moderation: Moderation = field(init=False)

    def __post_init__(self) -> None:
        self.moderation = Moderation(self.settings.labels.moderation_labelers)
        if self.views.ttl != self.settings.view_cache_seconds:
            self.views = TrackViewCache(self.settings.view_cache_seconds)
        if self.likes is None:
            self.likes = ViewerLikes(self.pool)
        if self.views.loader is None:
            pool, moderation = self.pool, self.moderation
            self.views.loader = lambda uris: read_track_views(pool, uris, moderation, first=True)


@dataclass
class Call:
    state: AppState
    params: dict[str, Any]
    body: Any
    viewer: str | None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.state.pool

    def sql(self, template: str) -> str:
        """A statement with its `@removed(...)` conditions written out (appview/labels.py)."""
        return self.state.moderation.sql(template)

    async def tracks(self, uris: list[str]) -> list[dict[str, Any]]:
        """Views of `uris` in order, through the shared view cache, with the caller's state."""
        return await hydrate_tracks(
            self.state.pool, uris, self.viewer, self.state.moderation, self.state.views, self.state.likes
        )


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    auth: AuthMode = "optional"


HIDDEN_SQL = "EXISTS (SELECT 1 FROM actors h WHERE h.did = {col} AND NOT h.visible)"


def not_hidden(col: str) -> str:
    """A SQL condition: the actor in `col` is not hidden (unknown actors count as visible) and
    no moderation labeler removed their account (a safety net: the indexer hides such accounts;
    the statement must go through `Call.sql`)."""
    return "NOT " + HIDDEN_SQL.format(col=col) + f" AND NOT @removed({col})"


async def resolve_actor(call: Call, actor: str, *, must_exist: bool = False) -> str:
    """The DID of an at-identifier (DID or handle); NotFound for hidden, removed or unknown
    handles."""
    if actor.startswith("did:"):
        row = await call.pool.fetchrow(
            call.sql("SELECT visible AND NOT @removed(did) AS visible FROM actors WHERE did = $1"), actor
        )
        if (row is None and must_exist) or (row is not None and not row["visible"]):
            raise not_found(f"actor not found: {actor}")
        return actor
    row = await call.pool.fetchrow(
        call.sql(
            "SELECT did, visible AND NOT @removed(did) AS visible FROM actors WHERE lower(handle) = lower($1) "
            "ORDER BY updated_at DESC LIMIT 1"
        ),
        actor,
    )
    if row is None or not row["visible"]:
        raise not_found(f"actor not found: {actor}")
    return row["did"]


def uri_did(uri: str) -> str:
    """The authority of an at:// URI (a DID for the URIs we index)."""
    return uri[5:].split("/", 1)[0]
