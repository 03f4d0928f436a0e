"""Server-sent events: the ``text/event-stream`` wire format and an ASGI response that streams it.

    frame(body, event="job.done", id="42")   # b"id: 42\\nevent: job.done\\ndata: {...}\\n\\n"
    EventSourceResponse(frames(), cleanup=subscription.close)

Not Starlette's ``StreamingResponse``: that one stops watching for the client's disconnect
under ASGI 2.4 servers and only notices a client gone at its next write, which for an idle
stream is the next keep-alive; this one always watches, so a consumer held for a client is let
go the moment the client leaves. ``sse-starlette`` does the same but patches uvicorn at import
and polls for shutdown from a task of its own (see docs/architecture.md, "Dependencies").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from services.common.problems import Problem

MEDIA_TYPE = "text/event-stream"
MAX_OFFSET_DIGITS = 18
"""Stream offsets are signed 64-bit numbers; 18 digits are more than any stream reaches."""
KEEPALIVE = b": keep-alive\n\n"
"""A comment line: ignored by clients, but traffic, so that proxies keep an idle stream open."""


def frame(data: bytes | str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event. ``data`` may hold line breaks: each line becomes a ``data:`` field, which
    clients join back with ``\\n``."""
    text = data.decode() if isinstance(data, bytes) else data
    fields = [f"id: {id}"] if id is not None else []
    if event is not None:
        fields.append(f"event: {event}")
    fields.extend(f"data: {line}" for line in text.splitlines() or [""])
    return ("\n".join(fields) + "\n\n").encode()


class EventSourceResponse:
    """Sends ``frames`` as they come until the iterator ends or the client goes away; then
    ``cleanup`` runs, whatever happened (also when the stream never started).

    A HEAD request gets the headers only: a stream has no length to announce, and streaming
    it to a client that reads no body would never end.
    """

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        cleanup: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        self._frames = frames
        self._cleanup = cleanup
        self._headers = {
            "content-type": f"{MEDIA_TYPE}; charset=utf-8",
            # Neither caches nor buffering proxies (nginx) may hold events back.
            "cache-control": "no-store",
            "x-accel-buffering": "no",
            **(headers or {}),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in self._headers.items()],
                }
            )
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            async with asyncio.TaskGroup() as group:
                streaming = group.create_task(self._stream(send), name="sse-stream")
                watching = group.create_task(_disconnected(receive), name="sse-disconnect")
                # Whichever ends first ends the other: the stream's end, or the client's.
                streaming.add_done_callback(lambda _: watching.cancel())
                watching.add_done_callback(lambda _: streaming.cancel())
        finally:
            try:
                await self._frames.aclose()
            finally:
                await self._cleanup()

    async def _stream(self, send: Send) -> None:
        async for chunk in self._frames:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    """Until the client disconnects (a GET's empty body arrives first and is skipped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def last_event_id(request: Request) -> int | None:
    """The ``Last-Event-ID`` a reconnecting client sends: a stream offset; None without one."""
    raw = request.headers.get("last-event-id", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_OFFSET_DIGITS):
        message = f"must be the id of an event of this API (a stream offset), got {raw!r}"
        raise Problem(
            400,
            f"Last-Event-ID: {message}",
            errors=[{"field": "Last-Event-ID", "message": message}],
        )
    return int(raw)
