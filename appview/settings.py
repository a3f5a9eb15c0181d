"""AppView settings, declared once each (see core/settings_spec.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from appview.labeler.settings import LabelerSettings
from core.errors import ConfigError
from core.settings import LabelSettings, RateLimitSettings, core_or_env
from core.settings_spec import Settings, setting

DEFAULT_PORT = 8080
DEFAULT_VIEW_CACHE_SECONDS = 1.0


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())


def _urls(text: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in text.split(",") if u.strip())


def _moderators(text: str) -> tuple[str, ...]:
    from protocol.syntax.identifiers import is_did

    dids = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    for did in dids:
        if not is_did(did):
            raise ConfigError(f"PLYR_MODERATORS: {did!r} is not a DID")
    return dids


@dataclass(frozen=True, kw_only=True)
class AppviewSettings(Settings):
    host: str = setting(
        "PLYR_APPVIEW_HOST", None, "address the AppView listens on", required=True,
        default_text="`PLYR_HTTP_HOST`", group="appview",
    )  # fmt: skip
    port: int = setting("PLYR_APPVIEW_PORT", DEFAULT_PORT, "port", minimum=0, maximum=65535, group="appview")
    # how the outside world reaches us (no trailing slash)
    public_url: str = setting(
        "PLYR_PUBLIC_URL", None, "our public origin: the URL pages and oEmbed point at", required=True,
        default_text="http://127.0.0.1:`PORT`", group="appview",
    )  # fmt: skip
    service_did: str = setting(
        "PLYR_SERVICE_DID", None,
        "`aud` expected in service-auth JWTs; a did:web must name the public URL's host",
        required=True, default_text="did:web of the public host", group="appview",
    )  # fmt: skip
    # exact origins allowed; "*" allows any (never with credentials)
    cors_origins: tuple[str, ...] = setting(
        "PLYR_CORS_ORIGINS", "", "comma-separated origins allowed by CORS, or `*`", convert=_origins,
        default_text="none", group="appview",
    )  # fmt: skip
    max_body_bytes: int = setting(
        "PLYR_APPVIEW_MAX_BODY", 256 * 1024, "largest request body (bytes; 413 above)", minimum=1024, group="appview"
    )
    microcache_seconds: float = setting(
        "PLYR_APPVIEW_MICROCACHE_SECONDS", 1.0, "reuse of anonymous GET responses (0 disables)", group="appview"
    )
    top_cache_seconds: float = setting(
        "PLYR_APPVIEW_TOP_CACHE_SECONDS", 30.0, "reuse of the top tracks rankings by period, refreshed in the background", group="appview"
    )
    stats_cache_seconds: float = setting(
        "PLYR_APPVIEW_STATS_CACHE_SECONDS", 10.0, "reuse of the platform totals, refreshed in the background", group="appview"
    )
    freshness_interval: float = setting(
        "PLYR_APPVIEW_FRESHNESS_SECONDS", 1.0, "how often the index cursor is re-read for the freshness header",
        group="appview",
    )  # fmt: skip
    play_dedupe_seconds: int = setting(
        "PLYR_PLAY_DEDUPE_SECONDS", 1800, "a listener's repeat plays of a track within this window count once",
        minimum=0, group="appview",
    )  # fmt: skip
    public_max_age: int = setting(
        "PLYR_APPVIEW_MAX_AGE", 5, "Cache-Control max-age of public GETs (seconds)", minimum=0, group="appview"
    )
    # The same default built directly as from the environment, so code that builds settings
    # directly serves what production does (see hydrate.py).
    view_cache_seconds: float = setting(
        "PLYR_APPVIEW_VIEW_CACHE_SECONDS", DEFAULT_VIEW_CACHE_SECONDS,
        "reuse of track views across pages (0 disables)", group="appview",
    )  # fmt: skip
    # identical anonymous GETs arriving while one is being answered share its answer
    coalesce: bool = setting(
        "PLYR_APPVIEW_COALESCE", 1, "with the microcache off, identical anonymous GETs in flight share one answer (0 disables)",
        minimum=0, convert=bool, group="appview",
    )  # fmt: skip
    # Read replicas (appview/replicas.py): reads spread over them, writes and a viewer's own
    # state on the primary.
    read_urls: tuple[str, ...] = setting(
        "PLYR_DATABASE_READ_URLS", "", "comma-separated `postgresql://` URLs of streaming replicas the AppView reads from",
        convert=_urls, default_text="none: reads go to `DATABASE_URL`", group="appview",
    )  # fmt: skip
    replica_max_lag: float = setting(
        "PLYR_DATABASE_READ_MAX_LAG_SECONDS", 5.0, "a replica further behind the primary than this is not read from",
        above=0, group="appview",
    )  # fmt: skip
    read_your_writes_seconds: float = setting(
        "PLYR_APPVIEW_READ_YOUR_WRITES_SECONDS", 10.0,
        "after a viewer writes (plays, queue, preferences), their reads go to the primary for this long",
        minimum=0, group="appview",
    )  # fmt: skip
    workers: int = setting(
        "PLYR_APPVIEW_WORKERS", 1, "AppView processes sharing the port (`plyr serve --workers`)", minimum=1,
        maximum=256, group="appview",
    )  # fmt: skip
    # Account data erasure (appview/erasure.py): how long deleteAccountData waits for media.
    erasure_wait_seconds: float = setting(
        "PLYR_APPVIEW_ERASURE_WAIT_SECONDS", 30.0,
        "how long `fm.plyr.actor.deleteAccountData` waits for media's part before answering it as pending",
        minimum=0, maximum=600, group="appview",
    )  # fmt: skip
    # Moderation (appview/moderation/): who may act, and how much a user may report.
    moderators: tuple[str, ...] = setting(
        "PLYR_MODERATORS", "",
        "comma-separated DIDs allowed to call the `fm.plyr.moderation.*` methods (with service auth)",
        convert=_moderators, default_text="none: only `plyr admin` on the database", group="moderation",
    )  # fmt: skip
    reports_per_hour: int = setting(
        "PLYR_REPORTS_PER_HOUR", 20,
        "reports one account may file in an hour (`com.atproto.moderation.createReport`; 429 beyond)",
        minimum=1, maximum=10_000, group="moderation",
    )  # fmt: skip
    # per client IP / authenticated DID, shared by every AppView process (core/ratelimit.py);
    # the defaults exempt loopback clients, so code that builds settings directly is unlimited
    # on its own machine, as production is.
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    # our own labeler (appview/labeler/): off unless a key is configured
    labeler: LabelerSettings = field(default_factory=LabelerSettings)
    # which labelers' labels views carry and which remove content (appview/labels.py); none
    # by default, so code that builds settings directly hears no labeler
    labels: LabelSettings = field(default_factory=LabelSettings)

    @classmethod
    def finish(cls, values: dict[str, Any], core: Settings | None) -> None:
        from core.db import validate_database_url
        from core.didweb import check_did_host, did_web_for  # aiohttp: only when settings are read

        if values["host"] is None:
            values["host"] = core_or_env(core).http_host
        public_url = (values["public_url"] or f"http://127.0.0.1:{values['port']}").rstrip("/")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"PLYR_PUBLIC_URL={public_url!r} must be an http(s) URL")
        service_did = values["service_did"] or did_web_for(public_url)
        if not service_did.startswith("did:"):
            raise ConfigError(f"PLYR_SERVICE_DID={service_did!r} is not a DID")
        # We serve the did:web document, so it must name the host we are reached at.
        check_did_host(service_did, public_url, did_var="PLYR_SERVICE_DID", url_var="PLYR_PUBLIC_URL")
        values.update(public_url=public_url, service_did=service_did)
        for url in values["read_urls"]:
            try:
                validate_database_url(url)
            except ConfigError as exc:
                raise ConfigError(f"PLYR_DATABASE_READ_URLS: {exc}") from None
        values.setdefault("rate_limit", RateLimitSettings.from_env())
        values.setdefault("labeler", LabelerSettings.from_env(core=core))
        values.setdefault("labels", LabelSettings.from_env())
        if values["labeler"].key is not None:
            # Our own labeler is one of ours: its labels show and its takedowns remove.
            values["labels"] = values["labels"].including(values["service_did"])
