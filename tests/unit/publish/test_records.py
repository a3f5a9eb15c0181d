"""Records are checked against our lexicons before anything is uploaded or written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from media.ffmpeg import ffmpeg_exe
from publish.errors import PublishError
from publish.folder import FolderState, album_list, album_name, folder_cover, publish_folder
from publish.publisher import DRAFT_AUDIO, TrackInput, track_fields
from publish.records import LIST, TRACK, check_record
from publish.tags import FileTags


def test_track_fields_pass_the_lexicon_and_say_what_is_wrong() -> None:
    fields = track_fields("Blue Hour", "Ann", "Evenings", TrackInput(description="notes", tags=["live"]))
    check_record(TRACK, {"$type": TRACK, **fields, **DRAFT_AUDIO})
    assert fields["tags"] == ["live"] and "createdAt" in fields
    with pytest.raises(PublishError, match=r"fm.plyr.track record would be invalid: record/title: must be at most 256"):
        check_record(TRACK, {"$type": TRACK, **track_fields("x" * 300, "Ann", None, TrackInput()), **DRAFT_AUDIO})


def test_album_list_name_limit() -> None:
    check_record(LIST, {"$type": LIST, **album_list("Night Songs", [])})
    with pytest.raises(PublishError, match="fm.plyr.list record would be invalid"):
        check_record(LIST, {"$type": LIST, **album_list("n" * 65, [])})


def test_an_album_name_the_lexicon_refuses_stops_before_any_upload(tmp_path: Path) -> None:
    subprocess.run(
        [ffmpeg_exe(None), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1",
         str(tmp_path / "a.flac")], check=True, timeout=60,
    )  # fmt: skip
    # No session, no media service: the check comes before either is used.
    with pytest.raises(PublishError, match="fm.plyr.list record would be invalid"):
        publish_folder(None, tmp_path, TrackInput(album="n" * 100), print)  # type: ignore[arg-type]


def test_folder_helpers(tmp_path: Path) -> None:
    assert folder_cover(tmp_path) is None
    (tmp_path / "Front.PNG").write_bytes(b"x")
    (tmp_path / "cover.jpg").write_bytes(b"x")
    assert folder_cover(tmp_path) == tmp_path / "cover.jpg"
    files = [(Path("a"), FileTags(album="B")), (Path("b"), FileTags(album="A")), (Path("c"), FileTags(album="B"))]
    assert album_name(tmp_path, files) == "B"
    assert album_name(tmp_path / "Some Folder", [(Path("a"), FileTags())]) == "Some Folder"
    # The state file: per account, replaced whole, a damaged one starts over.
    state = FolderState(tmp_path, "did:plc:a")
    state.set_track("ab" * 32, "a.flac", "at://did:plc:a/fm.plyr.track/1", "bafy1")
    state.set_list("at://did:plc:a/fm.plyr.list/2", "bafy2")
    again = FolderState(tmp_path, "did:plc:a")
    assert again.tracks == {"ab" * 32: {"file": "a.flac", "uri": "at://did:plc:a/fm.plyr.track/1", "cid": "bafy1"}}
    assert again.list_ref == {"uri": "at://did:plc:a/fm.plyr.list/2", "cid": "bafy2"}
    assert FolderState(tmp_path, "did:plc:other").tracks == {}
    (tmp_path / ".plyr-publish.json").write_text("{damaged")
    assert FolderState(tmp_path, "did:plc:a").tracks == {}
