"""Schemathesis against /openapi.json on a live AppView: no generated request may get a 5xx,
and every 2xx must match the response schema generated from the lexicons."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from appview.app import build_app
from appview.labeler.store import LabelSigner
from protocol.crypto import PrivateKey
from tests.integration.appview.conftest import SERVICE_DID, appview_settings
from tests.support.identity import local_resolver

World = Any
ST = str(Path(sys.executable).with_name("st"))


async def _schemathesis(base: str, *args: str, known: dict[str, list[str]] | None = None) -> tuple[int, str]:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PLYR_FUZZ_KNOWN": json.dumps(known or {}),
           "PYTHONPATH": str(Path(__file__).parent)}
    proc = await asyncio.create_subprocess_exec(
        ST, "run", f"{base}/openapi.json", "--url", base,
        "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples", os.environ.get("PLYR_FUZZ_EXAMPLES", "30"),
        "--phases", "examples,coverage,fuzzing",
        "--generation-database", "none", "--seed", "20261124", "--no-color",
        "--generation-allow-x00", "true",
        "--request-timeout", "10", "--workers", "2", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_fuzzer_finds_no_server_errors(pool: asyncpg.Pool, world: World, plc: Any) -> None:
    ann = await world.account("ann", display_name="Ann")
    fan = await world.account("fan")
    uris = [await world.track(ann, f"song {i}") for i in range(5)]
    await world.like(fan, uris[0])
    await world.comment(fan, uris[0], "nice", 1000)
    album = await world.playlist(ann, "Debut", uris[:3], "album")
    known = {"dids": [ann.did, fan.did], "handles": [ann.handle, fan.handle], "uris": [*uris, album]}

    resolver = local_resolver(plc.url)
    # `fan` moderates: the moderation methods are fuzzed past the allow-list, signing for real
    app = build_app(pool, appview_settings(moderators=(fan.did,)), resolver=resolver, check_output=True,
                    label_signer=LabelSigner(SERVICE_DID, PrivateKey.generate("k256")))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    try:
        code, out = await _schemathesis(base, "--exclude-operation-id", "oembed", known=known)
        assert code == 0, out[-6000:]
        # oEmbed answers 501 to formats other than json, as its spec demands: fuzz it with
        # schema-conforming requests only (the 501 itself is tested in test_appview_http).
        code, out = await _schemathesis(base, "--include-operation-id", "oembed", "--mode", "positive")
        assert code == 0, out[-6000:]
        # the methods that need service auth, each with a valid token for it (tokens are
        # bound to one method by lxm), so bodies and params reach the handlers
        for nsid in ("fm.plyr.play.recordPlay", "fm.plyr.viewer.getQueue", "fm.plyr.viewer.putQueue",
                     "fm.plyr.viewer.getPreferences", "fm.plyr.viewer.putPreferences",
                     "com.atproto.moderation.createReport", *(f"fm.plyr.moderation.{name}" for name in (
                         "takedown", "restore", "label", "resolveReports", "listActions", "listReports", "listScans",
                         "resolveScan"))):
            token = fan.token(nsid, exp_in=900)
            code, out = await _schemathesis(base, "--include-operation-id", nsid,
                                            "-H", f"Authorization: Bearer {token}", known=known)
            assert code == 0, out[-6000:]
    finally:
        await runner.cleanup()
        await resolver.close()
