"""Publishing one track: tags -> cover upload -> audio upload -> transcode -> the record.

    read_tags(FILE)                        anything not given on the command line
    POST /upload/image (the cover)         --cover, else the art embedded in the file
    POST /upload/audio?title&artist&cover  token: getServiceAuth(aud = media's DID, lxm uploadAudio)
    GET  /jobs/{id}/events                 the transcode (lossless -> MP3) or verify job, to the end
    createRecord fm.plyr.track             audioUrl = our copy's stream URL, checked against lexicons/

The stream URL names the file's sha-256 (media keys name content), which is how an earlier
publication of the same file is recognised (`published_by_sha`): from the PDS itself, so
that neither a lost state file nor a second machine makes a duplicate.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publish.errors import PublishError
from publish.media_client import LXM_UPLOAD_AUDIO, LXM_UPLOAD_IMAGE, MediaService, sha256_in_url
from publish.records import TRACK, Repo, check_record, now_iso
from publish.session import PdsSession
from publish.tags import Cover, FileTags, read_tags

MAX_TAGS = 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while piece := file.read(1024 * 1024):
                digest.update(piece)
    except FileNotFoundError:
        raise PublishError(f"{path}: no such file") from None
    except OSError as exc:
        raise PublishError(f"{path}: cannot read it ({exc.strerror})") from None
    return digest.hexdigest()


def parse_tags(text: str | None) -> list[str]:
    """`--tags "rock, live,rock"` -> ["rock", "live"]."""
    seen: list[str] = []
    for item in (text or "").split(","):
        tag = " ".join(item.split())
        if tag and tag not in seen:
            seen.append(tag)
    if len(seen) > MAX_TAGS:
        raise PublishError(f"at most {MAX_TAGS} tags")
    return seen


@dataclass
class TrackInput:
    """What the musician gave on the command line (None: take it from the file)."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    description: str | None = None
    cover: Path | None = None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Published:
    uri: str
    cid: str
    sha256: str
    title: str
    audio_url: str
    reused: bool = False  # an earlier publication of the same file, not a new record


