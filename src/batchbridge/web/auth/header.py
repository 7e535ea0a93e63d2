"""The trusted-header login: an authenticating reverse proxy names the person in a header.

The header is believed only when the TCP peer is one of `trusted_proxies` (addresses or
networks). The server runs without uvicorn's proxy-header rewriting, so the peer is the
proxy itself, never an address a client wrote into X-Forwarded-For.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import HTTPConnection

from batchbridge.web.settings import WorkbenchSettings


@lru_cache(maxsize=32)
def _networks(
    values: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def from_trusted_proxy(conn: HTTPConnection, settings: WorkbenchSettings) -> bool:
    """Whether the request's peer address is one of the configured proxies."""
    if conn.client is None:
        return False
    try:
        peer = ipaddress.ip_address(conn.client.host)
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped  # an IPv4 proxy seen through a dual-stack socket
    return any(peer in network for network in _networks(settings.trusted_proxies))


def header_identity(conn: HTTPConnection, settings: WorkbenchSettings) -> str | None:
    """The identity header's value when it came from a trusted proxy; else None."""
    if not from_trusted_proxy(conn, settings):
        return None
    return conn.headers.get(settings.identity_header)
