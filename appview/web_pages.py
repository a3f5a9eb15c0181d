"""Web paths with fixed URLs: /oembed, /track/{id} (a page with Open Graph and Twitter player
tags and oEmbed discovery) and /embed/track/{id} (a small player for iframes)."""

from __future__ import annotations

import base64
import hashlib
import re
from html import escape
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from aiohttp import web

from appview.context import AppState
from appview.errors import XRPCError, invalid_request, not_found
from appview.http import etag_of, not_modified
from appview.hydrate import hydrate_tracks
from appview.urls import servable_url

EMBED_WIDTH = 480
EMBED_HEIGHT = 160
_TRACK_PATH = re.compile(r"/(?:embed/)?track/([1-9][0-9]{0,17})/?")

TRACK_STYLE = """body{font:16px system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
img{border-radius:8px;object-fit:cover}audio{width:100%;margin-top:1rem}"""
EMBED_STYLE = f"""
*{{box-sizing:border-box}}
html,body{{margin:0;height:100%;overflow:hidden;font:14px system-ui,sans-serif;background:#111;color:#eee}}
.player{{display:flex;gap:12px;align-items:center;height:100%;max-height:{EMBED_HEIGHT}px;padding:12px}}
.cover{{width:120px;height:120px;flex:none;border-radius:6px;object-fit:cover;background:#333}}
.meta{{flex:1;min-width:0}}
.title{{font-weight:600;font-size:16px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
.artist{{color:#aaa;margin:2px 0 10px}}
audio{{width:100%}}
"""


def _csp(style: str, frame_ancestors: str) -> str:
    """A policy that allows only what the page uses: its one inline style (by hash), images and
    audio over http(s), no script, no plugins, no forms, no <base>."""
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    return (
        f"default-src 'none'; img-src https: http:; media-src https: http:; "
        f"style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'; "
        f"frame-ancestors {frame_ancestors}"
    )


# The track page is never framed; the embed is made to be framed by any site.
TRACK_CSP = _csp(TRACK_STYLE, "'none'")
EMBED_CSP = _csp(EMBED_STYLE, "*")


# The track of a page, and whether it was taken down: by a moderation labeler (the track or its
# artist's account, appview/labels.py), or its artist's account by a moderation labeler as the
# indexer recorded it. Read afresh (no cache): a takedown shows on the next request.
_TRACK_BY_ID = """
SELECT t.uri, @removed(t.uri, t.did) OR coalesce(a.moderation_takedown, false) AS gone
FROM tracks t LEFT JOIN actors a ON a.did = t.did WHERE t.short_id = $1
"""


async def _track_by_id(state: AppState, raw_id: str, *, gone: int = 410) -> dict[str, Any]:
    """The view of track `raw_id`; a NotFound, or for a track taken down an XRPC error with
    status `gone` (410 Gone for pages; oEmbed has no such status and says 404)."""
    if not re.fullmatch(r"[1-9][0-9]{0,17}", raw_id):
        raise not_found("no such track")
    row = await state.pool.fetchrow(state.moderation.sql(_TRACK_BY_ID), int(raw_id))
    if row is not None and row["gone"]:
        if gone == 410:
            raise XRPCError(410, "Gone", "this track was taken down")
        raise not_found("no such track")
    uri = row["uri"] if row is not None else None
    tracks = await hydrate_tracks(state.pool, [uri], None, state.moderation, state.views) if uri else []
    if not tracks:
        raise not_found("no such track")
    return tracks[0]


def _public(request: web.Request, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> web.Response:
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=60", **(extra or {})}
    if not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


def _size_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"[0-9]{1,6}", raw) or int(raw) < 1:
        raise invalid_request(f"{name} must be a positive integer")
    return int(raw)


