"""A robust AMQP connection to any one of a cluster's nodes: each attempt to connect, or to
reconnect after a loss, goes to the next node in turn, so a dead node is skipped and its
clients move to a live one.

    connection = await ClusterConnection.connect_any(
        ["amqp://u:p@rabbit1:5672/", "amqp://u:p@rabbit2:5672/"],
        client_properties={"connection_name": "shepherd-gateway"},
        reconnect_interval=1.0,
    )

aio-pika's :class:`~aio_pika.RobustConnection` reconnects to one URL, and offers no hook
before an attempt (aio-pika issue 141). One thing happens right before each: it forgets
its transport (``self.transport = None``). This class turns to the next node there, and
nowhere else: the attempt then reads :attr:`url`, which names that node.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
"""Seconds one attempt to connect to a node may take: a node whose host is gone drops the
packets, and the system's own timeout would hold every attempt for minutes."""


class ClusterConnection(RobustConnection):
    def __init__(self, node_urls: list[str], **kwargs: Any) -> None:
        super().__init__(URL(node_urls[0]), **kwargs)  # forgets a transport: no attempt yet
        self._nodes = itertools.cycle([URL(url) for url in node_urls])
        self._attempts = 0

    @classmethod
    async def connect_any(cls, node_urls: list[str], **kwargs: Any) -> ClusterConnection:
        """Connected to the first node that answers; raises what the last one said. (A
        robust connection's first attempt fails fast: it would not try the next node.)"""

        async def starting_at(start: int) -> ClusterConnection:
            connection = cls([*node_urls[start:], *node_urls[:start]], **kwargs)
            try:
                await connection.connect(timeout=CONNECT_TIMEOUT)
            except CONNECTION_EXCEPTIONS:
                await connection.close()
                raise
            return connection

        return await _first_answering(len(node_urls), starting_at)

    @property
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, transport: Any) -> None:
        """``None`` before every attempt to connect (and as the connection is closed): the
        first attempt goes to the first node, each later one to the next."""
        if transport is None and hasattr(self, "_nodes"):
            node = next(self._nodes)
            if self._attempts:
                self.url = node
            self._attempts += 1
        self._transport = transport


async def connect_plain(node_urls: list[str], **kwargs: Any) -> AbstractConnection:
    """A plain connection (it stays lost once lost) to the first node that answers."""
    return await _first_answering(
        len(node_urls),
        lambda index: aio_pika.connect(node_urls[index], timeout=CONNECT_TIMEOUT, **kwargs),
    )


async def _first_answering(count: int, attempt: Callable[[int], Awaitable[T]]) -> T:
    failure: BaseException | None = None
    for index in range(count):
        try:
            return await attempt(index)
        except CONNECTION_EXCEPTIONS as exc:
            failure = exc
    assert failure is not None, "no node to connect to"
    raise failure
