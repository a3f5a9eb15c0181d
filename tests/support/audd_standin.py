"""A local stand-in for AuDD's recognition API (docs.audd.io), for tests: aiohttp on loopback.

It speaks the documented standard endpoint: a POST (multipart/form-data or urlencoded, or the
same as query parameters) with `api_token`, the audio as `file` or a `url`, optionally `return`;
answers `{"status": "success", "result": null | {artist, title, album, release_date, label,
timecode, song_link, ...}}` or `{"status": "error", "error": {"error_code", "error_message"}}`:
900 for a wrong token, 901 without one, 700 without a file or URL. What it recognizes is
scripted: `answers` is consumed one per request (a song dict, None for no match, an `Error`, or
an `HttpStatus` for an outage); with none left it recognizes nothing. Every request is kept in
`requests` (fields and the file's bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class HttpStatus:
    status: int


@dataclass
class Received:
    fields: dict[str, str]
    file: bytes | None
    filename: str | None


@dataclass
class AuddStandIn:
    api_token: str = "standin-token"
    answers: list[Any] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fields = {k: v for k, v in request.query.items()}
        data: bytes | None = None
        filename = None
        if request.method == "POST":
            if request.content_type.startswith("multipart/"):
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader) or part.name is None:
                        continue
                    if part.name == "file":
                        data, filename = bytes(await part.read()), part.filename
                    else:
                        fields[part.name] = await part.text()
            else:
                fields.update({k: str(v) for k, v in (await request.post()).items()})
        self.requests.append(Received(fields, data, filename))
        if "api_token" not in fields:
            return self._error(901, "No api_token passed, and the limit was reached. Get an api_token.")
        if fields["api_token"] != self.api_token:
            return self._error(900, "Wrong API token (check the api_token parameter).")
        if data is None and not fields.get("url"):
            return self._error(700, "You haven't sent a file for recognition (or we didn't receive it).")
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, HttpStatus):
            return web.Response(status=answer.status, text="unavailable")
        if isinstance(answer, Error):
            return self._error(answer.code, answer.message)
        return web.json_response({"status": "success", "result": answer})

    @staticmethod
    def _error(code: int, message: str) -> web.Response:
        return web.json_response({"status": "error", "error": {"error_code": code, "error_message": message},
                                  "request_params": {}})  # fmt: skip

    async def __aenter__(self) -> AuddStandIn:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def song(artist: str, title: str, **more: Any) -> dict[str, Any]:
    """A standard endpoint's `result`, as AuDD documents it."""
    return {"artist": artist, "title": title, "album": more.pop("album", title), "release_date": "2019-05-17",
            "label": more.pop("label", "A Label"), "timecode": more.pop("timecode", "00:56"),
            "song_link": "https://lis.tn/standin", **more}  # fmt: skip
