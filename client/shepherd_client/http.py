"""The client's HTTP layer: one ``httpx.AsyncClient`` with the token, retries, typed errors.

    http = Http("http://gateway:5000", token="shp_...")
    answer = await http.request("GET", "/jobs/j1/status")          # raises ShepherdError
    async with http.stream("GET", "/jobs/j1/result/big.bin") as answer:
        async for chunk in answer.aiter_bytes(): ...

A 503 (the gateway's broker or store is away; its ``Retry-After`` is honoured) and a transport
error (no connection, a dropped one) are retried with exponential backoff and jitter
(``tenacity``) for up to ``retry_for`` seconds, then raised as :class:`Unavailable`. Only
requests that are safe to repeat come through here: reads, cancellations, uploads of a file
(re-sent whole) and submissions, which always carry a job id or an ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from shepherd_client.errors import Unavailable, error_for

#: Seconds a request keeps being retried while the server is busy or unreachable.
RETRY_FOR = 60.0
#: Seconds for connecting and for each read; streams (events, logs) wait without a limit.
TIMEOUT = 30.0
#: Bytes read from an input file at a time as it is uploaded.
UPLOAD_CHUNK = 1024 * 1024
# (wait_exponential_jitter's first-delay parameter is named differently across tenacity 8 and 9)
_BACKOFF = wait_exponential(multiplier=0.2, max=10.0) + wait_random(0, 0.2)


class _Busy(Exception):
    """A 503 to retry, with the server's ``Retry-After`` if it gave one."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__("503")
        self.response = response
        after = response.headers.get("retry-after", "")
        self.retry_after = float(after) if after.isdigit() else None


def _wait(state: RetryCallState) -> float:
    failure = state.outcome.exception() if state.outcome else None
    if isinstance(failure, _Busy) and failure.retry_after is not None:
        return failure.retry_after
    return _BACKOFF(state)


class Http:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = TIMEOUT,
        retry_for: float = RETRY_FOR,
        max_connections: int = 100,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections),
        )
        self.retry_for = retry_for

    async def close(self) -> None:
        await self.client.aclose()

    async def request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **options: Any
    ) -> httpx.Response:
        """The answer, if its status is in ``ok``; else the typed error of its problem."""
        return await self._retrying(lambda: self.client.request(method, path, **options), ok)

    async def put_file(self, path: str, file: Path) -> httpx.Response:
        """Upload ``file`` as the body of a PUT, read a chunk at a time (re-read from its
        start if the request is retried)."""

        async def chunks() -> AsyncIterator[bytes]:
            with file.open("rb") as source:
                while chunk := await asyncio.to_thread(source.read, UPLOAD_CHUNK):
                    yield chunk

        size = str((await asyncio.to_thread(file.stat)).st_size)
        return await self._retrying(
            lambda: self.client.put(path, content=chunks(), headers={"Content-Length": size}),
            (200, 201),
        )

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **options: Any
    ) -> AsyncIterator[httpx.Response]:
        """A streamed answer (its body read by the caller), opened with the same retries."""

        async def send() -> httpx.Response:
            request = self.client.build_request(method, path, **options)
            return await self.client.send(request, stream=True)

        response = await self._retrying(send, ok)
        try:
            yield response
        finally:
            await response.aclose()

    async def _retrying(self, send: Callable[[], Any], ok: tuple[int, ...]) -> httpx.Response:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((_Busy, httpx.TransportError)),
            wait=_wait,
            stop=stop_after_delay(self.retry_for),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response: httpx.Response = await send()
                    if response.status_code == 503 and 503 not in ok:
                        await response.aread()
                        await response.aclose()
                        raise _Busy(response)
        except _Busy as busy:
            raise error_for(503, _problem(busy.response)) from None
        except httpx.TransportError as exc:
            detail = f"cannot reach {self.url}: {type(exc).__name__}: {exc}"
            raise Unavailable(0, {"title": "Unreachable", "detail": detail}) from exc
        if response.status_code not in ok:
            await response.aread()
            await response.aclose()
            raise error_for(response.status_code, _problem(response))
        return response


def _problem(response: httpx.Response) -> dict[str, Any]:
    """The answer's problem body, or one made of its text when it has none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"status": response.status_code, "detail": response.text or response.reason_phrase}
