"""An external recognition service as a second engine of copyright scans: one small interface
(`Recognizer`) and an AuDD-compatible HTTP client (`AuddClient`), off unless
PLYR_MEDIA_RECOGNITION_URL is set (media/settings.py); never required.

AuDD's API (docs.audd.io): a POST (multipart/form-data) to the endpoint with `api_token`, the
audio as `file` (or a `url` it fetches) and optionally `return` (extra metadata: apple_music,
spotify, ...). The answer is JSON: `{"status": "success", "result": null}` (not recognized),
`{"status": "success", "result": {"artist", "title", "album", "release_date", "label",
"timecode", "song_link", ...}}`, or `{"status": "error", "error": {"error_code",
"error_message"}}`. The standard endpoint recognizes a clip of about 12 s; the enterprise
endpoint takes whole files and answers `result: [{"offset", "songs": [...]}, ...]`, which is
read too. We send a clip of PLYR_MEDIA_RECOGNITION_CLIP_S seconds from a third of the way in
(cut by ffmpeg to a small MP3), or the whole file when that is 0.

The scan (scan.py) records what the service says as a row of its own (`external`, `engine`
naming the service): `flagged` with a `recognition` match, `clear`, or `error` with the
service's error code and message. Such a row never clears a track and its error never turns
our own engine's result into an error (copyright_track_status, migrations/0045).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from media.copyright import store
from media.copyright.matches import carry_decisions
from media.errors import exhausted_errno
from media.ffmpeg import input_args
from media.ingest import MediaContext
from media.receive import temp_path
from media.settings import MediaSettings

log = logging.getLogger("plyr.media.copyright")

MAX_ANSWER_BYTES = 1 << 20


class RecognitionError(RuntimeError):
    """The service failed or refused (its error code and message), or could not be reached."""


@dataclass(frozen=True)
class Recognized:
    """A recording the service recognized, and where: `offset_s` into what we sent (enterprise
    answers; 0 for a clip), `timecode_s` into the recording."""

    artist: str
    title: str
    album: str | None = None
    release_date: str | None = None
    label: str | None = None
    isrc: str | None = None
    song_link: str | None = None
    timecode_s: float = 0.0
    offset_s: float = 0.0
    score: float | None = None  # 0-1 when the service gives one

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("artist", self.artist), ("title", self.title), ("album", self.album),
                                  ("release_date", self.release_date), ("label", self.label), ("isrc", self.isrc),
                                  ("song_link", self.song_link)) if v}  # fmt: skip


class Recognizer(Protocol):
    """What a scan asks a recognition service: what is in this audio file (None: nothing)."""

    name: str  # the scan row's `engine`
    clip_s: float  # seconds of the audio to send (0: all)

    async def recognize(self, path: Path) -> list[Recognized]: ...


def _seconds(value: Any) -> float:
    """AuDD's "01:02" / "1:02:03" timecodes (or a number) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\d+(:\d{1,2}){0,2}(\.\d+)?", value.strip()):
        total = 0.0
        for part in value.strip().split(":"):
            total = total * 60 + float(part)
        return total
    return 0.0


def _song(data: Any, offset: Any = 0) -> Recognized | None:
    if not isinstance(data, dict) or not data.get("artist") and not data.get("title"):
        return None

    def text(key: str) -> str | None:
        value = data.get(key)
        return str(value)[:1000] if value not in (None, "") else None

    score = data.get("score")
    return Recognized(
        artist=text("artist") or "", title=text("title") or "", album=text("album"),
        release_date=text("release_date"), label=text("label"), isrc=text("isrc"), song_link=text("song_link"),
        timecode_s=_seconds(data.get("timecode")), offset_s=_seconds(offset),
        score=float(score) / 100 if isinstance(score, int | float) else None,
    )  # fmt: skip


def parse_answer(body: Any) -> list[Recognized]:
    """The recordings in an AuDD answer (standard or enterprise); RecognitionError for an error
    answer or one that is not AuDD's shape."""
    if not isinstance(body, dict):
        raise RecognitionError("the answer is not a JSON object")
    if body.get("status") == "error":
        error = body["error"] if isinstance(body.get("error"), dict) else {}
        raise RecognitionError(f"error {error.get('error_code', '?')}: {str(error.get('error_message', ''))[:300]}")
    if body.get("status") != "success":
        raise RecognitionError(f"unexpected status {str(body.get('status'))[:50]!r}")
    result = body.get("result")
    if result is None:
        return []
    if isinstance(result, dict):
        song = _song(result)
        return [song] if song else []
    if isinstance(result, list):  # enterprise: [{"offset": "00:12", "songs": [{...}]}]
        found = []
        for group in result:
            if isinstance(group, dict):
                for data in group.get("songs") or []:
                    if (song := _song(data, group.get("offset", 0))) is not None:
                        found.append(song)
        return found
    raise RecognitionError("the result is neither a song nor a list of them")


