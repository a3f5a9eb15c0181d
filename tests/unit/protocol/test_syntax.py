"""protocol.syntax against the atproto interop vectors, plus the parsers and the TID clock."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import syntax
from protocol.syntax import (
    AtUri,
    InvalidSyntax,
    TidClock,
    is_valid,
    make_uri,
    parse_datetime,
    parse_language,
    parse_nsid,
    tid_from_datetime,
    tid_from_micros,
    tid_to_datetime,
    tid_to_micros,
)

# Vector file prefix -> string format kind.
FILE_KINDS = {
    "atidentifier": "at-identifier",
    "aturi": "at-uri",
    "cid": "cid",
    "datetime": "datetime",
    "did": "did",
    "handle": "handle",
    "language": "language",
    "nsid": "nsid",
    "recordkey": "record-key",
    "tid": "tid",
    "uri": "uri",
}
# The "parse_invalid" files hold values with valid syntax that must still be refused by the
# parser of that kind.
PARSERS = {"datetime": parse_datetime, "language": parse_language}


def vector_lines(path: Path) -> list[str]:
    """The test values of a vector file: every line except empty ones and # comments.

    Lines are not stripped: leading/trailing whitespace is part of several invalid values.
    """
    text = path.read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def syntax_dir(shared_dir: Path) -> Path:
    path = shared_dir / "reference" / "interop" / "syntax"
    if not path.is_dir():
        pytest.skip(f"interop syntax vectors absent ({path})")
    return path


def _kind_of(path: Path) -> str:
    prefix = path.name.split("_", 1)[0]
    assert prefix in FILE_KINDS, f"vector file {path.name} has no known kind"
    return FILE_KINDS[prefix]


def test_every_vector_file_is_understood(syntax_dir: Path) -> None:
    files = sorted(syntax_dir.glob("*.txt"))
    assert files, "no vector files found"
    for path in files:
        prefix, rest = path.name.split("_", 1)
        assert prefix in FILE_KINDS, path.name
        assert rest in ("syntax_valid.txt", "syntax_invalid.txt", "parse_invalid.txt"), path.name
    # every kind has both a valid and an invalid list
    for prefix in FILE_KINDS:
        assert (syntax_dir / f"{prefix}_syntax_valid.txt").is_file()
        assert (syntax_dir / f"{prefix}_syntax_invalid.txt").is_file()


@pytest.mark.parametrize("prefix", sorted(FILE_KINDS))
def test_valid_vectors(syntax_dir: Path, prefix: str) -> None:
    path = syntax_dir / f"{prefix}_syntax_valid.txt"
    kind = _kind_of(path)
    values = vector_lines(path)
    assert values
    rejected = [v for v in values if not is_valid(kind, v)]
    assert rejected == [], f"{path.name}: valid values rejected as {kind}"


@pytest.mark.parametrize("prefix", sorted(FILE_KINDS))
def test_invalid_vectors(syntax_dir: Path, prefix: str) -> None:
    path = syntax_dir / f"{prefix}_syntax_invalid.txt"
    kind = _kind_of(path)
    values = vector_lines(path)
    assert values
    accepted = [v for v in values if is_valid(kind, v)]
    assert accepted == [], f"{path.name}: invalid values accepted as {kind}"


def test_parse_invalid_vectors(syntax_dir: Path) -> None:
    files = sorted(syntax_dir.glob("*_parse_invalid.txt"))
    assert files
    for path in files:
        kind = _kind_of(path)
        parse = PARSERS[kind]
        for value in vector_lines(path):
            with pytest.raises(InvalidSyntax):
                parse(value)
            if kind == "datetime":
                # The lexicon spec lists these (month 00, 23:99, negative instants) as
                # invalid datetimes, so validation refuses them too.
                assert not is_valid(kind, value), value
            else:
                # Repeated language subtags are well-formed, which is all Lexicon asks.
                assert is_valid(kind, value), value


def test_valid_datetime_vectors_parse(syntax_dir: Path) -> None:
    """Everything is_valid accepts parses, except instants Python cannot hold (year 0000)."""
    for value in vector_lines(syntax_dir / "datetime_syntax_valid.txt"):
        if value.startswith("0000-"):
            with pytest.raises(InvalidSyntax, match="before year 0001"):
                parse_datetime(value)
            continue
        dt = parse_datetime(value)
        assert dt.tzinfo is UTC


def test_datetime_fast_and_slow_paths_agree(syntax_dir: Path) -> None:
    """Values ending in Z use datetime.fromisoformat; +00:00 ones use our own checks."""
    for value in vector_lines(syntax_dir / "datetime_syntax_valid.txt"):
        if not value.endswith("Z") or value.startswith("0000-"):
            continue
        slow = value[:-1] + "+00:00"
        assert parse_datetime(value) == parse_datetime(slow), value
    for value in vector_lines(syntax_dir / "datetime_parse_invalid.txt"):
        assert not is_valid("datetime", value.replace("Z", "+00:00"))


def test_valid_language_vectors_parse(syntax_dir: Path) -> None:
    for value in vector_lines(syntax_dir / "language_syntax_valid.txt"):
        assert str(parse_language(value)) == value


# --- is_valid contract -------------------------------------------------------------------


def test_unknown_kind_raises() -> None:
    with pytest.raises(ValueError, match="unknown string format 'email'"):
        is_valid("email", "a@b.c")


@pytest.mark.parametrize("kind", sorted(syntax.KINDS))
@pytest.mark.parametrize("value", [None, 1, b"did:plc:abc", ["x"], 3.5])
def test_non_strings_are_invalid(kind: str, value: object) -> None:
    assert is_valid(kind, value) is False


GOOD = {
    "handle": "alice.plyr.fm",
    "did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
    "nsid": "fm.plyr.track",
    "at-uri": "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/fm.plyr.track/3jzfcijpj2z2a",
    "tid": "3jzfcijpj2z2a",
    "record-key": "self",
    "datetime": "2024-01-02T03:04:05.678Z",
    "cid": "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a",
    "language": "pt-BR",
    "uri": "https://plyr.fm/track/1",
    "at-identifier": "alice.plyr.fm",
}


def test_good_examples_cover_every_kind() -> None:
    assert set(GOOD) == syntax.KINDS


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_trailing_newline_and_whitespace_rejected(kind: str) -> None:
    value = GOOD[kind]
    assert is_valid(kind, value)
    # `$` in a regex matches before a final newline; the validators must not.
    assert not is_valid(kind, value + "\n")
    assert not is_valid(kind, " " + value)
    assert not is_valid(kind, "")


def test_non_ascii_digits_and_letters_rejected() -> None:
    assert not is_valid("tid", "3jzfcijpj2z2\u0662")
    assert not is_valid("datetime", "2024-01-0\u0662T03:04:05Z")
    assert not is_valid("handle", "b\u00fccher.test")
    assert not is_valid("record-key", "caf\u00e9")


def test_spec_examples() -> None:
    assert is_valid("record-key", "3jui7kd54zh2y")
    assert not is_valid("record-key", "#extra")  # a comment line in the vector file
    assert is_valid("did", "did:web:localhost%3A1234")
    assert not is_valid("nsid", "com.example.3")
    assert is_valid("handle", "name.t--t")
    assert not is_valid("handle", "cn.8")
    assert is_valid("datetime", "0000-01-01T00:00:00.000Z")
    assert not is_valid("datetime", "1985-04-12T23:20:50.123-00:00")
    assert not is_valid("datetime", "1985-02-29T00:00:00Z")  # not a leap year
    assert is_valid("datetime", "2000-02-29T00:00:00Z")  # leap year (divisible by 400)
    assert not is_valid("datetime", "1900-02-29T00:00:00Z")
    assert not is_valid("datetime", "1985-04-12T23:59:60Z")
    assert not is_valid("datetime", "1985-04-12T23:20:50Z" + "0" * 60)
    assert not is_valid("cid", "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR")
    assert not is_valid("uri", "https://example.com/" + "x" * 8200)
    assert is_valid("uri", "https://example.com/" + "x" * 5000)


@given(kind=st.sampled_from(sorted(syntax.KINDS)), value=st.text(max_size=80))
def test_is_valid_never_raises(kind: str, value: str) -> None:
    assert is_valid(kind, value) in (True, False)


@given(
    value=st.text(
        alphabet=string.ascii_letters + string.digits + "-.:/@#%_~ ", min_size=1, max_size=40
    )
)
def test_at_identifier_is_handle_or_did(value: str) -> None:
    assert is_valid("at-identifier", value) == (is_valid("handle", value) or is_valid("did", value))


# --- AT-URI ------------------------------------------------------------------------------

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def test_at_uri_parse_record() -> None:
    uri = AtUri.parse(f"at://{DID}/fm.plyr.track/3jzfcijpj2z2a")
    assert uri == AtUri(DID, "fm.plyr.track", "3jzfcijpj2z2a")
    assert uri.did == DID
    assert str(uri) == f"at://{DID}/fm.plyr.track/3jzfcijpj2z2a"


def test_at_uri_parse_shorter_forms() -> None:
    repo = AtUri.parse(f"at://{DID}")
    assert (repo.authority, repo.collection, repo.rkey) == (DID, None, None)
    assert str(repo) == f"at://{DID}"
    coll = AtUri.parse(f"at://{DID}/fm.plyr.like")
    assert (coll.collection, coll.rkey) == ("fm.plyr.like", None)
    assert str(coll) == f"at://{DID}/fm.plyr.like"


def test_at_uri_handle_authority_is_normalized() -> None:
    uri = AtUri.parse("at://Alice.PLYR.fm/fm.plyr.track/AbC")
    assert uri.authority == "alice.plyr.fm"
    assert uri.did is None
    # collections and record keys are case-sensitive and kept
    assert str(uri) == "at://alice.plyr.fm/fm.plyr.track/AbC"


def test_at_uri_did_case_kept() -> None:
    assert AtUri.parse("at://did:web:Example.com").authority == "did:web:Example.com"


def test_at_uri_is_hashable_and_frozen() -> None:
    a = AtUri.parse(f"at://{DID}/fm.plyr.track/x")
    assert {a: 1}[AtUri(DID, "fm.plyr.track", "x")] == 1
    with pytest.raises(AttributeError):
        a.rkey = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://example.com", "must start with 'at://'"),
        (f"at://{DID}/", "trailing slash"),
        (f"at://{DID}/fm.plyr.track/x?y=1", "query and fragment"),
        (f"at://{DID}/fm.plyr.track/x#frag", "query and fragment"),
        (f"at://{DID}//fm.plyr.track", "no empty parts"),
        (f"at://{DID}/fm.plyr.track/a/b", "no empty parts"),
        ("at://did:plc:/fm.plyr.track", "authority 'did:plc:' is not a valid DID or handle"),
        (f"at://{DID}/fm_plyr_track", "collection 'fm_plyr_track' is not a valid NSID"),
        (f"at://{DID}/fm.plyr.track/..", "record key '..' is not valid"),
        (f"at://{DID}/fm.plyr.track/" + "o" * 9000, "longer than 8192"),
    ],
)
def test_at_uri_parse_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidSyntax, match="invalid AT-URI") as err:
        AtUri.parse(value)
    assert message in str(err.value)
    assert len(str(err.value)) < 300  # long input is shortened in the message
    assert not is_valid("at-uri", value)


def test_at_uri_parse_non_string() -> None:
    with pytest.raises(InvalidSyntax, match="must be a string"):
        AtUri.parse(None)  # type: ignore[arg-type]


def test_invalid_syntax_is_a_value_error() -> None:
    assert issubclass(InvalidSyntax, ValueError)


def test_make_uri() -> None:
    uri = make_uri(DID, "fm.plyr.track", "3jzfcijpj2z2a")
    assert uri == f"at://{DID}/fm.plyr.track/3jzfcijpj2z2a"
    assert str(AtUri.parse(uri)) == uri


@pytest.mark.parametrize(
    ("did", "collection", "rkey", "message"),
    [
        ("alice.plyr.fm", "fm.plyr.track", "x", "not a valid DID"),
        (DID, "track", "x", "not a valid collection NSID"),
        (DID, "fm.plyr.track", "a/b", "not a valid record key"),
        (DID, "fm.plyr.track", "", "not a valid record key"),
        (DID, "fm.plyr.track", None, "not a valid record key"),
    ],
)
def test_make_uri_errors(did: str, collection: str, rkey: str, message: str) -> None:
    with pytest.raises(InvalidSyntax, match=message):
        make_uri(did, collection, rkey)


# --- NSID --------------------------------------------------------------------------------


def test_parse_nsid() -> None:
    nsid = parse_nsid("fm.plyr.actor.profile")
    assert nsid.authority == "fm.plyr.actor"
    assert nsid.name == "profile"
    assert nsid.domain == "actor.plyr.fm"
    assert str(nsid) == "fm.plyr.actor.profile"


def test_parse_nsid_keeps_case() -> None:
    nsid = parse_nsid("com.Example.fooBarV2")
    assert (nsid.authority, nsid.name) == ("com.Example", "fooBarV2")
    assert nsid.domain == "example.com"


@pytest.mark.parametrize(
    "value", ["com.example", "com.example.3", "com.example.foo-bar", "a" * 64 + ".b.c", 3]
)
def test_parse_nsid_errors(value: str) -> None:
    with pytest.raises(InvalidSyntax):
        parse_nsid(value)


def test_nsid_length_limits() -> None:
    # Like the interop vectors: only the 317-character total is enforced, not the spec's
    # 253-character authority cap.
    long_authority = "com" + ".middle" * 40 + ".name"
    assert len(long_authority) - len(".name") > 253
    assert parse_nsid(long_authority).name == "name"
    too_long = "com" + ".middle" * 45 + ".name"
    assert len(too_long) > 317
    assert not is_valid("nsid", too_long)
    with pytest.raises(InvalidSyntax, match="longer than 317"):
        parse_nsid(too_long)
    assert is_valid("nsid", "com.example." + "o" * 63)
    assert not is_valid("nsid", "com.example." + "o" * 64)


# --- datetime ----------------------------------------------------------------------------


def test_parse_datetime_utc() -> None:
    assert parse_datetime("1985-04-12T23:20:50.123Z") == datetime(
        1985, 4, 12, 23, 20, 50, 123000, tzinfo=UTC
    )


def test_parse_datetime_offsets_become_utc() -> None:
    dt = parse_datetime("1985-04-12T23:20:50.123-07:00")
    assert dt.tzinfo is UTC
    assert dt == datetime(1985, 4, 13, 6, 20, 50, 123000, tzinfo=UTC)
    assert parse_datetime("2024-03-01T00:30:00+01:45") == datetime(2024, 2, 29, 22, 45, tzinfo=UTC)


def test_parse_datetime_truncates_fractions() -> None:
    # truncation, not rounding: .9999999 must not become the next second
    dt = parse_datetime("1999-12-31T23:59:59.9999999Z")
    assert dt == datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_datetime("1985-04-12T23:20:50.1Z").microsecond == 100000


def test_parse_datetime_edges_of_python_range() -> None:
    assert parse_datetime("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_datetime("0001-01-01T00:00:00-01:00") == datetime(1, 1, 1, 1, tzinfo=UTC)
    # valid, but the instant falls in year 0000
    assert is_valid("datetime", "0001-01-01T00:00:00+01:00")
    with pytest.raises(InvalidSyntax, match="before year 0001"):
        parse_datetime("0001-01-01T00:00:00+01:00")
    # valid, but the instant falls after 9999 in UTC
    assert is_valid("datetime", "9999-12-31T23:00:00-05:00")
    with pytest.raises(InvalidSyntax, match="after year 9999"):
        parse_datetime("9999-12-31T23:00:00-05:00")
    assert parse_datetime("0399-12-31T23:00:00-00:30") == datetime(399, 12, 31, 23, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1985-04-12", "timezone is required"),
        ("1985-13-12T23:20:50Z", "month 13 does not exist"),
        ("1985-04-31T23:20:50Z", "day 31 does not exist in month 04"),
        ("1985-04-12T24:00:00Z", "time 24:00:00 does not exist"),
        ("1985-04-12T23:20:50+24:00", "timezone offset +24:00 does not exist"),
        ("1985-04-12T23:20:50-00:00", "negative zero"),
        ("0000-01-01T00:30:00+01:00", "before year 0000"),
    ],
)
def test_parse_datetime_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidSyntax, match="invalid datetime") as err:
        parse_datetime(value)
    assert message in str(err.value)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_parse_datetime_round_trips_isoformat(dt: datetime) -> None:
    aware = dt.replace(tzinfo=UTC)
    text = aware.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert is_valid("datetime", text)
    assert parse_datetime(text) == aware
    shifted = aware.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat()
    assert is_valid("datetime", shifted)
    assert parse_datetime(shifted) == aware


# --- language ----------------------------------------------------------------------------


def test_parse_language_parts() -> None:
    tag = parse_language("hy-Latn-IT-arevela")
    assert (tag.language, tag.script, tag.region, tag.variants) == (
        "hy",
        "Latn",
        "IT",
        ("arevela",),
    )
    tag = parse_language("en-GB-boont-r-extended-sequence-x-private")
    assert tag.region == "GB"
    assert tag.variants == ("boont",)
    assert tag.extensions == ("r-extended-sequence",)
    assert tag.private_use == "x-private"
    assert parse_language("es-419").region == "419"
    assert parse_language("i-default").language == "i-default"


def test_language_rejections() -> None:
    for value in ["JA", "jaja", "en-", "en--US", "en-abcdefghi", "x", "en-x"]:
        assert not is_valid("language", value), value
        with pytest.raises(InvalidSyntax, match="not a well-formed"):
            parse_language(value)
    with pytest.raises(InvalidSyntax, match="variant subtag repeats"):
        parse_language("de-DE-1901-1901")
    with pytest.raises(InvalidSyntax, match="extension singleton repeats"):
        parse_language("en-a-foo-A-bar")


# --- TIDs --------------------------------------------------------------------------------

_STD_BASE32 = str.maketrans("234567abcdefghijklmnopqrstuvwxyz", "0123456789abcdefghijklmnopqrstuv")


def _tid_int(tid: str) -> int:
    """Independent decoding: base32-sortable mapped onto Python's own base-32 digits."""
    return int(tid.translate(_STD_BASE32), 32)


