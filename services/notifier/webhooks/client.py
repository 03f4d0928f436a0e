"""One delivery attempt: a POST through the SSRF guard, within the configured timeout.

httpcore (the transport under httpx) is used directly because it takes a network backend,
which is how :class:`GuardedBackend` pins each connection to a checked address; it also
follows no redirects and reads no proxy settings from the environment, either of which would
let a delivery around the guard. The timeout (``notifier.webhook_timeout``, 10 s by default)
bounds the whole attempt, so a receiver that trickles its answer is cut off like a silent
one. Only the status line and headers are read: a receiver cannot make the notifier hold a
large answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpcore

from schemas.config import NotifierConfig
from schemas.events import CLOUDEVENTS_CONTENT_TYPE
from services.common.ssrf_guard import GuardedBackend
from services.notifier.webhooks.retries import retry_after

USER_AGENT = "Shepherd-Webhooks/1"
KEEPALIVE = 30.0
"""Seconds an idle connection to a receiver is kept for the next delivery."""
_NO_ANSWER = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError, OSError)
"""Connection refused or reset, DNS failures, malformed answers: the receiver may recover."""


@dataclass(frozen=True)
class Answer:
    status: int | None
    """None when there was no answer; ``error`` says why."""
    retry_after: float | None = None
    error: str | None = None

    def __str__(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else str(self.error)


class WebhookClient:
    """Owns the connection pool; :meth:`aclose` on stop."""

    def __init__(self, config: NotifierConfig) -> None:
        self._timeout = config.webhook_timeout
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=config.webhook_concurrency,
            keepalive_expiry=KEEPALIVE,
            network_backend=GuardedBackend(config.allow_private_targets),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """POST ``body``; raises :class:`~.guard.RefusedTarget` when the guard refuses."""
        request_headers = [
            ("Content-Type", CLOUDEVENTS_CONTENT_TYPE),
            ("User-Agent", USER_AGENT),
            *headers.items(),
        ]
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._pool.stream("POST", url, headers=request_headers, content=body) as response,
            ):
                asked = next(
                    (
                        v.decode("latin-1")
                        for k, v in response.headers
                        if k.lower() == b"retry-after"
                    ),
                    None,
                )
                return Answer(response.status, retry_after(asked))
        except TimeoutError:
            return Answer(None, error=f"no answer within {self._timeout:g} s")
        except _NO_ANSWER as exc:
            return Answer(None, error=f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))

    async def aclose(self) -> None:
        await self._pool.aclose()