class AuddClient:
    """An AuDD-compatible recognition service at `url` (see the module doc)."""

    def __init__(self, url: str, api_token: str, *, clip_s: float = 12.0, timeout_s: float = 60.0,
                 metadata: str = "") -> None:  # fmt: skip
        self.url = url
        self.api_token = api_token
        self.clip_s = clip_s
        self.timeout_s = timeout_s
        self.metadata = metadata  # AuDD's `return`
        self.name = f"audd:{urlsplit(url).netloc or url}"

    async def recognize(self, path: Path) -> list[Recognized]:
        form = aiohttp.FormData()
        form.add_field("api_token", self.api_token)
        if self.metadata:
            form.add_field("return", self.metadata)
        data = await asyncio.to_thread(path.read_bytes)
        form.add_field("file", data, filename=path.name, content_type="application/octet-stream")
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(self.url, data=form) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if resp.status != 200:
                    raise RecognitionError(f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RecognitionError(f"cannot reach it: {type(exc).__name__} {exc}".strip()) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise RecognitionError("the answer is too big")
        try:
            import orjson

            body = orjson.loads(raw)
        except ValueError:
            raise RecognitionError("the answer is not JSON") from None
        return parse_answer(body)


def recognizer_from_settings(settings: MediaSettings) -> Recognizer | None:
    if not settings.recognition_url or not settings.recognition_api_key:
        return None
    return AuddClient(settings.recognition_url, settings.recognition_api_key,
                      clip_s=settings.recognition_clip_s, timeout_s=settings.recognition_timeout_s)  # fmt: skip


async def clip_of(ffmpeg: str, path: Path, duration_s: float, clip_s: float, out: Path) -> tuple[Path, float]:
    """A `clip_s` MP3 of `path` from a third of the way in, written to `out` (the whole file
    when clip_s is 0 or the audio is not longer): (the file to send, where it starts)."""
    if clip_s <= 0 or duration_s <= clip_s:
        return path, 0.0
    start = round(max(0.0, min(duration_s / 3, duration_s - clip_s)), 3)
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-threads", "1", "-ss", f"{start:g}",
        *input_args(str(path), None), "-t", f"{clip_s:g}", "-map", "0:a:0", "-ac", "2", "-ar", "44100",
        "-c:a", "libmp3lame", "-b:a", "128k", str(out),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RecognitionError(f"cannot cut a clip (ffmpeg exit {proc.returncode}): {err.decode(errors='replace')[-200:]}")
    return out, start


@dataclass(frozen=True)
class ExternalOutcome:
    """The row an external recognition service's answer was recorded as."""

    scan_id: int
    engine: str
    status: str  # clear, flagged or error
    error: str | None = None


def recognition_match(found: Recognized, *, clip_start_s: float, length_s: float) -> dict[str, Any]:
    return {
        "reference_id": None,
        "track_uri": None,
        "audio": None,
        "fingerprint_id": None,
        "offset_s": round(clip_start_s + found.offset_s, 3),
        "reference_offset_s": round(found.timecode_s, 3),
        "length_s": round(length_s, 3),
        "similarity": round(found.score if found.score is not None else 1.0, 4),
        "recognition": found.to_json(),
    }


async def recognize_audio(
    media: MediaContext, recognizer: Recognizer, audio: store.Audio, path: Path, *, track_uri: str | None,
    duration_s: float | None, job_id: int | None, attempt: int, retry_in_s: float | None,
) -> ExternalOutcome:  # fmt: skip
    """Ask the service about the audio at `path` and write its row: `flagged` with a
    `recognition` match per recording, `clear`, or `error` (retried as the job's attempt)."""
    started = datetime.now(UTC)
    duration = duration_s or audio.duration_s or 0.0
    status, matches, error = "clear", [], None
    try:
        async with temp_path(media.settings.tmp_dir, ".mp3") as out:
            clip, start = await clip_of(media.ffmpeg, path, duration, recognizer.clip_s, out)
            found = await recognizer.recognize(clip)
        length = min(recognizer.clip_s, duration) if recognizer.clip_s > 0 else duration
        matches = [recognition_match(f, clip_start_s=start, length_s=length) for f in found]
        status = "flagged" if matches else "clear"
    except (asyncpg.PostgresError, asyncpg.InterfaceError):
        raise
    except Exception as exc:
        if exhausted_errno(exc) is not None:
            raise
        status, error = "error", f"{recognizer.name}: {str(exc) or type(exc).__name__}"
    async with media.pool.acquire() as conn:
        if matches:
            await carry_decisions(conn, sha256=audio.sha256, tracks=await store.tracks_of(conn, audio.sha256),
                                  matches=matches)  # fmt: skip
        scan_id = await store.record_scan(
            conn, audio=audio, sha256=audio.sha256, track_uri=track_uri, job_id=job_id, attempt=attempt,
            status=status, started_at=started, matches=matches, engine=recognizer.name, duration_s=duration_s,
            error=error, retry_in_s=retry_in_s if error else None, external=True,
        )  # fmt: skip
    log.info("copyright recognition", extra={"sha256": audio.sha256, "scan": scan_id, "status": status,
                                             "engine": recognizer.name, "error": error})  # fmt: skip
    return ExternalOutcome(scan_id, recognizer.name, status, error)
