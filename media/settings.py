"""The media service's settings, declared once each (see core/settings_spec.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.settings import RateLimitSettings, core_or_env
from core.settings_spec import Settings, setting

MB = 1024 * 1024
KIB = 1024
DEFAULT_ORPHAN_GRACE_S = 3600.0
DEFAULT_SWEEP_INTERVAL_S = 6 * 3600.0
MIN_ORPHAN_GRACE_S = 60.0


def _strip_slash(url: str) -> str | None:
    return url.rstrip("/") or None


@dataclass(frozen=True, kw_only=True)
class MediaSettings(Settings):
    data_dir: Path  # local storage lives in data_dir/media, temp files in data_dir/tmp (core's)
    host: str = setting(
        "PLYR_MEDIA_HOST", None, "address the media service listens on", required=True,
        default_text="`PLYR_HTTP_HOST`", group="media",
    )  # fmt: skip
    port: int = setting("PLYR_MEDIA_PORT", 8081, "HTTP port", minimum=0, maximum=65535, group="media")
    # how clients reach this service (URLs of stored objects)
    public_url: str = setting(
        "PLYR_MEDIA_PUBLIC_URL", None,
        "base of the URLs stored for objects (local backend, S3 redirects)", required=True,
        default_text="http://`HOST`:`PORT`", group="media",
    )  # fmt: skip
    workers: int = setting("PLYR_MEDIA_WORKERS", 2, "job workers in this process (0: HTTP only)", minimum=0, group="media")
    max_audio_bytes: int = setting(
        "PLYR_MEDIA_MAX_AUDIO_BYTES", 1024 * MB, "upload limit of audio, enforced while streaming",
        minimum=1, default_text="1 GiB", group="media",
    )  # fmt: skip
    max_image_bytes: int = setting(
        "PLYR_MEDIA_MAX_IMAGE_BYTES", 20 * MB, "upload limit of images", minimum=1, default_text="20 MiB",
        group="media",
    )  # fmt: skip
    chunk_bytes: int = setting(
        "PLYR_MEDIA_CHUNK_BYTES", 8 * MB, "upload read and write size", minimum=64 * KIB, default_text="8 MiB",
        group="media",
    )  # fmt: skip
    ffmpeg: str | None = setting(
        "PLYR_FFMPEG", None, "ffmpeg to run", default_text="the imageio-ffmpeg binary", group="media"
    )
    transcode_timeout_s: float = setting(
        "PLYR_MEDIA_TRANSCODE_TIMEOUT_S", 1800.0, "wall-clock limit of one ffmpeg run", group="media"
    )
    job_lease_s: float = setting("PLYR_MEDIA_JOB_LEASE_S", 60.0, "job lease (seconds)", group="media")
    job_max_attempts: int = setting(
        "PLYR_MEDIA_JOB_MAX_ATTEMPTS", 3, "attempts of a job (mirrors: 5)", minimum=1, group="media"
    )
    copyright_scan: bool = setting(
        "PLYR_MEDIA_COPYRIGHT_SCAN", True,
        "scan every audio we store (uploads, PDS blob copies) for copyright matches: a `copyright_scan` job each "
        "(README: Copyright scanning)",
        group="media",
    )  # fmt: skip
    # An external recognition service (AuDD's API, or one that speaks it) as a second engine of
    # every copyright scan (media/copyright/recognition.py); off unless a URL is set.
    recognition_url: str | None = setting(
        "PLYR_MEDIA_RECOGNITION_URL", None,
        "an AuDD-compatible recognition service asked about every scanned audio as a second engine "
        "(`https://api.audd.io/`; `https://enterprise.audd.io/` with `PLYR_MEDIA_RECOGNITION_CLIP_S=0`); unset: off",
        group="media",
    )  # fmt: skip
    recognition_api_key: str | None = setting(
        "PLYR_MEDIA_RECOGNITION_API_KEY", None, "its API token (`api_token`; needed with the URL)", group="media"
    )
    recognition_clip_s: float = setting(
        "PLYR_MEDIA_RECOGNITION_CLIP_S", 12.0,
        "seconds of each audio sent to it, from a third of the way in (AuDD's standard endpoint takes 12); "
        "0: the whole file",
        minimum=0, group="media",
    )  # fmt: skip
    recognition_timeout_s: float = setting(
        "PLYR_MEDIA_RECOGNITION_TIMEOUT_S", 60.0, "limit of one request to it (seconds)", above=0, group="media"
    )
    fetch_timeout_s: float = setting(
        "PLYR_MEDIA_FETCH_TIMEOUT_S", 600.0, "getBlob download limit (seconds)", group="media"
    )
    export_ttl_s: float = setting(
        "PLYR_MEDIA_EXPORT_TTL_S", 7 * 86400.0, "finished export zips are deleted after this (download: 410)",
        default_text="604800 (7 days)", group="media",
    )  # fmt: skip
    server_key: str | None = setting(
        "PLYR_MEDIA_SERVER_KEY", None, "bearer key of trusted callers (upload auth: this or the DID)", group="media"
    )
    service_did: str | None = setting(
        "PLYR_MEDIA_SERVICE_DID", None,
        "audience of service-auth JWTs, and the did:web served at /.well-known/did.json; "
        "a did:web must name `PLYR_MEDIA_PUBLIC_URL`'s host",
        group="media",
    )  # fmt: skip
    storage: str = setting(
        "PLYR_STORAGE", "local", "`local` (under `PLYR_DATA_DIR/media`) or `s3` (`PLYR_S3_*`, see media/README.md)",
        choices=("local", "s3"), group="media",
    )  # fmt: skip
    s3_bucket: str | None = setting("PLYR_S3_BUCKET", None, "the bucket (needed with `PLYR_STORAGE=s3`)", group="media")
    s3_endpoint_url: str | None = setting(
        "PLYR_S3_ENDPOINT_URL", None, "S3 endpoint (R2: the account endpoint)", group="media"
    )
    s3_region: str | None = setting("PLYR_S3_REGION", None, "S3 region (R2: `auto`)", group="media")
    s3_public_url: str | None = setting(
        "PLYR_S3_PUBLIC_URL", None, "public base URL of the bucket; unset: presigned redirects",
        convert=_strip_slash, group="media",
    )  # fmt: skip
    s3_presign_ttl_s: int = setting(
        "PLYR_S3_PRESIGN_TTL_S", 3600, "life of a presigned URL (seconds)", minimum=1, group="media"
    )
    s3_part_bytes: int = setting(
        "PLYR_S3_PART_BYTES", 8 * MB, "multipart part size (= the memory bound of an upload)",
        minimum=5 * MB, default_text="8 MiB", group="media",  # S3's minimum part size
    )  # fmt: skip
    # An object no row refers to is deleted by the orphan sweep once it is older than this: it
    # must exceed the longest time between storing an object and writing its row (seconds).
    orphan_grace_s: float = setting(
        "PLYR_MEDIA_ORPHAN_GRACE_S", DEFAULT_ORPHAN_GRACE_S,
        "the sweep deletes unreferenced objects older than this (seconds)",
        minimum=MIN_ORPHAN_GRACE_S,
        bounds_text=f"at least {MIN_ORPHAN_GRACE_S:g}: "
        "a shorter grace could delete an upload whose row is about to be written",
        group="media",
    )  # fmt: skip
    sweep_interval_s: float = setting(
        "PLYR_MEDIA_SWEEP_INTERVAL_S", DEFAULT_SWEEP_INTERVAL_S,
        "how often the service sweeps (first run 5 min after start; 0: never; `plyr media sweep` by hand)",
        minimum=0, bounds_text="0 (off) or more", default_text="21600 (6 h)", group="media",
    )  # fmt: skip
    # An upload whose body stops arriving for upload_idle_timeout_s, or that after
    # upload_rate_grace_s has averaged less than upload_min_rate_bytes_s, is answered 408: a
    # 1 GiB upload therefore has at most grace + limit / rate to arrive. In-flight caps (per
    # caller DID and for the process) answer 429 with Retry-After.
    upload_idle_timeout_s: float = setting(
        "PLYR_MEDIA_UPLOAD_IDLE_TIMEOUT_S", 60.0, "an upload body that sends nothing for this long: 408",
        above=0, group="media",
    )  # fmt: skip
    upload_min_rate_bytes_s: int = setting(
        "PLYR_MEDIA_UPLOAD_MIN_RATE_BYTES_S", 16 * KIB,
        "after the grace, an upload averaging less (bytes/s): 408 (so a body has at most grace + limit / rate)", minimum=1, group="media",
    )  # fmt: skip
    upload_rate_grace_s: float = setting(
        "PLYR_MEDIA_UPLOAD_RATE_GRACE_S", 30.0, "seconds before the upload rate is judged", above=0, group="media"
    )
    uploads_per_caller: int = setting(
        "PLYR_MEDIA_UPLOADS_PER_CALLER", 4, "uploads in flight per caller DID; over: 429 with Retry-After", minimum=1, group="media"
    )
    uploads_max: int = setting(
        "PLYR_MEDIA_UPLOADS_MAX", 64, "uploads in flight per process; over: 429 with Retry-After", minimum=1, group="media"
    )
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
    def finish(cls, values: dict[str, Any], core: Settings | None) -> None:
        from core.didweb import check_did_host  # aiohttp: only when settings are read

        core = core_or_env(core)
        values.setdefault("data_dir", core.data_dir)
        values["host"] = values["host"] or core.http_host
        if values["storage"] == "s3" and not values["s3_bucket"]:
            raise ConfigError("PLYR_STORAGE=s3 needs PLYR_S3_BUCKET")
        if values.get("recognition_url") and not values.get("recognition_api_key"):
            raise ConfigError("PLYR_MEDIA_RECOGNITION_URL needs PLYR_MEDIA_RECOGNITION_API_KEY")
        values["public_url"] = (values["public_url"] or f"http://{values['host']}:{values['port']}").rstrip("/")
        if values["service_did"] is not None:
            # Media has a did:web of its own, served by itself: its host must be ours.
            check_did_host(values["service_did"].split("#")[0], values["public_url"],
                           did_var="PLYR_MEDIA_SERVICE_DID", url_var="PLYR_MEDIA_PUBLIC_URL")  # fmt: skip
        values.setdefault("rate_limit", RateLimitSettings.from_env())