class Publisher:
    """Publishing for one logged-in account to one media service."""

    def __init__(self, session: PdsSession, media: MediaService, echo: Callable[[str], None]) -> None:
        self.session = session
        self.repo = Repo(session)
        self.media = media
        self.echo = echo
        self._covers: dict[str, tuple[str, str]] = {}  # file sha-256 -> (imageUrl, sha) this run
        self._published: dict[str, tuple[str, str, dict[str, Any]]] | None = None

    def token(self, lxm: str) -> str:
        return self.session.service_auth(self.media.did, lxm)

    # ---- what is already published -----------------------------------------------------------

    def published_by_sha(self) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """The account's track records by the sha-256 their audioUrl names: (uri, cid, value).
        Read from the PDS once per run, then kept up to date by this run's writes."""
        if self._published is None:
            found: dict[str, tuple[str, str, dict[str, Any]]] = {}
            for uri, cid, value in self.repo.records(TRACK):
                sha = sha256_in_url(value.get("audioUrl") if isinstance(value.get("audioUrl"), str) else None)
                if sha is not None:
                    found.setdefault(sha, (uri, cid, value))
            self._published = found
        return self._published

    # ---- uploads -----------------------------------------------------------------------------

    def upload_cover(self, cover: Path | Cover) -> tuple[str, str]:
        """(imageUrl, sha-256) of the cover on our media service; once per image per run."""
        with _CoverFile(cover) as path:
            sha = file_sha256(path)
            if sha not in self._covers:
                uploaded = self.media.upload(path, "image", self.token(LXM_UPLOAD_IMAGE))
                self._covers[sha] = (str(uploaded.get("displayUrl") or uploaded["url"]), str(uploaded["sha256"]))
            return self._covers[sha]

    def upload_audio(self, path: Path, title: str, artist: str, cover_sha: str | None) -> dict[str, Any]:
        """Upload, then wait for the media service's job (transcode or verify) to finish;
        the upload's answer with the finished job's stream URL."""
        uploaded = self.media.upload(
            path, "audio", self.token(LXM_UPLOAD_AUDIO),
            params={"title": title, "artist": artist, "cover": cover_sha or ""},
        )  # fmt: skip
        job_id = uploaded.get("jobId")
        if job_id is not None:
            kind = "transcode" if not uploaded.get("streamReady") else "check"
            state = self.media.follow_job(int(job_id), self.token, f"{kind} {path.name}")
            result = state.get("result") or {}
            if isinstance(result, dict) and result.get("streamUrl"):
                uploaded["streamUrl"] = result["streamUrl"]
        return uploaded

    # ---- one track ---------------------------------------------------------------------------

    def publish_track(
        self, path: Path, given: TrackInput, *, tags: FileTags | None = None, sha: str | None = None,
        again: bool = False,
    ) -> Published:  # fmt: skip
        """Publish `path` as a track record (or find the record that already publishes it,
        unless `again`)."""
        tags = tags if tags is not None else read_tags(path)
        sha = sha or file_sha256(path)
        if not again and sha in self.published_by_sha():
            uri, cid, value = self.published_by_sha()[sha]
            return Published(uri, cid, sha, str(value.get("title") or ""), str(value.get("audioUrl")), reused=True)
        title = given.title or tags.title or path.stem
        artist = given.artist or tags.artist or self.session.handle
        album = given.album or tags.album
        # What the lexicon would refuse is said before anything is uploaded.
        check_record(TRACK, {"$type": TRACK, **track_fields(title, artist, album, given), **DRAFT_AUDIO})
        image_url = cover_sha = None
        cover: Path | Cover | None = given.cover or tags.cover
        if cover is not None:
            image_url, cover_sha = self.upload_cover(cover)
        uploaded = self.upload_audio(path, title, artist, cover_sha)
        audio_url = str(uploaded["streamUrl"])
        if sha256_in_url(audio_url) != sha:
            raise PublishError(f"the media service answered a stream URL that does not name the file: {audio_url}")
        record = track_fields(title, artist, album, given)
        record["fileType"] = Path(audio_url.split("?")[0]).suffix.lstrip(".").lower() or str(uploaded.get("format"))
        record["audioUrl"] = audio_url
        duration = uploaded.get("durationS") or tags.duration_s
        if isinstance(duration, int | float) and duration > 0:
            record["duration"] = round(duration)
        if image_url:
            record["imageUrl"] = image_url
        uri, cid = self.repo.create(TRACK, record, "track")
        self.published_by_sha()[sha] = (uri, cid, {"$type": TRACK, **record})
        return Published(uri, cid, sha, title, audio_url)


DRAFT_AUDIO = {"fileType": "mp3", "audioUrl": "https://media.invalid/audio/00/draft.mp3"}


def track_fields(title: str, artist: str, album: str | None, given: TrackInput) -> dict[str, Any]:
    """The fields of a track record that do not depend on the upload."""
    record: dict[str, Any] = {"title": title, "artist": artist, "createdAt": now_iso()}
    if album:
        record["album"] = album
    if given.description:
        record["description"] = given.description
    if given.tags:
        record["tags"] = given.tags  # not in our lexicon (yet): kept in the record, shown by no view
    return record


class _CoverFile:
    """A path for a cover: the given file, or embedded art written to a temp file for the upload."""

    def __init__(self, cover: Path | Cover) -> None:
        self.cover = cover
        self._tmp: Path | None = None

    def __enter__(self) -> Path:
        if isinstance(self.cover, Path):
            if not self.cover.is_file():
                raise PublishError(f"{self.cover}: no such image file")
            return self.cover
        fd, name = tempfile.mkstemp(prefix="plyr-cover-", suffix=self.cover.suffix)
        with open(fd, "wb") as out:
            out.write(self.cover.data)
        self._tmp = Path(name)
        return self._tmp

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
