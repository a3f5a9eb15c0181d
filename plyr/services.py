"""The services `plyr up` runs, in start order: name -> `run(rt)`.

Each entry imports its service when started, so listing them costs nothing (`plyr --help` and
the commands that run one service do not import the others).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the runtime would pull in aiohttp and asyncpg for `plyr --help`
    from core.runtime import Runtime, Service


async def _indexer(rt: Runtime) -> None:
    # Network plays naming this AppView's track pages match by URL (PLYR_TRACK_PAGE_HOSTS unset).
    from urllib.parse import urlsplit

    from appview.settings import AppviewSettings
    from indexer.service import run

    appview = AppviewSettings.from_env(core=rt.settings)
    await run(rt, page_host=urlsplit(appview.public_url).netloc.lower() or None)


async def _resync(rt: Runtime) -> None:
    from indexer.backfill.service import run

    await run(rt)


async def _labels(rt: Runtime) -> None:
    # Our own AppView's labeler is followed too, on its local address with its configured key:
    # its did:web need not resolve from inside (a loopback public URL, a proxy in front).
    from appview.settings import AppviewSettings
    from indexer.labels.keys import KnownLabeler
    from indexer.labels.service import run

    appview = AppviewSettings.from_env(core=rt.settings)
    known = None
    if appview.labeler.key is not None:
        host = "127.0.0.1" if appview.host in ("", "0.0.0.0", "::") else appview.host
        host = f"[{host}]" if ":" in host else host
        known = KnownLabeler(appview.service_did, f"http://{host}:{appview.port}", appview.labeler.key.public_key())
    await run(rt, known)


async def _appview(rt: Runtime) -> None:
    from appview.service import run

    await run(rt)


async def _media(rt: Runtime) -> None:
    from media.service import run

    await run(rt)


SERVICES: dict[str, Service] = {
    "indexer": _indexer,
    "resync": _resync,
    "labels": _labels,
    "appview": _appview,
    "media": _media,
}
