"""Following a job's output live: ``GET /jobs/{id}/logs?follow=true``, as server-sent events.

    id: 5812
    event: log
    data: {"stream": "stdout", "attempt": 1, "text": "epoch 3: loss 0.41\\n"}

    event: end
    data: {"job_id": "job-1", "state": "done", ...}

It starts with what the job printed since it was accepted, read from ``<ns>.job-logs`` (the
sheeps publish there as their runners print, ``services.sheep.live_logs``), and ends with the
job's final status once everything printed before the job ended has been sent: a mark
appended to the stream once it has ended comes back after all of it. A job that has ended
already gets its stored logs, then ``end``. A client that reconnects with ``Last-Event-ID``
resumes after that piece.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import timedelta

from schemas.broker_names import LOG_ATTEMPT, LOG_JOB, Names
from schemas.config import BrokerConfig
from schemas.status import JobStatus
from services.common.history import EventHistory, Offset, StreamedEvent, Subscription
from services.common.lookup import StatusLookup
from services.gateway.sse import EventSourceResponse, frame

#: Seconds one wait for the job's end lasts before it is renewed.
END_WAIT = 300.0
#: How far before a job's acceptance a follow starts reading the output stream: a stream is
#: found by time only to the granularity of its chunks, and the chunk of a job's first lines
#: may be stamped before them.
CHUNK_SLACK = timedelta(seconds=60)


class LogFollower:
    def __init__(self, config: BrokerConfig, names: Names, lookup: StatusLookup) -> None:
        self._history = EventHistory(
            config, names, reader="log-followers", stream=names.job_logs_stream
        )
        self._lookup = lookup

    async def close(self) -> None:
        """End every follower's stream and refuse new ones (the gateway drains)."""
        await self._history.close()

    async def follow(
        self, status: JobStatus, streams: Collection[str], after: int | None, tail: int | None
    ) -> EventSourceResponse:
        """The live ``streams`` of the job ``status`` is the status of, from after piece
        ``after`` (a Last-Event-ID) or from its start; with ``tail``, the last lines printed
        so far come first, as one piece per stream."""
        start: Offset = "first"
        if after is not None:
            start = after + 1
        elif status.accepted_at is not None:  # a chunk may start a little before its events
            start = status.accepted_at - CHUNK_SLACK
        subscription = await self._history.subscribe(start)
        frames = self._frames(status, frozenset(streams), subscription, tail)
        return EventSourceResponse(frames, subscription.close)

    @staticmethod
    def replay(status: JobStatus, stored: Mapping[str, str]) -> EventSourceResponse:
        """The stored logs of an ended job, then its end."""

        async def frames() -> AsyncIterator[bytes]:
            for stream, text in stored.items():
                if text:
                    yield _piece(stream, status.attempt, text)
            yield _end(status)

        return EventSourceResponse(frames(), _nothing)

    async def _frames(
        self,
        status: JobStatus,
        streams: frozenset[str],
        subscription: Subscription,
        tail: int | None,
    ) -> AsyncIterator[bytes]:
        job_id = status.job_id
        if tail is not None:
            now = await self._history.mark()
            for stream, text in (await _so_far(subscription, job_id, streams, now)).items():
                lines = text.splitlines(keepends=True)[-tail:]
                yield _piece(stream, status.attempt, "".join(lines), str(now))
        ended = asyncio.create_task(self._until_ended(job_id), name=f"follow-{job_id}")
        mark: int | None = None
        piece: asyncio.Future[StreamedEvent | None] | None = None
        try:
            while True:
                piece = asyncio.ensure_future(subscription.get())
                waiting = {piece} if mark is not None else {piece, ended}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if mark is None and ended.done():
                    if ended.result() is None:  # the gateway stops: the client reconnects
                        return
                    mark = await self._history.mark()  # everything printed lies before it
                event = await piece
                if event is None:  # the broker went away: the client reconnects
                    return
                if mark is not None and event.offset >= mark:
                    final = ended.result()
                    assert final is not None  # a mark is appended only for a job that ended
                    yield _end(final)
                    return
                if (stream := _stream_of(event, job_id, streams)) is not None:
                    yield _piece_of(event, stream)
        finally:
            # A read left waiting would ack on the channel while it closes: RabbitMQ takes
            # that for a frame on a closed channel and drops the whole connection.
            for task in (ended, piece):
                if task is not None:
                    task.cancel()
            await asyncio.gather(
                *(t for t in (ended, piece) if t is not None), return_exceptions=True
            )

    async def _until_ended(self, job_id: str) -> JobStatus | None:
        """The job's final status once it has ended; None if the lookup stops first."""
        while True:
            status = await self._lookup.wait_terminal(job_id, END_WAIT)
            if status is not None and status.ready:
                return status
            if status is None or self._lookup.closed:
                return None


async def _so_far(
    subscription: Subscription, job_id: str, streams: frozenset[str], until: int
) -> dict[str, str]:
    """What the job printed to each of ``streams`` before offset ``until``."""
    printed: dict[str, list[bytes]] = {stream: [] for stream in sorted(streams)}
    while (event := await subscription.get()) is not None and event.offset < until:
        if (stream := _stream_of(event, job_id, streams)) is not None:
            printed[stream].append(event.body)
    return {stream: b"".join(parts).decode(errors="replace") for stream, parts in printed.items()}


def _stream_of(event: StreamedEvent, job_id: str, streams: frozenset[str]) -> str | None:
    """The stream a piece of output belongs to, if it is one of ``streams`` of the job."""
    stream = event.kind.removeprefix("log.")
    return stream if event.headers.get(LOG_JOB) == job_id and stream in streams else None


async def _nothing() -> None:
    """A replay holds nothing to let go."""


def _piece_of(event: StreamedEvent, stream: str) -> bytes:
    attempt = int(event.headers.get(LOG_ATTEMPT, 1))  # type: ignore[call-overload]
    return _piece(stream, attempt, event.body.decode(errors="replace"), str(event.offset))


def _piece(stream: str, attempt: int, text: str, id: str | None = None) -> bytes:
    data = json.dumps({"stream": stream, "attempt": attempt, "text": text})
    return frame(data, event="log", id=id)


def _end(status: JobStatus) -> bytes:
    return frame(status.model_dump_json(), event="end")
