"""The media service's settings, read from the environment (see core/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.didweb import check_did_host
from core.errors import ConfigError
from core.ratelimit import RateLimitSettings
from core.settings import CoreSettings, env_float, env_int, env_str

MB = 1024 * 1024
DEFAULT_ORPHAN_GRACE_S = 3600.0
DEFAULT_SWEEP_INTERVAL_S = 6 * 3600.0
MIN_ORPHAN_GRACE_S = 60.0
KIB = 1024


@dataclass(frozen=True)
class MediaSettings:
    data_dir: Path                 # local storage lives in data_dir/media, temp files in data_dir/tmp
    host: str
    port: int
    public_url: str                # how clients reach this service (URLs of stored objects)
    workers: int
    max_audio_bytes: int
    max_image_bytes: int
    chunk_bytes: int               # upload read size: about 8 MB
    ffmpeg: str | None             # PLYR_FFMPEG, else the imageio-ffmpeg binary
    transcode_timeout_s: float     # wall-clock limit of one ffmpeg run
    job_lease_s: float
    job_max_attempts: int
    fetch_timeout_s: float         # getBlob from a PDS
    export_ttl_s: float            # finished export zips are deleted after this long
    server_key: str | None         # PLYR_MEDIA_SERVER_KEY: trusted callers
    service_did: str | None        # audience of service-auth JWTs
    storage: str                   # local | s3
    s3_bucket: str | None
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_public_url: str | None
    s3_presign_ttl_s: int
    s3_part_bytes: int
    # An object no row refers to is deleted by the orphan sweep once it is older than this: it
    # must exceed the longest time between storing an object and writing its row (seconds).
    orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S
    sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S   # 0: the service never sweeps by itself
    # An upload whose body stops arriving for upload_idle_timeout_s, or that after
    # upload_rate_grace_s has averaged less than upload_min_rate_bytes_s, is answered 408: a
    # 1 GiB upload therefore has at most grace + limit / rate to arrive. In-flight caps (per
    # caller DID and for the process) answer 429 with Retry-After.
    upload_idle_timeout_s: float = 60.0
    upload_min_rate_bytes_s: int = 16 * KIB
    upload_rate_grace_s: float = 30.0
    uploads_per_caller: int = 4
    uploads_max: int = 64
    # per client IP / authenticated DID, shared by every media process (core/ratelimit.py)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def auth_configured(self) -> bool:
        return bool(self.server_key) or bool(self.service_did)

    @classmethod
    def from_env(cls, core: CoreSettings | None = None) -> MediaSettings:
        core = core or CoreSettings.from_env()
        port = env_int("PLYR_MEDIA_PORT", 8081, minimum=0)
        host = env_str("PLYR_MEDIA_HOST") or core.http_host
        storage = (env_str("PLYR_STORAGE", "local") or "local").lower()
        if storage not in ("local", "s3"):
            raise ConfigError(f"PLYR_STORAGE={storage!r} must be local or s3")
        bucket = env_str("PLYR_S3_BUCKET")
        if storage == "s3" and not bucket:
            raise ConfigError("PLYR_STORAGE=s3 needs PLYR_S3_BUCKET")
        part = env_int("PLYR_S3_PART_BYTES", 8 * MB, minimum=5 * MB)  # S3's minimum part size
        public = (env_str("PLYR_MEDIA_PUBLIC_URL") or f"http://{host}:{port}").rstrip("/")
        grace = env_float("PLYR_MEDIA_ORPHAN_GRACE_S", DEFAULT_ORPHAN_GRACE_S)
        if not grace >= MIN_ORPHAN_GRACE_S:  # also refuses nan
            raise ConfigError(
                f"PLYR_MEDIA_ORPHAN_GRACE_S={grace:g} must be at least {MIN_ORPHAN_GRACE_S:g}: "
                "a shorter grace could delete an upload whose row is about to be written"
            )
        service_did = env_str("PLYR_MEDIA_SERVICE_DID")
        if service_did is not None:
            # Media has a did:web of its own, served by itself: its host must be ours.
            check_did_host(service_did.split("#")[0], public,
                           did_var="PLYR_MEDIA_SERVICE_DID", url_var="PLYR_MEDIA_PUBLIC_URL")
        sweep_interval = env_float("PLYR_MEDIA_SWEEP_INTERVAL_S", DEFAULT_SWEEP_INTERVAL_S)
        if not sweep_interval >= 0:
            raise ConfigError(f"PLYR_MEDIA_SWEEP_INTERVAL_S={sweep_interval:g} must be 0 (off) or more")
        return cls(
            data_dir=core.data_dir,
            host=host,
            port=port,
            public_url=public,
            workers=env_int("PLYR_MEDIA_WORKERS", 2, minimum=0),
            max_audio_bytes=env_int("PLYR_MEDIA_MAX_AUDIO_BYTES", 1024 * MB, minimum=1),
            max_image_bytes=env_int("PLYR_MEDIA_MAX_IMAGE_BYTES", 20 * MB, minimum=1),
            chunk_bytes=env_int("PLYR_MEDIA_CHUNK_BYTES", 8 * MB, minimum=64 * 1024),
            ffmpeg=env_str("PLYR_FFMPEG"),
            transcode_timeout_s=env_float("PLYR_MEDIA_TRANSCODE_TIMEOUT_S", 1800.0),
            job_lease_s=env_float("PLYR_MEDIA_JOB_LEASE_S", 60.0),
            job_max_attempts=env_int("PLYR_MEDIA_JOB_MAX_ATTEMPTS", 3, minimum=1),
            fetch_timeout_s=env_float("PLYR_MEDIA_FETCH_TIMEOUT_S", 600.0),
            export_ttl_s=env_float("PLYR_MEDIA_EXPORT_TTL_S", 7 * 86400.0),
            server_key=env_str("PLYR_MEDIA_SERVER_KEY"),
            service_did=service_did,
            storage=storage,
            s3_bucket=bucket,
            s3_endpoint_url=env_str("PLYR_S3_ENDPOINT_URL"),
            s3_region=env_str("PLYR_S3_REGION"),
            s3_public_url=(env_str("PLYR_S3_PUBLIC_URL") or "").rstrip("/") or None,
            s3_presign_ttl_s=env_int("PLYR_S3_PRESIGN_TTL_S", 3600, minimum=1),
            s3_part_bytes=part,
            orphan_grace_s=grace,
            sweep_interval_s=sweep_interval,
            upload_idle_timeout_s=_positive("PLYR_MEDIA_UPLOAD_IDLE_TIMEOUT_S", 60.0),
            upload_min_rate_bytes_s=env_int("PLYR_MEDIA_UPLOAD_MIN_RATE_BYTES_S", 16 * KIB, minimum=1),
            upload_rate_grace_s=_positive("PLYR_MEDIA_UPLOAD_RATE_GRACE_S", 30.0),
            uploads_per_caller=env_int("PLYR_MEDIA_UPLOADS_PER_CALLER", 4, minimum=1),
            uploads_max=env_int("PLYR_MEDIA_UPLOADS_MAX", 64, minimum=1),
            rate_limit=RateLimitSettings.from_env(),
        )


def _positive(name: str, default: float) -> float:
    value = env_float(name, default)
    if not value > 0:  # also refuses nan
        raise ConfigError(f"{name}={value:g} must be more than 0")
    return value
