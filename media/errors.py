"""Which failures are the machine's, not the input's: retried later, answered with 503.

A full disk (ENOSPC), a quota (EDQUOT), no memory (ENOMEM) or no file descriptors left
(EMFILE, ENFILE) say nothing about the file being processed: the same work succeeds once
space or memory is back. Jobs that hit one go back to the queue, and HTTP answers 503 with
Retry-After, instead of calling the upload bad.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from pathlib import Path

EXHAUSTED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
RETRY_AFTER_S = 30


class ResourceExhausted(OSError):
    """The machine ran out of something (disk, quota, memory, descriptors); try again later."""

    def __init__(self, err: int, message: str | None = None) -> None:
        super().__init__(err, message or describe(err))


def describe(err: int) -> str:
    if err in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    if err == errno.ENOMEM:
        return "out of memory"
    return "too many open files"


def exhausted_errno(exc: BaseException | None) -> int | None:
    """The errno when `exc` (or what caused it) is resource exhaustion, else None."""
    seen = 0
    while exc is not None and seen < 10:  # follow __cause__/__context__, a short chain only
        if isinstance(exc, MemoryError):
            return errno.ENOMEM
        if isinstance(exc, OSError) and exc.errno in EXHAUSTED_ERRNOS:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


# Below this much free space (or no free inode) a folder counts as full: a write that failed
# there failed for want of room, whatever message the writer printed.
FULL_MARGIN_BYTES = 1024 * 1024


def folder_is_full(folder: Path) -> bool:
    try:
        if shutil.disk_usage(folder).free < FULL_MARGIN_BYTES:
            return True
        st = os.statvfs(folder)
        return st.f_files > 0 and st.f_favail == 0
    except OSError:
        return False


def subprocess_exhaustion(returncode: int | None, output_dir: Path | None) -> int | None:
    """Why a child that wrote into `output_dir` failed, when the cause is the machine's: the
    folder is full (ENOSPC), or the child was SIGKILLed without us asking (the OOM killer)."""
    if output_dir is not None and folder_is_full(output_dir):
        return errno.ENOSPC
    if returncode == -signal.SIGKILL:
        return errno.ENOMEM
    return None
