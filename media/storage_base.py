"""The storage interface every backend implements, and the types they share.

An object appears whole or not at all; its URL is decided when it is stored and never changes.
Backends: media/storage_local.py (a folder), media/storage_s3.py (S3-compatible buckets).
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
READ_CHUNK = 1024 * 1024
LIST_PAGE = 1000  # S3's own page size; the local walk hands out pages of the same size


class StorageError(RuntimeError):
    """The storage backend failed; the message names the operation and the key."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str           # quoted, as in an HTTP ETag header
    content_type: str | None = None


@dataclass(frozen=True)
class StoredObject:
    """One object found by listing the storage."""

    key: str
    size: int
    modified: float     # seconds since the epoch: when the object was last written


@dataclass(frozen=True)
class UnfinishedWrite:
    """A write that never completed (its process died): a local `.partial` file, an S3
    multipart upload neither completed nor aborted. It holds space but is no object."""

    key: str            # the key it was writing
    started: float      # seconds since the epoch
    handle: str         # local: the partial file's path under the root; S3: the upload id


def valid_key(key: str) -> bool:
    return bool(_KEY.match(key)) and ".." not in key and len(key) <= 512


class Storage(abc.ABC):
    name: str

    @abc.abstractmethod
    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` under `key` (whole or not at all)."""

    @abc.abstractmethod
    def open_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """The bytes of `key` from `start` to `end` inclusive (to the end when None)."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and ETag of `key`, or None when there is no such object."""

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove `key`; removing a missing object is not an error."""

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """The stable public URL of `key`."""

    async def download_url(self, key: str, filename: str | None = None) -> str | None:
        """A URL to redirect a client to instead of proxying the bytes (None: serve them here)."""
        return None

    @abc.abstractmethod
    def list_objects(self, prefix: str, page_size: int = LIST_PAGE) -> AsyncIterator[list[StoredObject]]:
        """The objects whose keys start with `prefix`, a page at a time (never all in memory)."""

    @abc.abstractmethod
    def list_unfinished_writes(self, prefix: str, page_size: int = LIST_PAGE) -> AsyncIterator[list[UnfinishedWrite]]:
        """Writes under `prefix` that were started and never completed nor cleaned up."""

    @abc.abstractmethod
    async def discard_unfinished_write(self, write: UnfinishedWrite) -> None:
        """Remove what an unfinished write left; one already gone is not an error."""

    async def close(self) -> None:
        return None
