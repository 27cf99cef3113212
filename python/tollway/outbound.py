"""Requests the gateway makes to addresses its users give it (event endpoints, jobs'
``webhook_url``): where they may go, how long they may take, how much is read back.

The ``[outbound]`` table of TOLLWAY_CONFIG, or the environment:

- ``allow_private`` (TOLLWAY_OUTBOUND_ALLOW_PRIVATE, default false): may a URL resolve to a
  loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, the cloud metadata
  address), shared, multicast, reserved or unspecified address? Refused by default, so a
  user cannot make the gateway call into its own network; on for a gateway whose receivers
  are on the same machine or network (the test suite's).
- ``timeout`` (TOLLWAY_OUTBOUND_TIMEOUT, seconds, default 15): one request in all.
- ``max_response_kb`` (TOLLWAY_OUTBOUND_MAX_RESPONSE_KB, default 64): what is read of an answer.

``check_destination`` resolves the host and refuses it when any of its addresses is not
allowed (the request then connects by name again: a DNS answer that changes in between is
not caught here).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    allow_private: bool = False
    timeout: float = 15.0
    max_response_bytes: int = 64 * 1024


class DestinationRefused(ValueError):
    """The URL's host is (or resolves to) an address outbound requests may not reach."""


def outbound_settings(table: Any, env: Mapping[str, str]) -> OutboundSettings:
    from tollway.config.settings import ConfigError
    from tollway.wallet.config import _flag

    table = {} if table is None else table
    if not isinstance(table, dict):
        raise ConfigError("[outbound] must be a table")
    unknown = set(table) - {"allow_private", "timeout", "max_response_kb"}
    if unknown:
        raise ConfigError(f"[outbound]: unknown setting(s) {', '.join(sorted(unknown))}")
    allow = _flag(
        env.get("TOLLWAY_OUTBOUND_ALLOW_PRIVATE", table.get("allow_private", False)),
        "outbound.allow_private / TOLLWAY_OUTBOUND_ALLOW_PRIVATE",
    )
    timeout = bounded_number(
        env.get("TOLLWAY_OUTBOUND_TIMEOUT", table.get("timeout", 15)), "outbound.timeout", 0.1, 300
    )
    size = bounded_number(
        env.get("TOLLWAY_OUTBOUND_MAX_RESPONSE_KB", table.get("max_response_kb", 64)),
        "outbound.max_response_kb",
        1,
        65536,
    )
    return OutboundSettings(allow_private=allow, timeout=timeout, max_response_bytes=int(size * 1024))


def bounded_number(value: Any, where: str, low: float, high: float) -> float:
    """A setting's number, ``ConfigError`` unless low <= it <= high (a bool is no number)."""
    from tollway.config.settings import ConfigError

    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(f"{where}: expected a number from {low:g} to {high:g}, got {value!r}")
    return number


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"the host {host!r} does not resolve ({exc})") from None
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


async def check_destination(url: str, settings: OutboundSettings) -> None:
    """Raise ``DestinationRefused`` when ``url`` may not be called (see the module's docstring)."""
    if settings.allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = await asyncio.to_thread(_resolve, host, port)
    for address in addresses:
        if not is_public(address):
            raise DestinationRefused(
                f"the URL's host resolves to {address}, a private, loopback or reserved address "
                "(allowed only with [outbound] allow_private = true / TOLLWAY_OUTBOUND_ALLOW_PRIVATE=on)"
            )


__all__ = [
    "DestinationRefused",
    "OutboundSettings",
    "bounded_number",
    "check_destination",
    "is_public",
    "outbound_settings",
]
