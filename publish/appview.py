"""Asking our AppView whether it shows what was just published (public reads, no login).

A record reaches the AppView through the network (PDS firehose -> relay -> our indexer), a
moment after the PDS wrote it; `wait_for_track` asks `fm.plyr.feed.getTrack` until it answers,
and gives the track's page (`/track/{id}`).
"""

from __future__ import annotations

import time

import httpx
import orjson


def wait_for_track(appview_url: str, uri: str, within_s: float) -> str | None:
    """The track's page on the AppView once it shows the track; None if not within `within_s`
    (or the AppView cannot be reached: publishing went through all the same)."""
    deadline = time.monotonic() + within_s
    with httpx.Client(timeout=10.0) as http:
        while True:
            try:
                resp = http.get(f"{appview_url}/xrpc/fm.plyr.feed.getTrack", params={"uri": uri})
                if resp.status_code == 200:
                    track = orjson.loads(resp.content).get("track") or {}
                    if track.get("id") is not None:
                        return f"{appview_url}/track/{track['id']}"
                    return appview_url
            except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError):
                pass
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)
