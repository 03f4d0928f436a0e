"""The SSRF guard: webhooks go to public addresses only, unless configured otherwise.

A webhook URL is chosen by whoever submits a job (``callback_url``), so without a guard any
client could make the notifier POST into the network it runs in: RabbitMQ's management API,
a cloud's metadata service at 169.254.169.254, a database on 10.x. Every address a target's
host resolves to must be globally routable: loopback, private, shared (CGNAT), link-local,
multicast, reserved, documentation and unspecified addresses are refused, including IPv4
addresses embedded in IPv6 ones (mapped, 6to4, Teredo, NAT64).

The check happens where it cannot be dodged: :class:`GuardedBackend` resolves the host when a
connection is opened, checks every address, and connects to a checked address itself, so a
DNS answer that changes between a check and the connection (rebinding) gains nothing. TLS
still verifies the certificate against the host name. :func:`check_callback` checks a
``callback_url`` early too, so that a client learns at submission (422) rather than never.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

import httpcore
from pydantic import AnyHttpUrl

from schemas.config import NotifierConfig, WebhookSubscription
from schemas.config_file import ConfigError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SUBMISSION_CHECK_TIMEOUT = 2.0
"""Seconds the early check of a callback_url may spend resolving its host."""
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_KINDS = {  # the most telling first: ipaddress counts loopback and the rest as private too
    "loopback": "a loopback address",
    "link_local": "a link-local address",
    "multicast": "a multicast address",
    "unspecified": "the unspecified address",
    "reserved": "a reserved address",
    "private": "a private address",
}


class RefusedTarget(Exception):
    """The target resolves to an address the guard refuses; retrying will not help."""


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is refused (its kind), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(address)):
        why = refusal(embedded)
        return f"{why} ({embedded} embedded)" if why else None
    for kind, phrase in _KINDS.items():
        if getattr(address, f"is_{kind}"):
            return phrase
    return None if address.is_global else "not a globally routable address"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


async def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses of ``host``, each checked unless ``allow_private``.

    Raises :class:`RefusedTarget` if any of them is refused: a name with one private address
    among public ones could be steered to it; or if ``host`` is no valid host name. ``OSError``
    if it does not resolve.
    """
    if (invalid := host_problem(host)) is not None:
        raise RefusedTarget(invalid)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            why = refusal(ipaddress.ip_address(address))
            if why:
                what = f"{host} is" if host == address else f"{host} resolves to {address},"
                raise RefusedTarget(
                    f"{what} {why}; set notifier.allow_private_targets to deliver there"
                )
    return addresses


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be resolved at all (a DNS label over 63 characters, an empty one),
    or None. URL parsers accept such names; resolving them fails with UnicodeError."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        host.encode("idna")
    except UnicodeError as exc:
        return f"{host!r} is not a valid host name ({exc})"
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses :func:`resolve` let through.

    httpcore asks its backend for every new connection, and then speaks TLS with the URL's
    host name (SNI, certificate check): the address is pinned, the name still verified.
    """

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port, self._allow_private)
        failure: Exception = OSError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedTarget("webhooks are not delivered to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def early_refusal(url: AnyHttpUrl, allow_private: bool) -> str | None:
    """Why the guard refuses ``url`` now (its host is no valid host name, or is or resolves to
    a refused address), or None. Raises OSError or TimeoutError when the host does not resolve
    within ``SUBMISSION_CHECK_TIMEOUT``: the check at delivery is then the one that counts."""
    host = (url.host or "").strip("[]")
    try:
        async with asyncio.timeout(SUBMISSION_CHECK_TIMEOUT):
            await resolve(host, url.port or 0, allow_private)
    except RefusedTarget as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class CallbackCheck:
    """What the early check of a ``callback_url`` found: why it is refused (422), or a note
    for the submitter (its host does not resolve now), or neither."""

    refused: str | None = None
    note: str | None = None


async def check_callback(url: AnyHttpUrl, config: NotifierConfig) -> CallbackCheck:
    """Refused without ``notifier.callback_secret`` (deliveries could not be signed), and as
    :func:`early_refusal` says. A host that does not resolve now passes with a note: DNS may
    know it by the time the job ends, and each delivery resolves and checks it again."""
    if config.callback_secret is None:
        return CallbackCheck(
            refused="callbacks are not enabled here (notifier.callback_secret is not configured)"
        )
    try:
        return CallbackCheck(refused=await early_refusal(url, config.allow_private_targets))
    except (OSError, TimeoutError) as exc:
        return CallbackCheck(
            note=f"callback_url host {url.host} does not resolve now "
            f"({exc or type(exc).__name__}); each delivery resolves and checks it again"
        )


async def check_subscriptions(
    subscriptions: list[WebhookSubscription], allow_private: bool
) -> None:
    """Refuse (ConfigError) a configured subscription whose every delivery the guard would
    refuse, so that it is said at start rather than in a warning per delivery. One whose host
    does not resolve yet is warned of: DNS may know it later, and each delivery checks."""
    for subscription in subscriptions:
        try:
            why = await early_refusal(subscription.url, allow_private)
        except (OSError, TimeoutError) as exc:
            log.warning(
                "webhook %s: %s does not resolve now (%s); each delivery checks it again",
                subscription.name,
                subscription.url.host,
                exc or type(exc).__name__,
            )
            continue
        if why is not None:
            raise ConfigError(f"notifier.webhooks {subscription.name}: {why}")
