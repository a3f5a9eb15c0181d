"""`plyr publish folder DIR`: an album — every audio file in the folder as a track, in play
order, then one `fm.plyr.list` (listType album) naming them in that order.

Resumable without duplicates. Each finished track is written to a state file in the folder
(`.plyr-publish.json`: per account, file sha-256 -> record URI and CID, and the list) at once,
replaced whole. A run skips what the state file names while the record still exists, and
before publishing a file looks at the account's own track records on the PDS for one whose
audioUrl names the same sha-256 (publish/publisher.py): a run killed between writing a record
and the state file, a deleted state file, or another machine do not make a second record. The
list is written last; a later run finds it (state file, else the account's album list of that
name) and updates it in place when the tracks changed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from publish.errors import PublishError
from publish.publisher import Published, Publisher, TrackInput, file_sha256
from publish.records import LIST, RecordGone, check_record, now_iso
from publish.store import replace_file
from publish.tags import FileTags, album_order, audio_files, read_tags

STATE_FILE = ".plyr-publish.json"
COVER_NAMES = ("cover", "folder", "front", "album")
COVER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_LIST_ITEMS = 500


class FolderState:
    """The state file of one folder, for one account."""

    def __init__(self, folder: Path, did: str) -> None:
        self.path = folder / STATE_FILE
        self.did = did
        self.data: dict[str, Any] = {"version": 1, "accounts": {}}
        try:
            loaded = orjson.loads(self.path.read_bytes())
            if isinstance(loaded, dict) and isinstance(loaded.get("accounts"), dict):
                self.data = loaded
        except FileNotFoundError:
            pass
        except (orjson.JSONDecodeError, OSError):
            pass  # damaged: the PDS still says what is published (it is rewritten below)
        mine = self.data["accounts"].setdefault(did, {})
        self.tracks: dict[str, dict[str, str]] = mine.setdefault("tracks", {})
        self.mine = mine

    @property
    def list_ref(self) -> dict[str, str] | None:
        ref = self.mine.get("list")
        return ref if isinstance(ref, dict) and "uri" in ref else None

    def set_list(self, uri: str, cid: str) -> None:
        self.mine["list"] = {"uri": uri, "cid": cid}
        self.save()

    def set_track(self, sha: str, file: str, uri: str, cid: str) -> None:
        self.tracks[sha] = {"file": file, "uri": uri, "cid": cid}
        self.save()

    def save(self) -> None:
        """Replace the file whole (a temp file in the folder, renamed over it)."""
        replace_file(self.path, orjson.dumps(self.data, option=orjson.OPT_INDENT_2))


def folder_cover(folder: Path) -> Path | None:
    """cover.jpg, folder.png, front.jpg, ... in the folder (any case), if there is one."""
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for stem in COVER_NAMES:
        for suffix in COVER_SUFFIXES:
            if (found := by_name.get(stem + suffix)) is not None:
                return found
    return None


def album_name(folder: Path, files: list[tuple[Path, FileTags]]) -> str:
    """The album tag most of the files carry, else the folder's name."""
    names = collections.Counter(tags.album for _, tags in files if tags.album)
    return names.most_common(1)[0][0] if names else folder.resolve().name


@dataclass
class AlbumResult:
    name: str
    tracks: list[Published]
    list_uri: str
    list_cid: str
    list_changed: bool


def publish_folder(
    pub: Publisher, folder: Path, given: TrackInput, echo: Callable[[str], None], *, list_name: str | None = None
) -> AlbumResult:
    files = audio_files(folder)
    if not files:
        raise PublishError(f"{folder}: no audio files in it")
    if len(files) > MAX_LIST_ITEMS:
        raise PublishError(f"{folder}: {len(files)} audio files; an album list holds at most {MAX_LIST_ITEMS}")
    ordered = album_order([(path, read_tags(path)) for path in files])
    name = list_name or given.album or album_name(folder, ordered)
    # The album list is written last: what its lexicon refuses (a name over 64 graphemes) is
    # said before the first upload, not after the last one.
    check_record(LIST, {"$type": LIST, **album_list(name, [])})
    cover = given.cover or folder_cover(folder)
    track_input = TrackInput(
        title=None, artist=given.artist, album=name, description=given.description, cover=cover, tags=given.tags
    )
    state = FolderState(folder, pub.session.did)
    published: list[Published] = []
    for number, (path, tags) in enumerate(ordered, 1):
        sha = file_sha256(path)
        label = f"[{number}/{len(ordered)}] {path.name}"
        done = _still_published(pub, state, sha)
        if done is None:
            done = pub.publish_track(path, track_input, tags=tags, sha=sha)
        state.set_track(sha, path.name, done.uri, done.cid)
        echo(f"{label}: {'already published' if done.reused else 'published'} {done.uri}")
        published.append(done)
    uri, cid, changed = _write_list(pub, state, name, published)
    echo(f"album {name!r}: {len(published)} tracks, list {'written' if changed else 'up to date'} {uri}")
    return AlbumResult(name, published, uri, cid, changed)


def _still_published(pub: Publisher, state: FolderState, sha: str) -> Published | None:
    """The record publishing this file, if the state file or the PDS knows one that exists."""
    known = pub.published_by_sha().get(sha)
    if known is not None:
        uri, cid, value = known
        return Published(uri, cid, sha, str(value.get("title") or ""), str(value.get("audioUrl")), reused=True)
    # Not among the account's records: a state entry for it is stale (the record was deleted).
    state.tracks.pop(sha, None)
    return None


def album_list(name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "listType": "album", "items": items, "createdAt": now_iso()}


def _write_list(pub: Publisher, state: FolderState, name: str, tracks: list[Published]) -> tuple[str, str, bool]:
    items = [{"subject": {"uri": t.uri, "cid": t.cid}} for t in tracks]
    existing = _find_list(pub, state, name)
    if existing is not None:
        uri, cid, value = existing
        if value.get("items") == items and value.get("name") == name and value.get("listType") == "album":
            state.set_list(uri, cid)
            return uri, cid, False
        record = {**value, "name": name, "listType": "album", "items": items, "updatedAt": now_iso()}
        uri, cid = pub.repo.put(uri, record, cid, "album list")
    else:
        uri, cid = pub.repo.create(LIST, album_list(name, items), "album list")
    state.set_list(uri, cid)
    return uri, cid, True


def _find_list(pub: Publisher, state: FolderState, name: str) -> tuple[str, str, dict[str, Any]] | None:
    """The album list of an earlier run: the state file's, else the account's album list of
    this name (the newest, if several)."""
    ref = state.list_ref
    if ref is not None:
        try:
            cid, value = pub.repo.get(ref["uri"], LIST)
            return ref["uri"], cid, value
        except RecordGone:
            pass
    found = None
    for uri, cid, value in pub.repo.records(LIST):
        if value.get("listType") == "album" and value.get("name") == name:
            if found is None or str(value.get("createdAt", "")) > str(found[2].get("createdAt", "")):
                found = (uri, cid, value)
    return found
