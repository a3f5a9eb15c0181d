"""Talking to our media service (media/README.md: HTTP): its DID, uploads, transcode jobs, deletes.

    GET    /.well-known/did.json      the service's DID: the `aud` of the tokens we ask the PDS for
    POST   /upload/audio|image        the file streamed from disk (Content-Length, 1 MiB reads), a bar
    GET    /jobs/{id}/events          Server-Sent Events until `done` / `failed`, a bar; polling
                                      GET /jobs/{id} when the stream breaks
    DELETE /media/{sha256}            our copy of an upload, by its uploader

Every call carries a service-auth token from the artist's PDS (PdsSession.service_auth), bound
to the method: fm.plyr.media.uploadAudio / uploadImage / getJob / deleteMedia.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from tqdm import tqdm

from publish.errors import PublishError, media_failure

LXM_UPLOAD_AUDIO = "fm.plyr.media.uploadAudio"
LXM_UPLOAD_IMAGE = "fm.plyr.media.uploadImage"
LXM_GET_JOB = "fm.plyr.media.getJob"
LXM_DELETE_MEDIA = "fm.plyr.media.deleteMedia"
READ_BYTES = 1024 * 1024
POLL_S = 1.0
JOB_WAIT_S = 3 * 3600.0  # a transcode is limited to 30 min a run, three runs at most
# Keys of stored objects name their content: audio/ab/<sha256>.<ext>, images/ab/<sha256>.<name>;
# the URL is the service's /media/<key>, or the bucket's public URL of the key (S3).
_SHA_IN_URL = re.compile(r"/(?:audio|images)/[0-9a-f]{2}/([0-9a-f]{64})\.[0-9a-z.]+$")

TokenSource = Callable[[str], str]  # lxm -> a fresh service-auth token for the media service


def sha256_in_url(url: str | None) -> str | None:
    """The content hash a URL of a plyr media service names (None: not such a URL)."""
    if not url:
        return None
    found = _SHA_IN_URL.search(url.split("?")[0])
    return found.group(1) if found else None


class _FileBody:
    """A file sent as a request body a piece at a time, advancing a progress bar. httpx reads
    its length from `fileno()`, so the request has a Content-Length (no chunked encoding)."""

    def __init__(self, file: IO[bytes], bar: tqdm[Any]) -> None:
        self._file = file
        self._bar = bar

    def fileno(self) -> int:
        return self._file.fileno()

    def __iter__(self) -> Iterator[bytes]:
        self._file.seek(0)
        while piece := self._file.read(READ_BYTES):
            self._bar.update(len(piece))
            yield piece


class MediaService:
    def __init__(self, url: str, did: str | None = None, *, show_progress: bool = True) -> None:
        self.url = url.rstrip("/")
        self._did = did
        self.show_progress = show_progress
        self.http = httpx.Client(timeout=httpx.Timeout(60.0, read=900.0), follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def _unreachable(self, exc: Exception, doing: str) -> PublishError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return PublishError(f"could not {doing}: the media service at {self.url} is unreachable ({reason})")

    @property
    def did(self) -> str:
        """The service's DID: given (--media-did), else its `/.well-known/did.json`."""
        if self._did is None:
            try:
                resp = self.http.get(f"{self.url}/.well-known/did.json", timeout=30.0)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc, "find the media service's DID") from None
            if resp.status_code != 200:
                raise PublishError(
                    f"the media service at {self.url} serves no DID document (HTTP {resp.status_code}); "
                    "give its DID with --media-did"
                )
            try:
                did = orjson.loads(resp.content).get("id")
            except (orjson.JSONDecodeError, AttributeError):
                did = None
            if not isinstance(did, str) or not did.startswith("did:"):
                raise PublishError(f"the media service at {self.url} serves a DID document without an id")
            self._did = did
        return self._did

    def upload(self, path: Path, kind: str, token: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """POST the file to /upload/{kind}; the service's JSON answer (sha256, url, streamUrl,
        jobId, durationS, ...)."""
        size = path.stat().st_size
        doing = f"upload {path.name}"
        with path.open("rb") as file, tqdm(
            total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"upload {path.name}"[:40],
            disable=not self.show_progress, leave=False,
        ) as bar:  # fmt: skip
            try:
                resp = self.http.post(
                    f"{self.url}/upload/{kind}", params={k: v for k, v in (params or {}).items() if v},
                    content=_FileBody(file, bar),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
                )  # fmt: skip
            except httpx.HTTPError as exc:
                raise self._unreachable(exc, doing) from None
        if resp.status_code not in (200, 201):
            raise media_failure(resp.status_code, resp.content, doing, self.url)
        return dict(orjson.loads(resp.content))

    def follow_job(self, job_id: int, tokens: TokenSource, what: str) -> dict[str, Any]:
        """Wait for the job to end, showing its progress; its final state when `done`,
        PublishError with the job's error when it failed."""
        with tqdm(total=100, unit="%", desc=what[:40], disable=not self.show_progress, leave=False,
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:  # fmt: skip
            state: dict[str, Any] | None = None
            try:
                state = self._job_events(job_id, tokens(LXM_GET_JOB), bar)
            except (httpx.HTTPError, _StreamEnded):
                state = None  # the stream broke: ask for the state instead
            deadline = time.monotonic() + JOB_WAIT_S
            while state is None or state.get("status") not in ("done", "failed"):
                if time.monotonic() > deadline:
                    raise PublishError(f"{what}: job {job_id} did not finish in {JOB_WAIT_S:.0f} s")
                if state is not None:
                    time.sleep(POLL_S)
                state = self._job_state(job_id, tokens(LXM_GET_JOB))
                self._show(bar, state)
        if state.get("status") == "failed":
            raise PublishError(f"{what} failed on the media service: {state.get('error') or 'no reason given'}")
        return state

    def _show(self, bar: tqdm[Any], state: dict[str, Any]) -> None:
        progress = state.get("progress")
        if isinstance(progress, int | float):
            bar.n = round(min(max(progress, 0.0), 1.0) * 100)
        bar.set_postfix_str(str(state.get("phase") or state.get("status") or ""), refresh=True)

    def _job_state(self, job_id: int, token: str) -> dict[str, Any]:
        try:
            resp = self.http.get(f"{self.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, f"follow job {job_id}") from None
        if resp.status_code != 200:
            raise media_failure(resp.status_code, resp.content, f"follow job {job_id}", self.url)
        return dict(orjson.loads(resp.content))

    def _job_events(self, job_id: int, token: str, bar: tqdm[Any]) -> dict[str, Any]:
        """The job's event stream until `done` or `failed`: the last state."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        timeout = httpx.Timeout(30.0, read=60.0)  # the service sends a keep-alive every 15 s
        with self.http.stream("GET", f"{self.url}/jobs/{job_id}/events", headers=headers, timeout=timeout) as resp:
            if resp.status_code != 200:
                resp.read()
                raise media_failure(resp.status_code, resp.content, f"follow job {job_id}", self.url)
            event = None
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    event = line[len("event:"):].strip()
                elif line.startswith("data:") and event is not None:
                    state = dict(orjson.loads(line[len("data:"):].strip()))
                    self._show(bar, state)
                    if event in ("done", "failed"):
                        return state
        raise _StreamEnded()

    def delete(self, sha256: str, token: str, deleted_uris: list[str]) -> tuple[int, str]:
        """DELETE /media/{sha256}: (status, message) — 200 deleted, 404 unknown, 403 not the
        uploader's, 409 still used by a track."""
        try:
            resp = self.http.delete(
                f"{self.url}/media/{sha256}", params=[("deleted", uri) for uri in deleted_uris],
                headers={"Authorization": f"Bearer {token}"}, timeout=60.0,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, "delete our copy of the media") from None
        if resp.status_code in (200, 403, 404, 409):
            try:
                body = orjson.loads(resp.content)
            except orjson.JSONDecodeError:
                body = {}
            return resp.status_code, str(body.get("message") or "")
        raise media_failure(resp.status_code, resp.content, "delete our copy of the media", self.url)


class _StreamEnded(Exception):
    """The event stream closed before the job ended."""
