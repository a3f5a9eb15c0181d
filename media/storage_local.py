"""Objects as files under a folder: written beside the target and renamed into place, served
by the media HTTP app (`/media/KEY`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from media.storage_base import (
    LIST_PAGE,
    READ_CHUNK,
    ObjectInfo,
    Storage,
    StorageError,
    StoredObject,
    UnfinishedWrite,
    valid_key,
)

# What LocalStorage._put writes beside its target before the rename: `.NAME.HEX32.partial`.
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{32}\.partial$")


class LocalStorage(Storage):
    """Objects as files under a folder, served by the media HTTP app at `{public_url}/media/KEY`."""

    name = "local"

    def __init__(self, root: Path, public_url: str) -> None:
        self.root = root
        self.public_url = public_url.rstrip("/")

    def path(self, key: str) -> Path:
        if not valid_key(key):
            raise StorageError(f"invalid storage key {key!r}")
        return self.root / key

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        target = self.path(key)
        await asyncio.to_thread(self._put, target, path)

    @staticmethod
    def _put(target: Path, source: Path) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            try:
                try:
                    os.link(source, partial)  # same filesystem: no copy at all
                except OSError:
                    shutil.copyfile(source, partial)
                os.replace(partial, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
        except OSError as exc:
            raise StorageError(f"cannot store {target.name}: {exc.strerror or exc}") from exc

    async def open_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        path = self.path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = await asyncio.to_thread(os.stat, self.path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {key}: {exc.strerror or exc}") from exc
        return ObjectInfo(size=st.st_size, etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"')

    async def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            await asyncio.to_thread(os.unlink, path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror or exc}") from exc
        if key.startswith("exports/"):
            # Each export has a folder of its own that nothing writes into again: drop it once
            # empty. Content folders (audio/ab/) stay: an upload may be about to write there.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.rmdir, path.parent)

    def url(self, key: str) -> str:
        return f"{self.public_url}/media/{key}"

    def _walk(self, prefix: str) -> Iterator[os.DirEntry[str]]:
        """Every file under the folders `prefix` names, depth first, one directory handle per
        level open at a time: memory does not grow with the number of files."""
        top = self.root / prefix.rstrip("/") if prefix else self.root
        stack: list[Any] = []
        try:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                stack.append(os.scandir(top))
            while stack:
                entry = next(stack[-1], None)
                if entry is None:
                    stack.pop().close()
                elif entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        stack.append(os.scandir(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield entry
        finally:
            for handle in stack:
                handle.close()

    def _key_of(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    @staticmethod
    def _take(entries: Iterator[Any], page_size: int) -> list[Any]:
        page = []
        for item in entries:
            page.append(item)
            if len(page) >= page_size:
                break
        return page

    def _objects(self, prefix: str) -> Iterator[StoredObject]:
        for entry in self._walk(prefix):
            key = self._key_of(entry.path)
            if not valid_key(key):
                continue  # partial writes and anything this service did not name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since the directory was read
            yield StoredObject(key=key, size=st.st_size, modified=st.st_mtime)

    def _unfinished(self, prefix: str) -> Iterator[UnfinishedWrite]:
        for entry in self._walk(prefix):
            match = _PARTIAL.match(entry.name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            handle = self._key_of(entry.path)
            key = handle.rsplit("/", 1)[0] + "/" + match["name"] if "/" in handle else match["name"]
            yield UnfinishedWrite(key=key, started=st.st_mtime, handle=handle)

    async def _pages(self, items: Iterator[Any], page_size: int) -> AsyncIterator[list[Any]]:
        try:
            while page := await asyncio.to_thread(self._take, items, page_size):
                yield page
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                await asyncio.to_thread(close)

    async def list_objects(self, prefix: str, page_size: int = LIST_PAGE) -> AsyncIterator[list[StoredObject]]:
        async for page in self._pages(self._objects(prefix), page_size):
            yield page

    async def list_unfinished_writes(
        self, prefix: str, page_size: int = LIST_PAGE
    ) -> AsyncIterator[list[UnfinishedWrite]]:
        async for page in self._pages(self._unfinished(prefix), page_size):
            yield page

    async def discard_unfinished_write(self, write: UnfinishedWrite) -> None:
        name = write.handle.rsplit("/", 1)[-1]
        if not _PARTIAL.match(name) or ".." in write.handle.split("/"):
            raise StorageError(f"not a partial write: {write.handle!r}")
        try:
            await asyncio.to_thread(os.unlink, self.root / write.handle)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {write.handle}: {exc.strerror or exc}") from exc