def test_tid_known_values() -> None:
    assert tid_to_micros("2222222222222") == 0
    assert tid_from_micros(0) == "2222222222222"
    assert tid_to_micros("3jzfcijpj2z2a") == _tid_int("3jzfcijpj2z2a") >> 10
    assert syntax.tid_to_clock_id("3jzfcijpj2z2a") == _tid_int("3jzfcijpj2z2a") & 1023
    # the largest TID: top bit clear, every other bit set
    assert tid_from_micros(2**53 - 1, 1023) == "b" + "z" * 12
    assert _tid_int("b" + "z" * 12) == 2**63 - 1


def test_tid_datetime_round_trip() -> None:
    dt = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    tid = tid_from_datetime(dt, clock_id=517)
    assert is_valid("tid", tid)
    assert tid_to_datetime(tid) == dt
    assert tid_to_datetime(tid).tzinfo is UTC
    assert syntax.tid_to_clock_id(tid) == 517
    assert (
        _tid_int(tid)
        == ((dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)) << 10 | 517
    )
    # any aware zone gives the same instant
    other = dt.astimezone(timezone(timedelta(hours=9)))
    assert tid_from_datetime(other, clock_id=517) == tid


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2250, 1, 1)),
    st.integers(min_value=0, max_value=1023),
)
def test_tid_round_trip_property(dt: datetime, clock_id: int) -> None:
    aware = dt.replace(tzinfo=UTC)
    tid = tid_from_datetime(aware, clock_id)
    assert is_valid("tid", tid)
    assert tid_to_datetime(tid) == aware