def add_routes(app: web.Application, state: AppState) -> None:
    public_url = state.settings.public_url
    public = urlsplit(public_url)

    async def oembed(request: web.Request) -> web.Response:
        fmt = request.query.get("format") or "json"
        if fmt == "xml":
            raise XRPCError(501, "NotImplemented", "only format=json is supported")
        if fmt != "json":
            raise XRPCError(501, "NotImplemented", f"unsupported format {fmt[:20]!r}: use json")
        url = request.query.get("url")
        if not url:
            raise invalid_request("url is required")
        max_width = _size_param(request, "maxwidth")
        max_height = _size_param(request, "maxheight")
        try:
            parts = urlsplit(url)
        except ValueError:
            raise not_found("not a URL of this site") from None
        match = _TRACK_PATH.fullmatch(parts.path)
        if parts.netloc.lower() != public.netloc.lower() or parts.scheme not in ("http", "https") or not match:
            raise not_found("not a track URL of this site")
        track = await _track_by_id(state, match.group(1), gone=404)
        width = min(EMBED_WIDTH, max_width) if max_width else EMBED_WIDTH
        height = min(EMBED_HEIGHT, max_height) if max_height else EMBED_HEIGHT
        embed = f"{public_url}/embed/track/{track['id']}"
        author = track["author"]
        body: dict[str, Any] = {
            "version": "1.0",
            "type": "rich",
            "provider_name": "plyr",
            "provider_url": public_url + "/",
            "title": track["title"],
            "author_name": author.get("displayName") or track["artist"],
            "author_url": f"{public_url}/artist/{quote(author['did'])}",
            "html": (
                f'<iframe src="{escape(embed)}" width="{width}" height="{height}" '
                f'style="border:0" allow="autoplay; encrypted-media" loading="lazy" '
                f'title="{escape(track["title"])}"></iframe>'
            ),
            "width": width,
            "height": height,
            "cache_age": 3600,
        }
        thumbnail = servable_url(track.get("imageUrl"))
        if thumbnail:
            body["thumbnail_url"] = thumbnail
        return _public(request, orjson.dumps(body), "application/json")

    async def track_page(request: web.Request) -> web.Response:
        track = await _track_by_id(state, request.match_info["id"])
        csp = {"Content-Security-Policy": TRACK_CSP}
        return _public(request, render_track_page(track, public_url).encode(), "text/html", csp)

    async def embed_page(request: web.Request) -> web.Response:
        track = await _track_by_id(state, request.match_info["id"])
        # Embeds live in other sites' iframes: any frame ancestor, nothing else loosened.
        csp = {"Content-Security-Policy": EMBED_CSP}
        return _public(request, render_embed_page(track).encode(), "text/html", csp)

    app.router.add_get("/oembed", oembed)
    app.router.add_get("/track/{id}", track_page)
    app.router.add_get("/embed/track/{id}", embed_page)


def _artist_name(track: dict[str, Any]) -> str:
    return str(track["author"].get("displayName") or track["artist"])


def render_track_page(track: dict[str, Any], public_url: str) -> str:
    page_url = f"{public_url}/track/{track['id']}"
    embed_url = f"{public_url}/embed/track/{track['id']}"
    oembed_url = f"{public_url}/oembed?url={quote(page_url, safe='')}&format=json"
    title = escape(track["title"])
    artist = escape(_artist_name(track))
    description = escape((track.get("description") or f"{track['title']} by {_artist_name(track)}")[:300])
    image = escape(servable_url(track.get("imageUrl")) or "")
    audio = escape(servable_url(track.get("audioUrl")) or "")
    meta = [
        ("og:type", "music.song"),
        ("og:site_name", "plyr"),
        ("og:title", title),
        ("og:description", description),
        ("og:url", escape(page_url)),
        ("twitter:card", "player"),
        ("twitter:title", title),
        ("twitter:description", description),
        ("twitter:player", escape(embed_url)),
        ("twitter:player:width", str(EMBED_WIDTH)),
        ("twitter:player:height", str(EMBED_HEIGHT)),
    ]
    if image:
        meta += [("og:image", image), ("twitter:image", image)]
    if audio:
        meta += [("og:audio", audio), ("twitter:player:stream", audio)]
    if track.get("duration") is not None:
        meta.append(("music:duration", str(track["duration"])))
    tags = "\n".join(
        f'<meta {"name" if k.startswith("twitter:") else "property"}="{k}" content="{v}">' for k, v in meta
    )
    cover = f'<img src="{image}" alt="" width="240" height="240">' if image else ""
    player = f'<audio controls preload="metadata" src="{audio}"></audio>' if audio else ""
    return f"""<!doctype html>
<html lang="en"><head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {artist} · plyr</title>
<meta name="description" content="{description}">
{tags}
<link rel="alternate" type="application/json+oembed" href="{escape(oembed_url)}" title="{title}">
<link rel="canonical" href="{escape(page_url)}">
<style>{TRACK_STYLE}</style>
</head><body>
<main>{cover}
<h1>{title}</h1><p>{artist}</p>
{player}
<p>{track["likeCount"]} likes · {track["playCount"]} plays · {track["commentCount"]} comments</p>
</main></body></html>
"""


def render_embed_page(track: dict[str, Any]) -> str:
    title = escape(track["title"])
    artist = escape(_artist_name(track))
    image = escape(servable_url(track.get("imageUrl")) or "")
    audio = escape(servable_url(track.get("audioUrl")) or "")
    cover = f'<img class="cover" src="{image}" alt="">' if image else '<div class="cover"></div>'
    return f"""<!doctype html>
<html lang="en"><head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {artist}</title>
<style>{EMBED_STYLE}</style>
</head><body>
<div class="player">{cover}
<div class="meta"><div class="title" id="title">{title}</div><div class="artist" id="artist">{artist}</div>
<audio id="audio" controls preload="metadata" src="{audio}"></audio></div>
</div>
</body></html>
"""
