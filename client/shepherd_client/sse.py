"""Following a server-sent event stream of the gateway to its last event, resuming after a
dropped connection where it left off (``Last-Event-ID``): nothing missed, nothing twice.

    async for event in follow(http, "/jobs/j1/events", last=lambda e: e.event == "job.done"):
        ...

Parsing is ``httpx-sse``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from shepherd_client.http import TIMEOUT, Http

#: Seconds before resuming a stream that ended, or dropped, before its last event.
RESUME_AFTER = 0.5
#: A stream waits for events without a read limit (the gateway sends a comment every 15 s).
STREAM_TIMEOUT = httpx.Timeout(TIMEOUT, read=None)


async def follow(
    http: Http,
    path: str,
    last: Callable[[ServerSentEvent], bool],
    params: dict[str, Any] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The stream's events up to and including the first for which ``last`` is true."""
    last_id: str | None = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with http.stream(
                "GET", path, params=params, headers=headers, timeout=STREAM_TIMEOUT
            ) as answer:
                async for event in EventSource(answer).aiter_sse():
                    if event.id:
                        last_id = event.id
                    yield event
                    if last(event):
                        return
        except (httpx.TransportError, httpx.StreamError):
            pass  # dropped mid-stream: resumed below, after the last event seen
        await asyncio.sleep(RESUME_AFTER)
