"""Where webhooks may go: http(s) URLs whose host is a public address, also after DNS resolution
(a name resolving to 127.0.0.1 or 10.x is refused like the address itself), unless the installation
allows private targets (``PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE``: tests, single-machine installs).

Checked when an endpoint is saved and again before every request, so a name re-pointed at an internal
address later is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from pipegraph.errors import ValidationError

MAX_URL_LENGTH = 2000


def check_url_shape(url: str, *, field: str = "url") -> str:
    """The URL, stripped, if it is an absolute http(s) URL with a host; else ``ValidationError``."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"at most {MAX_URL_LENGTH} characters", field=field)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("give an absolute http:// or https:// URL with a host", field=field)
    if parts.username or parts.password:
        raise ValidationError(
            "no user name or password in the URL; the signature proves the sender", field=field
        )
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValidationError("the URL's port is not a valid port number", field=field) from None
    return url


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


async def resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def check_address(url: str, *, allow_private: bool, field: str = "url") -> None:
    """Refuse a URL whose host is (or resolves to) a loopback, link-local, private or otherwise
    non-public address, unless ``allow_private``; a host that does not resolve is refused too."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = await resolve(host)
    except OSError:
        raise ValidationError(f"the host {host!r} does not resolve", field=field) from None
    private = [str(a) for a in addresses if _is_private(a)]
    if private or not addresses:
        raise ValidationError(
            f"{host!r} is (or resolves to) the non-public address {', '.join(private) or '?'}; webhooks go "
            "to public addresses only unless PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE=true",
            field=field,
        )
