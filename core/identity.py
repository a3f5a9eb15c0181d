"""The process's identity resolver, configured by the core settings.

`protocol.identity` reads no settings; this is where they reach it (CoreSettings: plc_url,
handle_resolver_url, allow_private_network, declared in core/settings.py), and where the
resolver gets its HTTP session guarded against non-public addresses (core/net.py).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from core.errors import ConfigError
from core.settings import ALLOW_PRIVATE_NETWORK_VAR, CoreSettings

if TYPE_CHECKING:  # aiohttp and the resolver are imported by the functions that build one
    import aiohttp

    from protocol.identity.resolver import IdentityResolver


def build_resolver(
    plc_url: str | None = None,
    *,
    allow_private_network: bool,
    session: aiohttp.ClientSession | None = None,
    **options: Any,
) -> IdentityResolver:
    """A resolver whose own session (when none is given) uses the guarded connector, and that
    reports the guard's refusals as such (`plc_url` None: the public directory). `options` go
    to IdentityResolver."""
    from core.net import outbound_connector, refusal_reason
    from protocol.identity.resolver import DEFAULT_PLC_URL, IdentityResolver

    return IdentityResolver(
        plc_url or DEFAULT_PLC_URL,
        session=session,
        connector=functools.partial(
            outbound_connector, allow_private_network=allow_private_network, limit=100, ttl_dns_cache=300
        ),
        refusal_reason=refusal_reason,
        allow_private_network=allow_private_network,
        **options,
    )


def resolver_from_env(
    *, session: aiohttp.ClientSession | None = None, settings: CoreSettings | None = None
) -> IdentityResolver:
    """A resolver configured by PLYR_PLC_URL, PLYR_HANDLE_RESOLVER_URL and
    PLYR_ALLOW_PRIVATE_NETWORK (from `settings`, or read from the environment when none).

    A directory or resolver URL naming localhost or a non-public IP while private networks are
    refused is a ConfigError now rather than a refused request on every lookup later.
    """
    settings = settings or CoreSettings.from_env()
    check_identity_settings(settings)
    return build_resolver(
        settings.plc_url or None,
        session=session,
        handle_resolver_url=settings.handle_resolver_url,
        allow_private_network=settings.allow_private_network,
    )


def check_identity_settings(settings: CoreSettings) -> None:
    """A directory or resolver URL naming localhost or a non-public IP while private networks
    are refused is a ConfigError (checked without importing the resolver: core/runtime.py
    builds it on first use)."""
    if settings.allow_private_network:
        return
    for name, value in (
        ("PLYR_PLC_URL", settings.plc_url),
        ("PLYR_HANDLE_RESOLVER_URL", settings.handle_resolver_url),
    ):
        reason = _non_public_literal(value) if value else None
        if reason is not None:
            raise ConfigError(
                f"{name}={value} is {reason} address, which outbound requests refuse; "
                f"set {ALLOW_PRIVATE_NETWORK_VAR}=true for a local PLC or PDS (development only)"
            )


def _non_public_literal(url: str) -> str | None:
    """Why the host of `url` is not public when that shows without DNS (localhost, an IP)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the connector checks what it resolves to
    from core.net import blocked_reason

    return blocked_reason(host)
