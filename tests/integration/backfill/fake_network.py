"""A local aiohttp server on 127.0.0.1 playing PLC directory, PDS and relay for backfill tests.

Repos are real signed CARs (tests/support/repo_builder.py). Each DID can misbehave:
`mode` is one of good, truncated (CAR cut inside a section, served as a complete response),
tampered (a plyr record's bytes changed), badsig (commit signed by another key), html, 500,
429 (refused `fail_times` times with Retry-After: 1, then served), cut (the connection drops
mid-body), nodoc (PLC answers 404). Every request is counted per (path, did).
"""

from __future__ import annotations

import asyncio
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from protocol.car import car_header, car_section
from protocol.cid import cid_for_cbor, cid_to_str
from protocol.commit import Commit, encode_commit, parse_commit
from protocol.crypto import PrivateKey
from protocol.data_model import block_to_json
from tests.support.repo_builder import BuiltRepo


def random_did() -> str:
    return "did:plc:" + "".join(random.choices(string.ascii_lowercase + "234567", k=24))


@dataclass
class Hosted:
    repo: BuiltRepo
    mode: str = "good"
    fail_times: int = 0
    served: int = 0
    active: bool = True


@dataclass
class FakeNetwork:
    repos: dict[str, Hosted] = field(default_factory=dict)
    requests: Counter = field(default_factory=Counter)
    base: str = ""
    relay_page: int = 2
    pds_page: int = 2
    chunk: int = 4096
    delay_per_chunk: float = 0.0
    _runner: web.AppRunner | None = None

    def host(self, repo: BuiltRepo, mode: str = "good", fail_times: int = 0) -> Hosted:
        hosted = Hosted(repo, mode, fail_times)
        self.repos[repo.did] = hosted
        return hosted

    # ---- server ----

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.getRepo", self._get_repo)
        app.router.add_get("/xrpc/com.atproto.sync.listRepos", self._list_repos)
        app.router.add_get("/xrpc/com.atproto.sync.listReposByCollection", self._list_by_collection)
        app.router.add_get("/xrpc/com.atproto.repo.listRecords", self._list_records)
        app.router.add_get("/{did}", self._plc)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- PLC ----

    async def _plc(self, request: web.Request) -> web.Response:
        did = request.match_info["did"]
        self.requests[("plc", did)] += 1
        hosted = self.repos.get(did)
        if hosted is None or hosted.mode == "nodoc":
            return web.json_response({"message": "DID not registered"}, status=404)
        key = hosted.repo.key.public_key()
        return web.json_response(
            {
                "id": did,
                "alsoKnownAs": [f"at://{did[8:20]}.test"],
                "verificationMethod": [
                    {
                        "id": f"{did}#atproto",
                        "type": "Multikey",
                        "controller": did,
                        "publicKeyMultibase": key.multibase(),
                    }
                ],
                "service": [
                    {
                        "id": "#atproto_pds",
                        "type": "AtprotoPersonalDataServer",
                        "serviceEndpoint": self.base,
                    }
                ],
            }
        )

    # ---- PDS ----

    def car_bytes(self, hosted: Hosted) -> bytes:
        repo = hosted.repo
        if hosted.mode == "badsig":
            commit = parse_commit(repo.commit_block)
            other = PrivateKey.generate("k256")
            from protocol.commit import sign_commit

            forged: Commit = sign_commit(
                did=commit.did, data=commit.data, rev=commit.rev, key=other
            )
            block = encode_commit(forged)
            cid = cid_for_cbor(block)
            body = [s for s in repo.sections() if s[0] != repo.commit_cid]
            return (
                car_header([cid])
                + car_section(cid, block)
                + b"".join(car_section(c, b) for c, b in body)
            )
        if hosted.mode == "tampered":
            parts = [car_header([repo.commit_cid])]
            for cid, block in repo.sections():
                if b"fm.plyr.track" in block and b"Track" in block:
                    block = block.replace(b"Track", b"Trick", 1)
                parts.append(car_section(cid, block))
            return b"".join(parts)
        data = repo.car()
        if hosted.mode == "truncated":
            return data[: len(data) - 50]
        return data

    async def _get_repo(self, request: web.Request) -> web.StreamResponse:
        did = request.query.get("did", "")
        self.requests[("getRepo", did)] += 1
        hosted = self.repos.get(did)
        if hosted is None:
            return web.json_response(
                {"error": "RepoNotFound", "message": f"Could not find repo for DID: {did}"},
                status=400,
            )
        if not hosted.active:
            return web.json_response(
                {"error": "RepoDeactivated", "message": "Repo has been deactivated"}, status=400
            )
        if hosted.mode == "html":
            return web.Response(
                text="<html><body>Welcome to nginx</body></html>", content_type="text/html"
            )
        if hosted.mode == "500":
            return web.json_response({"error": "InternalServerError"}, status=500)
        if hosted.mode == "429" and hosted.served < hosted.fail_times:
            hosted.served += 1
            return web.json_response(
                {"error": "RateLimitExceeded"}, status=429,
                headers={"Retry-After": "1", "RateLimit-Remaining": "0"},
            )  # fmt: skip
        data = self.car_bytes(hosted)
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
        if hosted.mode != "cut":
            resp.content_length = len(data)
        else:
            resp.content_length = len(data)  # promise everything, deliver half
            data = data[: len(data) // 2]
        await resp.prepare(request)
        for i in range(0, len(data), self.chunk):
            await resp.write(data[i : i + self.chunk])
            if self.delay_per_chunk:
                await asyncio.sleep(self.delay_per_chunk)
        if hosted.mode == "cut":
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    def _page(
        self, items: list[Any], request: web.Request, size: int
    ) -> tuple[list[Any], str | None]:
        start = int(request.query.get("cursor") or 0)
        limit = min(int(request.query.get("limit") or size), size)
        page = items[start : start + limit]
        nxt = str(start + limit) if start + limit < len(items) else None
        return page, nxt

    async def _list_repos(self, request: web.Request) -> web.Response:
        self.requests[("listRepos", "")] += 1
        items = [
            {"did": d, "head": cid_to_str(h.repo.commit_cid), "rev": h.repo.rev, "active": h.active}
            for d, h in sorted(self.repos.items())
        ]
        page, nxt = self._page(items, request, self.pds_page)
        body: dict[str, Any] = {"repos": page}
        if nxt:
            body["cursor"] = nxt
        return web.json_response(body)

    async def _list_by_collection(self, request: web.Request) -> web.Response:
        collection = request.query.get("collection", "")
        self.requests[("listReposByCollection", collection)] += 1
        items = [
            {"did": d}
            for d, h in sorted(self.repos.items())
            if any(k.startswith(collection + "/") for k in h.repo.records)
        ]
        page, nxt = self._page(items, request, self.relay_page)
        body: dict[str, Any] = {"repos": page}
        if nxt:
            body["cursor"] = nxt
        return web.json_response(body)

    async def _list_records(self, request: web.Request) -> web.Response:
        did = request.query.get("repo", "")
        collection = request.query.get("collection", "")
        self.requests[("listRecords", did)] += 1
        hosted = self.repos.get(did)
        if hosted is None:
            return web.json_response(
                {"error": "InvalidRequest", "message": "Could not find repo"}, status=400
            )
        items = [
            {"uri": f"at://{did}/{k}", "cid": cid_to_str(c), "value": block_to_json(b)}
            for k, (c, b) in sorted(hosted.repo.records.items())
            if k.startswith(collection + "/")
        ]
        page, nxt = self._page(items, request, 100)
        body: dict[str, Any] = {"records": page}
        if nxt:
            body["cursor"] = nxt
        return web.json_response(body)
