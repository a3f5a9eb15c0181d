"""Unit tests of the orphan sweep's parts that need no database: settings, the local listing
(pages, partial writes, prefixes), reading a token's method binding."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import orjson
import pytest

from core.errors import ConfigError
from media.auth import _claimed_lxm
from media.settings import MediaSettings
from media.storage import LocalStorage, StorageError, UnfinishedWrite


def test_grace_and_interval_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLYR_MEDIA_ORPHAN_GRACE_S", "PLYR_MEDIA_SWEEP_INTERVAL_S", "PLYR_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    settings = MediaSettings.from_env()
    assert (settings.orphan_grace_s, settings.sweep_interval_s) == (3600.0, 21600.0)
    monkeypatch.setenv("PLYR_MEDIA_ORPHAN_GRACE_S", "600")
    monkeypatch.setenv("PLYR_MEDIA_SWEEP_INTERVAL_S", "0")
    settings = MediaSettings.from_env()
    assert (settings.orphan_grace_s, settings.sweep_interval_s) == (600.0, 0.0)
    for bad in ("30", "nan", "-1", "soon"):
        monkeypatch.setenv("PLYR_MEDIA_ORPHAN_GRACE_S", bad)
        with pytest.raises(ConfigError, match="PLYR_MEDIA_ORPHAN_GRACE_S"):
            MediaSettings.from_env()
    monkeypatch.setenv("PLYR_MEDIA_ORPHAN_GRACE_S", "3600")
    monkeypatch.setenv("PLYR_MEDIA_SWEEP_INTERVAL_S", "-5")
    with pytest.raises(ConfigError, match="PLYR_MEDIA_SWEEP_INTERVAL_S"):
        MediaSettings.from_env()


def _file(root: Path, key: str, data: bytes = b"x") -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_local_listing_pages_prefixes_and_partials(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://m.test")
    keys = [f"audio/{i:02x}/{i:064x}.mp3" for i in range(7)] + ["audio/deep/er/x.wav"]
    for key in keys:
        _file(tmp_path, key, b"abc")
    _file(tmp_path, "images/aa/a.png")
    partial = _file(tmp_path, f"audio/01/.song.mp3.{uuid.uuid4().hex}.partial")
    _file(tmp_path, "audio/01/Not A Key.txt")  # no valid key: neither an object nor a partial write
    os.utime(partial, (1000.0, 1000.0))

    pages = [page async for page in storage.list_objects("audio/", page_size=3)]
    assert [len(p) for p in pages] == [3, 3, 2]
    listed = [obj for page in pages for obj in page]
    assert sorted(obj.key for obj in listed) == sorted(keys)
    assert all(obj.size == 3 and obj.modified > 1000.0 for obj in listed)
    assert [page async for page in storage.list_objects("exports/")] == []  # no such folder yet

    writes = [w for page in [p async for p in storage.list_unfinished_writes("audio/")] for w in page]
    assert writes == [UnfinishedWrite(key="audio/01/song.mp3", started=1000.0, handle=f"audio/01/{partial.name}")]
    await storage.discard_unfinished_write(writes[0])
    assert not partial.exists()
    await storage.discard_unfinished_write(writes[0])  # gone already: fine
    with pytest.raises(StorageError):  # only partial files can be discarded this way
        await storage.discard_unfinished_write(UnfinishedWrite(key="x", started=0, handle="audio/00/" + keys[0]))


async def test_deleting_an_export_removes_its_folder_not_content_folders(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://m.test")
    _file(tmp_path, "exports/1-ab/one.zip")
    _file(tmp_path, "audio/ab/x.mp3")
    await storage.delete("exports/1-ab/one.zip")
    await storage.delete("audio/ab/x.mp3")
    assert not (tmp_path / "exports/1-ab").exists()
    assert (tmp_path / "audio/ab").is_dir()


def _jwt(payload: object) -> str:
    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    return f"{part(b'{}')}.{part(orjson.dumps(payload))}.sig"


def test_claimed_lxm() -> None:
    assert _claimed_lxm(_jwt({"lxm": "fm.plyr.media.getJob"})) == "fm.plyr.media.getJob"
    assert _claimed_lxm(_jwt({"iss": "did:plc:x"})) is None
    assert _claimed_lxm(_jwt({"lxm": 5})) is None
    assert _claimed_lxm(_jwt(["not", "an", "object"])) is None
    assert _claimed_lxm("a.%%%.c") is None
    assert _claimed_lxm("nodots") is None


def test_temp_files_left_by_a_crash_are_removed_after_the_grace(tmp_path) -> None:
    import time

    from media.sweep import sweep_temp_files

    now = time.time()
    old, young, foreign = tmp_path / "plyr-a.part", tmp_path / "plyr-b.part", tmp_path / "x.part"
    for path in (old, young, foreign):
        path.write_bytes(b"x")
    (tmp_path / "plyr-dir").mkdir()
    for path in (old, foreign, tmp_path / "plyr-dir"):
        os.utime(path, (now - 7200, now - 7200))
    assert sweep_temp_files(tmp_path, grace_s=3600, now=now) == 1
    assert not old.exists() and young.exists() and foreign.exists()
    assert (tmp_path / "plyr-dir").is_dir()
    assert sweep_temp_files(tmp_path / "missing", grace_s=3600) == 0
