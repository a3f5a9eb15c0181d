"""Where media objects live: one interface, a local folder (default) and S3-compatible storage.

An object appears whole or not at all: the local backend writes beside the target and renames,
S3 uploads in parts and only a completed multipart upload makes an object (an aborted one
leaves nothing). Memory stays bounded by one part (PLYR_S3_PART_BYTES, 8 MB by default).
Object URLs are decided when an object is stored and never change: the local backend's are
served by the media HTTP app (`/media/KEY`); S3's are the bucket's public URL when one is
configured, else the media app's `/media/KEY`, which redirects to a fresh presigned URL.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from media.settings import MediaSettings

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
# What LocalStorage._put writes beside its target before the rename: `.NAME.HEX32.partial`.
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{32}\.partial$")
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


class S3Storage(Storage):
    """An S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, moto) through aioboto3."""

    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str | None,
        public_url: str | None,
        media_url: str,
        part_bytes: int,
        presign_ttl_s: int = 3600,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.public_url = public_url.rstrip("/") if public_url else None
        self.media_url = media_url.rstrip("/")
        self.part_bytes = part_bytes
        self.presign_ttl_s = presign_ttl_s
        self.client_kwargs = client_kwargs or {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    import aioboto3
                    from botocore.config import Config

                    stack = contextlib.AsyncExitStack()
                    session = aioboto3.Session()
                    self._client = await stack.enter_async_context(
                        session.client(
                            "s3",
                            endpoint_url=self.endpoint_url,
                            region_name=self.region,
                            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
                            **self.client_kwargs,
                        )
                    )
                    self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None

    @staticmethod
    def _error(op: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"S3 {op} {key} failed: {exc}")

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        if not valid_key(key):
            raise StorageError(f"invalid storage key {key!r}")
        client = await self.client()
        size = (await asyncio.to_thread(os.stat, path)).st_size
        with open(path, "rb") as handle:  # noqa: ASYNC230 - reads happen in a thread below
            if size <= self.part_bytes:
                body = await asyncio.to_thread(handle.read)
                try:
                    await client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
                    )
                except Exception as exc:
                    raise self._error("put", key, exc) from exc
                return
            try:
                created = await client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, ContentType=content_type
                )
            except Exception as exc:
                raise self._error("create multipart", key, exc) from exc
            upload_id = created["UploadId"]
            parts: list[dict[str, Any]] = []
            try:
                number = 1
                while True:
                    # One part in memory at a time: the buffer never grows past part_bytes.
                    chunk = await asyncio.to_thread(handle.read, self.part_bytes)
                    if not chunk:
                        break
                    resp = await client.upload_part(
                        Bucket=self.bucket, Key=key, PartNumber=number, UploadId=upload_id, Body=chunk
                    )
                    del chunk
                    parts.append({"PartNumber": number, "ETag": resp["ETag"]})
                    number += 1
                await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    )
                if isinstance(exc, Exception):
                    raise self._error("multipart upload", key, exc) from exc
                raise

    async def open_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        client = await self.client()
        rng = f"bytes={start}-{'' if end is None else end}"
        try:
            resp = await client.get_object(Bucket=self.bucket, Key=key, Range=rng)
        except Exception as exc:
            raise self._error("get", key, exc) from exc
        body = resp["Body"]
        try:
            while True:
                try:
                    chunk = await body.read(READ_CHUNK)
                except Exception as exc:
                    raise self._error("read", key, exc) from exc
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    async def stat(self, key: str) -> ObjectInfo | None:
        client = await self.client()
        try:
            head = await client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("head", key, exc) from exc
        return ObjectInfo(
            size=int(head["ContentLength"]), etag=head.get("ETag", '""'), content_type=head.get("ContentType")
        )

    async def delete(self, key: str) -> None:
        client = await self.client()
        try:
            await client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error("delete", key, exc) from exc

    def url(self, key: str) -> str:
        if self.public_url:
            return f"{self.public_url}/{key}"
        return f"{self.media_url}/media/{key}"

    async def list_objects(self, prefix: str, page_size: int = LIST_PAGE) -> AsyncIterator[list[StoredObject]]:
        client = await self.client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        try:
            async for page in pages:
                yield [
                    StoredObject(key=item["Key"], size=int(item["Size"]), modified=_epoch(item["LastModified"]))
                    for item in page.get("Contents", ())
                    if valid_key(item["Key"])
                ]
        except StorageError:
            raise
        except Exception as exc:
            raise self._error("list", prefix or "/", exc) from exc

    async def list_unfinished_writes(
        self, prefix: str, page_size: int = LIST_PAGE
    ) -> AsyncIterator[list[UnfinishedWrite]]:
        client = await self.client()
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        try:
            async for page in pages:
                yield [
                    UnfinishedWrite(key=item["Key"], started=_epoch(item["Initiated"]), handle=item["UploadId"])
                    for item in page.get("Uploads", ())
                ]
        except StorageError:
            raise
        except Exception as exc:
            raise self._error("list multipart uploads", prefix or "/", exc) from exc

    async def discard_unfinished_write(self, write: UnfinishedWrite) -> None:
        client = await self.client()
        try:
            await client.abort_multipart_upload(Bucket=self.bucket, Key=write.key, UploadId=write.handle)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code == "NoSuchUpload":
                return
            raise self._error("abort multipart upload", write.key, exc) from exc

    async def download_url(self, key: str, filename: str | None = None) -> str | None:
        client = await self.client()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return await client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self.presign_ttl_s
        )


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def storage_from_settings(settings: MediaSettings) -> Storage:
    if settings.storage == "s3":
        assert settings.s3_bucket
        return S3Storage(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            public_url=settings.s3_public_url,
            media_url=settings.public_url,
            part_bytes=settings.s3_part_bytes,
            presign_ttl_s=settings.s3_presign_ttl_s,
        )
    return LocalStorage(settings.media_dir, settings.public_url)
