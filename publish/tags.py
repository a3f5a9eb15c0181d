"""What an audio file says about itself, read with mutagen: title, artist, album, track and disc
numbers, duration, and the embedded cover art.

`plyr publish` fills every field the musician did not give on the command line from these.
Formats: whatever mutagen reads (MP3, FLAC, Ogg Vorbis/Opus/FLAC, MP4/M4A, WAV and AIFF with an
ID3 chunk, ...). Text comes from mutagen's "easy" view where the format has one, else from the
ID3 frames directly (WAV, AIFF); the cover from ID3 APIC frames, FLAC pictures, MP4 `covr` or
Vorbis-comment `METADATA_BLOCK_PICTURE`, the front cover preferred.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publish.errors import PublishError

AUDIO_SUFFIXES = frozenset({
    ".mp3", ".flac", ".wav", ".wave", ".aif", ".aiff", ".aifc", ".m4a", ".mp4", ".aac",
    ".ogg", ".oga", ".opus", ".webm", ".mka",
})  # fmt: skip
FRONT_COVER = 3  # the ID3/FLAC picture type of a front cover


@dataclass(frozen=True)
class Cover:
    data: bytes
    mime_type: str

    @property
    def suffix(self) -> str:
        return {"image/png": ".png", "image/webp": ".webp", "image/gif": ".gif"}.get(self.mime_type, ".jpg")


@dataclass(frozen=True)
class FileTags:
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    track_number: int | None = None
    disc_number: int | None = None
    duration_s: float | None = None
    cover: Cover | None = field(default=None, repr=False)


def _first(value: Any) -> str | None:
    """The first non-empty text of a tag value (a list, an ID3 frame, a string)."""
    if value is None:
        return None
    items = getattr(value, "text", value)
    if isinstance(items, str | bytes):
        items = [items]
    for item in items if isinstance(items, list | tuple) else [items]:
        text = (item.decode(errors="replace") if isinstance(item, bytes) else str(item)).replace("\x00", "").strip()
        if text:
            return text
    return None


def _number(value: Any) -> int | None:
    """3 of "3", "3/12", ("3", 12) or (3, 12)."""
    if isinstance(value, list) and value and isinstance(value[0], tuple):  # MP4 trkn/disk
        value = value[0]
    if isinstance(value, tuple):
        return int(value[0]) if value and isinstance(value[0], int) and value[0] > 0 else None
    text = _first(value)
    if text is None:
        return None
    head = text.split("/")[0].strip()
    return int(head) if head.isdigit() and int(head) > 0 else None


def _mime_of(data: bytes, declared: str | None) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return declared or "image/jpeg"


def _pick(pictures: list[tuple[int, bytes, str | None]]) -> Cover | None:
    """The front cover if there is one, else the first picture."""
    usable = [p for p in pictures if p[1]]
    if not usable:
        return None
    kind, data, mime = next((p for p in usable if p[0] == FRONT_COVER), usable[0])
    return Cover(data, _mime_of(data, mime))


def _cover(audio: Any) -> Cover | None:
    tags = getattr(audio, "tags", None)
    pictures: list[tuple[int, bytes, str | None]] = []
    for picture in getattr(audio, "pictures", None) or []:  # FLAC
        pictures.append((picture.type, picture.data, picture.mime))
    if tags is not None:
        getall = getattr(tags, "getall", None)
        if callable(getall):  # ID3 (MP3, WAV, AIFF)
            pictures += [(frame.type, frame.data, frame.mime) for frame in getall("APIC")]
        try:
            covr = tags.get("covr") if hasattr(tags, "get") else None  # MP4
        except (KeyError, ValueError):
            covr = None
        for item in covr or []:
            pictures.append((FRONT_COVER, bytes(item), None))
        try:
            blocks = tags.get("metadata_block_picture") if hasattr(tags, "get") else None  # Ogg
        except (KeyError, ValueError):
            blocks = None
        if blocks:
            from mutagen.flac import Picture

            for text in blocks:
                try:
                    picture = Picture(base64.b64decode(text))
                except (binascii.Error, ValueError, TypeError):
                    continue
                pictures.append((picture.type, picture.data, picture.mime))
    return _pick(pictures)


_ID3_TEXT = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "tracknumber": "TRCK", "discnumber": "TPOS"}


def _text_tags(path: Path, audio: Any) -> dict[str, Any]:
    """title/artist/album/tracknumber/discnumber from the easy view, else the ID3 frames."""
    import mutagen

    out: dict[str, Any] = {}
    tags = getattr(audio, "tags", None)
    if tags is not None and callable(getattr(tags, "getall", None)):  # ID3 in any container
        for name, frame in _ID3_TEXT.items():
            frames = tags.getall(frame)
            if frames:
                out[name] = frames[0].text
        return out
    try:
        easy = mutagen.File(path, easy=True)
    except mutagen.MutagenError:
        easy = None
    source = easy.tags if easy is not None and easy.tags is not None else tags
    if source is None:
        return out
    for name in ("title", "artist", "album", "tracknumber", "discnumber"):
        try:
            value = source.get(name)
        except (KeyError, ValueError):
            value = None
        if value is not None:
            out[name] = value
    if isinstance(source, dict) or hasattr(source, "get"):  # MP4 without the easy view
        for name, key in (("title", "\xa9nam"), ("artist", "\xa9ART"), ("album", "\xa9alb"),
                          ("tracknumber", "trkn"), ("discnumber", "disk")):  # fmt: skip
            if name not in out:
                try:
                    value = source.get(key)
                except (KeyError, ValueError):
                    value = None
                if value is not None:
                    out[name] = value
    return out


def read_tags(path: Path) -> FileTags:
    """The file's tags; an empty FileTags when the file has none. PublishError when it is not
    an audio file mutagen can read (the media service has the last word on what it accepts)."""
    import mutagen

    if not path.is_file():
        raise PublishError(f"{path}: no such file")
    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError) as exc:
        raise PublishError(f"{path}: cannot read its tags ({exc})") from None
    if audio is None:
        raise PublishError(f"{path}: not an audio file this tool can read")
    text = _text_tags(path, audio)
    length = getattr(getattr(audio, "info", None), "length", None)
    return FileTags(
        title=_first(text.get("title")),
        artist=_first(text.get("artist")),
        album=_first(text.get("album")),
        track_number=_number(text.get("tracknumber")),
        disc_number=_number(text.get("discnumber")),
        duration_s=float(length) if isinstance(length, int | float) and length > 0 else None,
        cover=_cover(audio),
    )


def audio_files(folder: Path) -> list[Path]:
    """The audio files directly in `folder` (by suffix; hidden files left out), by name."""
    if not folder.is_dir():
        raise PublishError(f"{folder}: not a folder")
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def album_order(files: list[tuple[Path, FileTags]]) -> list[tuple[Path, FileTags]]:
    """Play order: by (disc, track number) where the tags have a track number, the others after
    them by file name (a file name sorts numbered files too: "01 ...", "02 ...")."""
    def key(item: tuple[Path, FileTags]) -> tuple[int, int, int, str]:
        path, tags = item
        if tags.track_number is not None:
            return (0, tags.disc_number or 1, tags.track_number, path.name)
        return (1, 0, 0, path.name)

    return sorted(files, key=key)
