"""The login session on disk: one JSON file in the user's config folder, owner-only.

    <config dir>/            mode 700 (PLYR_CONFIG_DIR / --config-dir, else platformdirs' user config dir)
        publish-session.json mode 600: did, handle, pdsUrl, accessJwt, refreshJwt, savedAt
        publish-session.lock the lock every change of the session is made under

The file is only ever replaced whole (written to a temporary file in the same folder with mode
600, flushed, then renamed over the old one), so a reader sees the old session or the new one,
never half of either. Changes go through `SessionStore.update` under an exclusive lock on the
lock file (`fcntl.flock`; `msvcrt.locking` on Windows) and see the file as it is once the lock is
held: two commands refreshing at once do it one after the other, and the second finds the
first's fresh tokens instead of spending the refresh token again.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from publish.errors import PublishError

SESSION_FILE = "publish-session.json"
LOCK_FILE = "publish-session.lock"
LOCK_TIMEOUT_S = 60.0


def replace_file(path: Path, data: bytes) -> None:
    """Replace `path` whole: a temp file beside it (mode 600, as mkstemp makes it), synced, then
    renamed over it, so a reader sees the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class StoredSession:
    did: str
    handle: str
    pds_url: str
    access_jwt: str
    refresh_jwt: str
    saved_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "did": self.did, "handle": self.handle, "pdsUrl": self.pds_url,
            "accessJwt": self.access_jwt, "refreshJwt": self.refresh_jwt, "savedAt": self.saved_at,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> StoredSession:
        try:
            return cls(
                did=str(data["did"]), handle=str(data["handle"]), pds_url=str(data["pdsUrl"]),
                access_jwt=str(data["accessJwt"]), refresh_jwt=str(data["refreshJwt"]),
                saved_at=float(data.get("savedAt") or 0.0),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise PublishError("the stored session is damaged: run `plyr publish login HANDLE` again") from None


def _lock(fd: int) -> None:
    """Take the exclusive lock on `fd`, waiting at most LOCK_TIMEOUT_S."""
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise PublishError("another plyr publish command holds the session lock") from None
                time.sleep(0.05)
    import fcntl

    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise PublishError("another plyr publish command holds the session lock") from None
            time.sleep(0.02)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


class SessionStore:
    """The session file of one config folder."""

    def __init__(self, config_dir: Path) -> None:
        self.dir = config_dir
        self.path = config_dir / SESSION_FILE
        self.lock_path = config_dir / LOCK_FILE

    def ensure_dir(self) -> None:
        """The folder, owner-only (made if missing; an existing one is narrowed to 700)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if sys.platform != "win32" and stat.S_IMODE(self.dir.stat().st_mode) != 0o700:
            os.chmod(self.dir, 0o700)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive session lock (across processes) for the block."""
        self.ensure_dir()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd)
            try:
                yield
            finally:
                _unlock(fd)
        finally:
            os.close(fd)

    def read(self) -> StoredSession | None:
        """The stored session now (None: nobody is logged in)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PublishError(f"cannot read the session file {self.path}: {exc.strerror}") from None
        try:
            return StoredSession.from_json(orjson.loads(raw))
        except orjson.JSONDecodeError:
            raise PublishError("the stored session is damaged: run `plyr publish login HANDLE` again") from None

    def _write(self, session: StoredSession) -> None:
        """Replace the file whole (call with the lock held)."""
        replace_file(self.path, orjson.dumps(session.to_json(), option=orjson.OPT_INDENT_2))

    def save(self, session: StoredSession) -> None:
        with self.locked():
            self._write(session)

    def update(self, change: Callable[[StoredSession | None], StoredSession | None]) -> StoredSession | None:
        """Under the lock: read the session as it is now, pass it to `change`, store what it
        returns (None: keep the file as it is). Returns the session stored afterwards."""
        with self.locked():
            current = self.read()
            new = change(current)
            if new is not None and new != current:
                self._write(new)
                return new
            return current

    def delete(self) -> bool:
        """Remove the stored session; True when there was one."""
        with self.locked():
            try:
                self.path.unlink()
                return True
            except FileNotFoundError:
                return False
