"""S3-compatible buckets: uploads in parts, and only a completed multipart upload makes an
object (an aborted one leaves nothing), so memory stays bounded by one part
(PLYR_S3_PART_BYTES). URLs are the bucket's public URL when one is configured, else the media
app's `/media/KEY`, which redirects to a fresh presigned URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
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
