"""Tags of real audio files: made by ffmpeg (`-metadata`), covers and numbers written by mutagen,
read back by publish/tags.py in every container `plyr publish` meets."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, TRCK
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggvorbis import OggVorbis
from PIL import Image

from media.ffmpeg import ffmpeg_exe
from publish.errors import PublishError
from publish.tags import FileTags, album_order, audio_files, read_tags

TAGS = {"title": "Blue Hour", "artist": "Ann Example", "album": "Evenings", "track": "2/9"}


def make(path: Path, tags: dict[str, str] | None = None, seconds: float = 1.5, extra: tuple[str, ...] = ()) -> Path:
    meta = [a for k, v in (tags or {}).items() for a in ("-metadata", f"{k}={v}")]
    subprocess.run(
        [ffmpeg_exe(None), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100", "-ac", "2", *extra, *meta, str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def png(color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, "PNG")
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize("suffix", [".flac", ".mp3", ".m4a", ".ogg", ".opus"])
def test_text_tags_and_duration(tmp_path: Path, suffix: str) -> None:
    extra = ("-c:a", "libopus") if suffix == ".opus" else ()
    tags = read_tags(make(tmp_path / f"t{suffix}", TAGS, extra=extra))
    assert (tags.title, tags.artist, tags.album, tags.track_number) == ("Blue Hour", "Ann Example", "Evenings", 2)
    assert tags.duration_s is not None and abs(tags.duration_s - 1.5) < 0.1
    assert tags.cover is None


def test_untagged_file_gives_nothing_but_duration(tmp_path: Path) -> None:
    tags = read_tags(make(tmp_path / "plain.wav"))
    assert (tags.title, tags.artist, tags.album, tags.track_number, tags.cover) == (None,) * 5
    assert tags.duration_s is not None and abs(tags.duration_s - 1.5) < 0.01


def test_wav_with_an_id3_chunk(tmp_path: Path) -> None:
    from mutagen.wave import WAVE

    path = make(tmp_path / "tagged.wav")
    wav = WAVE(path)
    wav.add_tags()
    from mutagen.id3 import TALB, TIT2, TPE1

    wav.tags.add(TIT2(encoding=3, text="Wave Title"))
    wav.tags.add(TPE1(encoding=3, text="Wave Artist"))
    wav.tags.add(TALB(encoding=3, text="Wave Album"))
    wav.tags.add(TRCK(encoding=3, text="7/10"))
    wav.tags.add(APIC(encoding=3, mime="image/png", type=3, desc="front", data=png()))
    wav.save()
    tags = read_tags(path)
    assert (tags.title, tags.artist, tags.album, tags.track_number) == ("Wave Title", "Wave Artist", "Wave Album", 7)
    assert tags.cover is not None and tags.cover.mime_type == "image/png" and tags.cover.data == png()


def test_flac_pictures_prefer_the_front_cover(tmp_path: Path) -> None:
    path = make(tmp_path / "c.flac", TAGS)
    audio = FLAC(path)
    for kind, data in ((4, png((255, 0, 0))), (3, png((0, 0, 255)))):  # back cover first, then front
        picture = Picture()
        picture.type, picture.mime, picture.data = kind, "image/png", data
        audio.add_picture(picture)
    audio.save()
    cover = read_tags(path).cover
    assert cover is not None and cover.data == png((0, 0, 255)) and cover.suffix == ".png"


def test_mp3_apic_and_mime_from_the_bytes(tmp_path: Path) -> None:
    path = make(tmp_path / "c.mp3", TAGS)
    id3 = ID3(path)
    id3.add(APIC(encoding=3, mime="image/png", type=3, desc="", data=jpeg()))  # the declared type is wrong
    id3.save()
    cover = read_tags(path).cover
    assert cover is not None and cover.mime_type == "image/jpeg" and cover.suffix == ".jpg"


def test_m4a_covr_and_track_number(tmp_path: Path) -> None:
    path = make(tmp_path / "c.m4a", {"title": "Box"})
    mp4 = MP4(path)
    mp4["covr"] = [MP4Cover(png(), imageformat=MP4Cover.FORMAT_PNG)]
    mp4["trkn"] = [(5, 12)]
    mp4["disk"] = [(2, 2)]
    mp4.save()
    tags = read_tags(path)
    assert (tags.title, tags.track_number, tags.disc_number) == ("Box", 5, 2)
    assert tags.cover is not None and tags.cover.data == png()


def test_ogg_metadata_block_picture(tmp_path: Path) -> None:
    import base64

    path = make(tmp_path / "c.ogg", {"title": "Vorbis"})
    ogg = OggVorbis(path)
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/png", png()
    ogg["metadata_block_picture"] = [base64.b64encode(picture.write()).decode()]
    ogg.save()
    cover = read_tags(path).cover
    assert cover is not None and cover.data == png()


def test_not_audio_is_one_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all, just words " * 20)
    with pytest.raises(PublishError, match="notes.mp3"):
        read_tags(text)
    with pytest.raises(PublishError, match="no such file"):
        read_tags(tmp_path / "missing.flac")


def test_folder_files_and_album_order(tmp_path: Path) -> None:
    for name in ("b.flac", "a.mp3", "c.wav", ".hidden.mp3", "cover.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in audio_files(tmp_path)] == ["a.mp3", "b.flac", "c.wav"]
    files = [
        (Path("z.flac"), FileTags(track_number=1)),
        (Path("b.flac"), FileTags()),
        (Path("y.flac"), FileTags(track_number=1, disc_number=2)),
        (Path("a.flac"), FileTags()),
        (Path("x.flac"), FileTags(track_number=2)),
    ]
    assert [p.name for p, _ in album_order(files)] == ["z.flac", "x.flac", "y.flac", "a.flac", "b.flac"]
    with pytest.raises(PublishError, match="not a folder"):
        audio_files(tmp_path / "a.mp3")
