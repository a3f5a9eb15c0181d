"""`plyr lexicon check NSID FILE` end to end, through the installed command: exit 0 for a valid
record, 1 with one clear line per problem otherwise, never a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PLYR = ROOT / ".venv" / "bin" / "plyr"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
TRACK = {
    "$type": "fm.plyr.track",
    "title": "Midnight Drive",
    "artist": "Nova Lights",
    "fileType": "mp3",
    "createdAt": "2025-03-01T12:34:56.789Z",
    "features": [{"did": DID}],
}


def plyr(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not PLYR.exists():
        pytest.skip(f"{PLYR} is not installed (run uv sync)")
    return subprocess.run(
        [str(PLYR), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def write(tmp_path: Path, value: Any, name: str = "record.json") -> Path:
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_valid_record(tmp_path: Path) -> None:
    path = write(tmp_path, TRACK)
    result = plyr("lexicon", "check", "fm.plyr.track", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: valid fm.plyr.track"
    assert result.stderr == ""


def test_valid_records_of_each_type(tmp_path: Path) -> None:
    ref = {"uri": f"at://{DID}/fm.plyr.track/3jzfcijpj2z2a", "cid": CID}
    now = "2025-03-01T12:34:56Z"
    records = {
        "fm.plyr.like": {"$type": "fm.plyr.like", "subject": ref, "createdAt": now},
        "fm.plyr.comment": {
            "$type": "fm.plyr.comment",
            "subject": ref,
            "text": "nice",
            "timestampMs": 1000,
            "createdAt": now,
        },
        "fm.plyr.list": {"$type": "fm.plyr.list", "items": [{"subject": ref}], "createdAt": now},
        "fm.plyr.actor.profile": {"$type": "fm.plyr.actor.profile", "createdAt": now},
    }
    for nsid, record in records.items():
        result = plyr("lexicon", "check", nsid, write(tmp_path, record, f"{nsid}.json"))
        assert result.returncode == 0, (nsid, result.stderr)


def test_invalid_record(tmp_path: Path) -> None:
    bad = {**TRACK, "title": "", "duration": 1.5, "features": [{"did": "bob"}]}
    path = write(tmp_path, bad)
    result = plyr("lexicon", "check", "fm.plyr.track", path)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stderr.splitlines() == [
        f"{path}: record/title: must be at least 1 bytes (UTF-8), got 0",
        f"{path}: record/features/0/did: must be a valid did",
        f"{path}: record/duration: must be an integer, not float",
    ]
    assert result.stdout == ""


def test_wrong_collection(tmp_path: Path) -> None:
    result = plyr("lexicon", "check", "fm.plyr.like", write(tmp_path, TRACK))
    assert result.returncode == 1
    assert 'record/$type: must be "fm.plyr.like", got "fm.plyr.track"' in result.stderr
    assert_no_traceback(result)


def test_record_not_an_object(tmp_path: Path) -> None:
    path = write(tmp_path, [TRACK])
    result = plyr("lexicon", "check", "fm.plyr.track", path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"{path}: record: must be an object, not array"


def test_unknown_nsid(tmp_path: Path) -> None:
    result = plyr("lexicon", "check", "fm.plyr.nope", write(tmp_path, TRACK))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no lexicon for record type fm.plyr.nope is loaded"


def test_bad_record_file(tmp_path: Path) -> None:
    result = plyr("lexicon", "check", "fm.plyr.track", write(tmp_path, "{not json"))
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr
    assert_no_traceback(result)
    result = plyr("lexicon", "check", "fm.plyr.track", tmp_path / "missing.json")
    assert result.returncode == 1
    assert "no such file" in result.stderr
    assert_no_traceback(result)


def test_broken_lexicon_folder(tmp_path: Path) -> None:
    record = write(tmp_path, TRACK)
    lexicons = tmp_path / "lexicons"
    (lexicons / "fm/plyr").mkdir(parents=True)
    track_lexicon = json.loads((ROOT / "lexicons/fm/plyr/track.json").read_text())

    # Bad JSON in a lexicon file.
    bad_file = lexicons / "fm/plyr/track.json"
    bad_file.write_text('{"lexicon": 1, "id": "fm.plyr.track", ')
    result = plyr("lexicon", "check", "fm.plyr.track", record, "--lexicons", lexicons)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {bad_file}: not valid JSON")
    assert len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)

    # Well-formed JSON, broken lexicon: a required field that is not a property.
    broken = json.loads(json.dumps(track_lexicon))
    broken["defs"]["main"]["record"]["required"].append("tempo")
    bad_file.write_text(json.dumps(broken))
    result = plyr("lexicon", "check", "fm.plyr.track", record, "--lexicons", lexicons)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {bad_file} (fm.plyr.track): defs/main/record/required: "
        '"tempo" is not a defined property'
    )

    # No such folder.
    result = plyr("lexicon", "check", "fm.plyr.track", record, "--lexicons", tmp_path / "nope")
    assert result.returncode == 1
    assert "no such lexicon folder" in result.stderr
    assert_no_traceback(result)

    # A folder missing the lexicons the record refers to: the record cannot be fully checked.
    bad_file.write_text(json.dumps(track_lexicon))
    labelled = {**TRACK, "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": []}}
    result = plyr(
        "lexicon", "check", "fm.plyr.track", write(tmp_path, labelled), "--lexicons", lexicons
    )
    assert result.returncode == 1
    assert "lexicon com.atproto.label.defs#selfLabels is not loaded" in result.stderr
    assert_no_traceback(result)
