"""The process's identity resolver, configured by the core settings.

`protocol.identity` reads no settings; this is where they reach it (CoreSettings: plc_url,
handle_resolver_url, allow_private_network, declared in core/settings.py), and where the
resolver gets its HTTP session guarded against non-public addresses (core/net.py).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from core.errors import ConfigError
from core.net import blocked_reason, outbound_connector, refusal_reason
from core.settings import ALLOW_PRIVATE_NETWORK_VAR, CoreSettings
from protocol.identity import DEFAULT_PLC_URL, IdentityResolver


def build_resolver(
    plc_url: str = DEFAULT_PLC_URL,
    *,
    allow_private_network: bool,
    session: aiohttp.ClientSession | None = None,
    **options: Any,
) -> IdentityResolver:
    """A resolver whose own session (when none is given) uses the guarded connector, and that
    reports the guard's refusals as such. `options` go to IdentityResolver."""
    return IdentityResolver(
        plc_url,
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
    allow_private = settings.allow_private_network
    plc_url = settings.plc_url or DEFAULT_PLC_URL
    handle_resolver_url = settings.handle_resolver_url
    if not allow_private:
        for name, value in (
            ("PLYR_PLC_URL", plc_url),
            ("PLYR_HANDLE_RESOLVER_URL", handle_resolver_url),
        ):
            reason = _non_public_literal(value) if value else None
            if reason is not None:
                raise ConfigError(
                    f"{name}={value} is {reason} address, which outbound requests refuse; "
                    f"set {ALLOW_PRIVATE_NETWORK_VAR}=true for a local PLC or PDS (development only)"
                )
    return build_resolver(
        plc_url,
        session=session,
        handle_resolver_url=handle_resolver_url,
        allow_private_network=allow_private,
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
    return blocked_reason(host)
