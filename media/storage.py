"""Where media objects live: one interface, a local folder (default) and S3-compatible storage.

An object appears whole or not at all: the local backend writes beside the target and renames,
S3 uploads in parts and only a completed multipart upload makes an object (an aborted one
leaves nothing). Memory stays bounded by one part (PLYR_S3_PART_BYTES, 8 MB by default).
Object URLs are decided when an object is stored and never change: the local backend's are
served by the media HTTP app (`/media/KEY`); S3's are the bucket's public URL when one is
configured, else the media app's `/media/KEY`, which redirects to a fresh presigned URL.

This module picks the backend from the settings and gathers the storage names in one place:
the interface is in media/storage_base.py, the backends in media/storage_local.py and
media/storage_s3.py.
"""

from __future__ import annotations

from media.settings import MediaSettings
from media.storage_base import (
    LIST_PAGE,
    ObjectInfo,
    Storage,
    StorageError,
    StoredObject,
    UnfinishedWrite,
    valid_key,
)
from media.storage_local import LocalStorage
from media.storage_s3 import S3Storage

__all__ = [
    "LIST_PAGE",
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "StorageError",
    "StoredObject",
    "UnfinishedWrite",
    "storage_from_settings",
    "valid_key",
]


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