def test_tid_order_matches_time_order() -> None:
    base = datetime(2023, 1, 1, tzinfo=UTC)
    tids = [tid_from_datetime(base + timedelta(microseconds=i * 7919)) for i in range(2000)]
    assert tids == sorted(tids)


def test_tid_errors() -> None:
    with pytest.raises(ValueError, match="aware"):
        tid_from_datetime(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="out of range"):
        tid_from_datetime(datetime(1969, 12, 31, tzinfo=UTC))
    with pytest.raises(ValueError, match="clock id"):
        tid_from_micros(0, 1024)
    with pytest.raises(InvalidSyntax, match="invalid TID"):
        tid_to_micros("3JZFCIJPJ2Z2A")
    with pytest.raises(InvalidSyntax, match="invalid TID"):
        tid_to_datetime("kjzfcijpj2z2a")
    # 2^53-1 microseconds is about year 2255: representable
    assert tid_to_datetime("b" + "z" * 12).year == 2255


def test_tid_clock_monotonic_and_unique() -> None:
    clock = TidClock()
    tids = [clock.next() for _ in range(100_000)]
    assert all(a < b for a, b in zip(tids, tids[1:], strict=False))
    assert all(is_valid("tid", t) for t in tids[:1000])
    assert {syntax.tid_to_clock_id(t) for t in tids} == {clock.clock_id}
    # 100k TIDs cannot all fit in distinct real microseconds this fast, so the clock had to
    # advance past the wall clock within one microsecond: still strictly increasing above.
    now = datetime.now(UTC)
    assert abs(tid_to_datetime(tids[0]) - now) < timedelta(seconds=60)


def test_tid_clock_survives_clock_going_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = TidClock(clock_id=5)
    readings = iter([2_000_000_000_000, 2_000_000_000_000, 1_000_000_000_000, 2_000_000_005_000])
    monkeypatch.setattr(syntax.tids.time, "time_ns", lambda: next(readings))
    tids = [clock.next() for _ in range(4)]
    micros = [tid_to_micros(t) for t in tids]
    assert micros == [2_000_000_000, 2_000_000_001, 2_000_000_002, 2_000_000_005]
    assert tids == sorted(tids)
    assert len(set(tids)) == 4


def test_tid_clock_ids() -> None:
    assert TidClock(clock_id=0).next().endswith("2")  # low 5 bits of clock id 0
    with pytest.raises(ValueError, match="clock id"):
        TidClock(clock_id=1024)
    ids = {TidClock().clock_id for _ in range(50)}
    assert len(ids) > 1  # random per instance
