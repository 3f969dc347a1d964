"""Which URLs a webhook may be posted to: `http` or `https` with a host, and, unless the
operator allows it (`--webhook-allow-private`), no host that is or resolves to a loopback,
private, link-local, shared, multicast, reserved or unspecified address, so that the server
cannot be used to reach its own network. The check runs when a URL is set (a literal address,
and the host's addresses if it resolves then) and again before every attempt, on the
addresses the host resolves to at that moment."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

from server.errors import InvalidRequest

MAX_URL = 2000


def parse(url: str) -> tuple[str, int]:
    """(host, port) of a webhook URL, or InvalidRequest."""
    if len(url) > MAX_URL:
        raise InvalidRequest(
            f"webhook_url is longer than {MAX_URL} characters", field="webhook_url"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"webhook_url is not a URL: {exc}", field="webhook_url") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("webhook_url must be an http or https URL", field="webhook_url")
    if not parts.hostname:
        raise InvalidRequest("webhook_url must name a host", field="webhook_url")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("webhook_url must not carry credentials", field="webhook_url")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def addresses(host: str, port: int) -> list[str]:
    """The addresses `host` stands for now (a literal address: itself)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


async def problem(url: str, allow_private: bool) -> str | None:
    """Why the URL may not be posted to now (None: it may); InvalidRequest for a bad URL."""
    host, port = parse(url)
    if allow_private:
        return None
    try:
        found = await addresses(host, port)
    except OSError as exc:
        return f"the host {host!r} does not resolve: {exc}"
    refused = [a for a in found if private(a)]
    if refused:
        return (
            f"the host {host!r} is or resolves to a loopback or private address "
            f"({', '.join(refused)}); the server allows those only with --webhook-allow-private"
        )
    return None


async def check(url: str, allow_private: bool) -> str:
    """The URL as given, if it may be set; else InvalidRequest. A host that does not resolve
    yet is accepted (each attempt checks again)."""
    found = await problem(url, allow_private)
    if found is not None and "does not resolve" not in found:
        raise InvalidRequest(f"webhook_url refused: {found}", field="webhook_url")
    return url
