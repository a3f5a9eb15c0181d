"""AppView settings, read from the environment (see core.settings for how values are parsed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.didweb import check_did_host, did_web_for
from core.errors import ConfigError
from core.ratelimit import RateLimitSettings
from core.settings import env_float, env_int, env_str

DEFAULT_PORT = 8080
DEFAULT_VIEW_CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class AppviewSettings:
    host: str
    port: int
    public_url: str                 # how the outside world reaches us (no trailing slash)
    service_did: str                # the `aud` that service-auth JWTs must name
    cors_origins: tuple[str, ...]   # exact origins allowed; "*" allows any (never with credentials)
    max_body_bytes: int
    microcache_seconds: float       # anonymous GET responses reused for this long (0 = off)
    top_cache_seconds: float        # rankings of top tracks by period
    stats_cache_seconds: float      # platform totals
    freshness_interval: float       # how often the index cursor is re-read for the header
    play_dedupe_seconds: int        # a replay of the same track by the same listener within this
    public_max_age: int             # Cache-Control max-age of public GETs
    # track views reused for this long (0 = every page reads its views; see hydrate.py). The
    # same default as from_env, so code that builds settings directly serves what production does.
    view_cache_seconds: float = DEFAULT_VIEW_CACHE_SECONDS
    # identical anonymous GETs arriving while one is being answered share its answer
    coalesce: bool = True
    # per client IP / authenticated DID, shared by every AppView process (core/ratelimit.py);
    # the defaults exempt loopback clients, so code that builds settings directly is unlimited
    # on its own machine, as production is.
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)

    @classmethod
    def from_env(cls, host: str = "127.0.0.1") -> AppviewSettings:
        port = env_int("PLYR_APPVIEW_PORT", DEFAULT_PORT, minimum=0)
        public_url = (env_str("PLYR_PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"PLYR_PUBLIC_URL={public_url!r} must be an http(s) URL")
        service_did = env_str("PLYR_SERVICE_DID") or did_web_for(public_url)
        if not service_did.startswith("did:"):
            raise ConfigError(f"PLYR_SERVICE_DID={service_did!r} is not a DID")
        # We serve the did:web document, so it must name the host we are reached at.
        check_did_host(service_did, public_url, did_var="PLYR_SERVICE_DID", url_var="PLYR_PUBLIC_URL")
        origins = tuple(
            o.strip().rstrip("/") for o in (env_str("PLYR_CORS_ORIGINS") or "").split(",") if o.strip()
        )
        return cls(
            host=env_str("PLYR_APPVIEW_HOST") or host,
            port=port,
            public_url=public_url,
            service_did=service_did,
            cors_origins=origins,
            max_body_bytes=env_int("PLYR_APPVIEW_MAX_BODY", 256 * 1024, minimum=1024),
            microcache_seconds=env_float("PLYR_APPVIEW_MICROCACHE_SECONDS", 1.0),
            top_cache_seconds=env_float("PLYR_APPVIEW_TOP_CACHE_SECONDS", 30.0),
            stats_cache_seconds=env_float("PLYR_APPVIEW_STATS_CACHE_SECONDS", 10.0),
            freshness_interval=env_float("PLYR_APPVIEW_FRESHNESS_SECONDS", 1.0),
            play_dedupe_seconds=env_int("PLYR_PLAY_DEDUPE_SECONDS", 1800, minimum=0),
            public_max_age=env_int("PLYR_APPVIEW_MAX_AGE", 5, minimum=0),
            view_cache_seconds=env_float("PLYR_APPVIEW_VIEW_CACHE_SECONDS", DEFAULT_VIEW_CACHE_SECONDS),
            coalesce=env_int("PLYR_APPVIEW_COALESCE", 1, minimum=0) != 0,
            rate_limit=RateLimitSettings.from_env(),
        )
