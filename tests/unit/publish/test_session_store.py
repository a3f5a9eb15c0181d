"""The session file: owner-only folder and file, replaced whole, and renewed once when several
commands (processes) find it expiring at the same moment."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
import time
from pathlib import Path

import orjson
import pytest

from publish.errors import NotLoggedIn, PublishError
from publish.session import fresh_enough, load_session, renew_session
from publish.store import SessionStore, StoredSession


def jwt(exp: float) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")

    return f"{part({'alg': 'ES256K'})}.{part({'exp': int(exp), 'sub': 'did:plc:abc'})}.c2ln"


def session(refresh: str = "refresh-0", access_exp: float | None = None) -> StoredSession:
    exp = access_exp if access_exp is not None else time.time() + 7200
    return StoredSession(
        did="did:plc:abc", handle="ann.test", pds_url="http://127.0.0.1:1", access_jwt=jwt(exp), refresh_jwt=refresh
    )


def test_folder_and_file_are_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    store = SessionStore(folder)
    store.save(session())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.read() == session()
    # A folder that exists with wider permissions is narrowed.
    os.chmod(folder, 0o755)
    store.save(session("refresh-1"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == sorted(["publish-session.json", "publish-session.lock"]) or set(
        p.name for p in folder.iterdir()
    ) == {"publish-session.json", "publish-session.lock"}


def test_replaced_whole_and_damage_is_one_clear_error(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    assert store.read() is None
    store.save(session())
    inode = store.path.stat().st_ino
    store.save(session("refresh-2"))
    assert store.path.stat().st_ino != inode  # a new file renamed over the old one
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    store.path.write_text("{not json")
    with pytest.raises(PublishError, match="damaged"):
        store.read()
    store.path.write_text('{"did": "x"}')
    with pytest.raises(PublishError, match="damaged"):
        store.read()
    assert store.delete() and not store.delete()
    with pytest.raises(NotLoggedIn):
        load_session(tmp_path)


def test_fresh_enough() -> None:
    now = time.time()
    assert fresh_enough(jwt(now + 3600), now=now)
    assert not fresh_enough(jwt(now + 600), now=now)  # within the SDK's 15 minutes
    assert not fresh_enough("not-a-jwt", now=now)


def _renew_in_process(folder: str, start: object, count_file: str, out: object) -> None:
    """One command: it loaded the stale session, and renews it through the lock."""
    store = SessionStore(Path(folder))
    mine = store.read()
    assert mine is not None
    start.wait(120)  # type: ignore[attr-defined]  # a barrier: every command has loaded it

    def renew(current: StoredSession) -> StoredSession:
        with open(count_file, "a") as f:  # the PDS call: counted, and slow enough to overlap
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        return session(refresh=f"refresh-by-{os.getpid()}")

    taken = renew_session(store, mine.did, mine.refresh_jwt, renew)
    final = taken if taken is not None else store.read()
    assert final is not None
    out.put(final.refresh_jwt)  # type: ignore[attr-defined]


def test_concurrent_renewals_renew_once(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(session("refresh-0", access_exp=time.time() + 60))  # expiring: every command renews
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    out = ctx.Queue()
    count_file = tmp_path / "renewals"
    procs = [ctx.Process(target=_renew_in_process, args=(str(tmp_path), start, str(count_file), out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    renewals = count_file.read_text().split()
    assert len(renewals) == 1  # one PDS call; the other three took its tokens
    seen = {out.get(timeout=5) for _ in procs}
    assert seen == {f"refresh-by-{renewals[0]}"}
    stored = store.read()
    assert stored is not None and stored.refresh_jwt == f"refresh-by-{renewals[0]}"


def test_renewal_after_logout_is_not_logged_in(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(session())
    store.delete()
    with pytest.raises(NotLoggedIn):
        renew_session(store, "did:plc:abc", "refresh-0", lambda current: current)
