"""The AppView's front door, pages for people: `/` (what this instance indexes, how fresh the
index is, the relay it follows, its version) and `/api` (every fm.plyr.* method, generated from
the lexicons by api_page.py). Server-rendered, no script, one stylesheet allowed by hash.

Figures never count a big table per request (docs/invariants.md): see `read_figures`."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

import asyncpg
from aiohttp import web

from appview.api_page import render_api_body
from appview.caches import TtlCache
from appview.context import AppState, Route
from appview.http import RETRY_AFTER, database_unavailable, etag_of, not_modified
from appview.labels import REMOVED_TOTALS_SQL, Moderation
from appview.xrpc_schema import LexiconSet
from core.settings import FirehoseSettings

log = logging.getLogger("plyr.appview")

PACKAGE = "plyr-appview"


STYLE = """:root{color-scheme:light dark;--muted:#666;--line:#ddd;--box:rgba(127,127,127,.12)}
@media (prefers-color-scheme:dark){:root{--muted:#aaa;--line:#444}}
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,sans-serif;max-width:54rem;margin:0 auto;padding:1rem;overflow-wrap:anywhere}
h1{font-size:1.6rem;margin:.2rem 0 1rem}
h2{font-size:1.25rem;margin:2rem 0 .6rem;padding-bottom:.2rem;border-bottom:1px solid var(--line)}
h3{font-size:1.1rem;margin:1.6rem 0 .3rem}h4{font-size:.95rem;margin:1rem 0 .3rem}
code,pre{font:14px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{white-space:pre-wrap;word-break:break-all;background:var(--box);padding:.6rem;border-radius:6px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;vertical-align:top;padding:.3rem .5rem;border-bottom:1px solid var(--line)}
th{white-space:nowrap}td{overflow-wrap:break-word}td code{overflow-wrap:anywhere}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(9rem,1fr));gap:.75rem;margin:0}
.figures div{border:1px solid var(--line);border-radius:8px;padding:.6rem .8rem}
.figures dt{color:var(--muted);font-size:14px}.figures dd{margin:0;font-size:1.4rem;font-weight:600}
.meta,.none,.note,footer{color:var(--muted)}
.unavailable{color:#b00020}
nav ul{padding-left:1.2rem}
section.method{border-top:1px solid var(--line);margin-top:1.2rem}
footer{margin-top:3rem;font-size:14px}"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
# Nothing but the one stylesheet: no script, images, fonts, forms, <base> or framing.
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    f"form-action 'none'; frame-ancestors 'none'"
)


def document(title: str, body: str, description: str) -> str:
    """A whole page around `body` (already HTML); `title`/`description` are escaped here."""
    return f"""<!doctype html>
<html lang="en"><head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<meta name="description" content="{escape(description)}">
<style>{STYLE}</style>
</head><body>
{body}
</body></html>
"""


def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@dataclass(frozen=True)
class Follows:
    """The stream this deployment's indexer is configured to follow."""

    kind: str  # relay | jetstream
    url: str

    @classmethod
    def from_env(cls) -> Follows:
        """From the indexer's declarations (core/settings.py), which the AppView shares."""
        firehose = FirehoseSettings.from_env()
        url = firehose.jetstream_url if firehose.source == "jetstream" else firehose.relay_url
        return cls(firehose.source, url)


# ---- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    value: int
    kind: str  # exact | about | more than | at least

    def text(self) -> str:
        if self.kind == "exact":
            return f"{self.value:,}"
        return f"{self.kind} {self.value:,}"


# Counters kept with the rows by their owners (index_totals: the indexer's writer, hidden
# actors left out; play_totals: appview/methods/plays.py): a sum over a few slot rows, less
# what a moderation labeler removed (appview/labels.py), as getPlatformStats counts.
_FIGURES = f"""
WITH {REMOVED_TOTALS_SQL}
SELECT x.tracks - g.tracks AS tracks, x.artists - g.artists AS artists, x.likes - g.likes AS likes,
       y.plays - g.plays AS plays
FROM (SELECT coalesce(sum(tracks), 0) AS tracks, coalesce(sum(artists), 0) AS artists,
             coalesce(sum(likes), 0) AS likes FROM index_totals) x,
     (SELECT coalesce(sum(plays), 0) AS plays FROM play_totals) y,
     gone_totals g
"""


async def read_figures(pool: asyncpg.Pool, moderation: Moderation) -> dict[str, Figure]:
    """Tracks, artists, likes and plays, exact whatever the size (counters, not counts). The
    caller caches the result for stats_cache_seconds."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(moderation.sql(_FIGURES))
    assert row is not None  # sums over counter tables: always one row
    return {name: Figure(max(0, int(row[name])), "exact") for name in ("tracks", "artists", "likes", "plays")}


@dataclass(frozen=True)
class Stream:
    source: str
    seq: int
    event_time: datetime | None
    updated_at: datetime


async def read_streams(pool: asyncpg.Pool) -> list[Stream]:
    # One row per stream the indexer follows (a handful): cheap, but still cached per second.
    rows = await pool.fetch(
        "SELECT source, seq, event_time, updated_at FROM cursors "
        "ORDER BY event_time DESC NULLS LAST, source LIMIT 20"
    )
    return [Stream(r["source"], r["seq"], r["event_time"], r["updated_at"]) for r in rows]


# ---- the home page --------------------------------------------------------------------------


def format_lag(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{seconds / 86400:.0f} days"


def _code(text: Any) -> str:
    return f"<code>{escape(str(text))}</code>"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _time_tag(value: datetime | None) -> str:
    if value is None:
        return '<span class="none">none yet</span>'
    text = escape(_iso(value))
    return f'<time datetime="{text}">{text}</time>'


def _lag(value: datetime | None, now: float) -> str:
    return format_lag(max(0.0, now - value.timestamp())) if value is not None else "unknown"


def render_home(
    *,
    figures: Mapping[str, Figure] | None,
    streams: list[Stream] | None,
    follows: Follows,
    version: str,
    public_url: str,
    service_did: str,
    figures_seconds: float,
    now: float | None = None,
) -> str:
    """`/`; None figures/streams mean the database could not be read."""
    now = time.time() if now is None else now
    labels = (("tracks", "Tracks"), ("artists", "Artists"), ("likes", "Likes"), ("plays", "Plays"))
    cells = "".join(
        f'<div><dt>{label}</dt><dd id="figure-{key}">'
        + (escape(figures[key].text()) if figures is not None and key in figures
           else '<span class="unavailable">unavailable</span>')
        + "</dd></div>"
        for key, label in labels
    )
    if streams is None:
        freshness = '<p class="unavailable" id="freshness">The index cannot be read right now; retry shortly.</p>'
    elif not streams:
        freshness = '<p id="freshness">No stream position recorded yet: the indexer has not written a batch.</p>'
    else:
        newest = streams[0]
        rows = "".join(
            f"<tr><td>{_code(s.source)}</td><td>{s.seq}</td><td>{_time_tag(s.event_time)}</td>"
            f"<td>{escape(_lag(s.event_time, now))}</td><td>{_time_tag(s.updated_at)}</td></tr>"
            for s in streams
        )
        freshness = (
            f'<p id="freshness">Newest event indexed: {_time_tag(newest.event_time)}, '
            f"<strong>lag {escape(_lag(newest.event_time, now))}</strong> behind this server's clock.</p>"
            '<div class="scroll"><table><thead><tr><th>stream</th><th>cursor (seq)</th>'
            "<th>event time</th><th>lag</th><th>written at</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )
    reread = f"at most every {figures_seconds:g} s" if figures_seconds > 0 else "on every request"
    return f"""<header><h1>plyr AppView</h1></header>
<main>
<p>This server follows the AT Protocol network's <code>fm.plyr.*</code> records (music tracks,
likes, comments, lists and profiles), indexes them in PostgreSQL and serves them over XRPC to
plyr clients and embeds.</p>
<h2>What it indexes</h2>
<dl class="figures">{cells}</dl>
<p class="note">Figures are re-read {reread}; hidden accounts are left out of tracks, artists
and likes.</p>
<h2>How fresh it is</h2>
{freshness}
<p class="note">Every XRPC response says the same in its <code>Plyr-Index-Event-Time</code> and
<code>Plyr-Index-Lag</code> headers.</p>
<h2>Where it reads from</h2>
<p id="follows">Follows the {escape(follows.kind)} {_code(follows.url)}.</p>
<h2>API</h2>
<ul>
<li><a href="/api" id="api-link">API reference</a>: every method with its parameters, output, errors
and an example call</li>
<li><a href="/openapi.json" id="openapi-link">/openapi.json</a>: the same as OpenAPI 3</li>
<li><a href="/health">/health</a> · <a href="/metrics">/metrics</a></li>
</ul>
<p>Public URL {_code(public_url)} · service DID {_code(service_did)}</p>
</main>
<footer><span id="version">plyr-appview {escape(version)}</span></footer>"""


# ---- routes -------------------------------------------------------------------------------


def _html(body: str, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": PAGE_CSP, **headers})


def add_routes(app: web.Application, state: AppState, lexicons: LexiconSet, routes: Mapping[str, Route]) -> None:
    settings = state.settings
    follows = Follows.from_env()
    version = package_version()
    cache = TtlCache(max_entries=4)
    figures_ttl = settings.stats_cache_seconds

    # The reference depends only on the lexicons and settings: rendered once.
    api_html = document(
        "API reference · plyr AppView",
        render_api_body(lexicons, routes, settings.public_url, settings.service_did),
        "The XRPC methods of this plyr AppView, generated from its lexicons.",
    ).encode()
    api_etag = etag_of(api_html)

    async def home(_request: web.Request) -> web.Response:
        figures: dict[str, Figure] | None = None
        streams: list[Stream] | None = None
        try:
            # Served stale for up to 10 TTLs while one background load refreshes it.
            figures = await cache.get("figures", figures_ttl, lambda: read_figures(state.pool, state.moderation),
                                      stale_for=10 * figures_ttl)
            streams = await cache.get("streams", settings.freshness_interval,
                                      lambda: read_streams(state.pool), stale_for=10)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # As everywhere in the app: a 503 that may be retried, nothing about the database
            # shown; but the page still says what it can (version, relay, links).
            log.warning("front door: database unavailable", extra={"error": str(exc)[:300]})
        page = document(
            "plyr AppView",
            render_home(figures=figures, streams=streams, follows=follows, version=version,
                        public_url=settings.public_url, service_did=settings.service_did,
                        figures_seconds=figures_ttl),
            "A plyr AppView: what it indexes, how fresh the index is, and its API.",
        )
        if figures is None or streams is None:
            return _html(page, 503, {"Retry-After": RETRY_AFTER, "Cache-Control": "no-store"})
        return _html(page, 200, {"Cache-Control": f"public, max-age={settings.public_max_age}"})

    async def api(request: web.Request) -> web.Response:
        headers = {"ETag": api_etag, "Cache-Control": "public, max-age=300", "Content-Security-Policy": PAGE_CSP}
        if not_modified(request, api_etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=api_html, content_type="text/html", charset="utf-8", headers=headers)

    app.router.add_get("/", home)
    app.router.add_get("/api", api)
