"""Live streams: job events as server-sent events, resumable with ``Last-Event-ID``.

GET /jobs/{job_id}/events   the job's current status (event ``status``), then each of its
                            events, ending after a terminal one; 404 for an unknown job
GET /events?types=...       every job's events from now on (or only the listed kinds)

Both read the event history (``<ns>.event-stream``, see :mod:`services.common.history`).
Each event's SSE ``id`` is its offset in that stream, its ``event`` its routing key
(``job.done``) and its ``data`` the CloudEvent exactly as published on AMQP. A client that
reconnects with ``Last-Event-ID: N`` (browsers' EventSource does by itself) gets every
event after offset N, whichever gateway it reaches: nothing missed, nothing twice. The
first ``status`` event has no id, so a client that loses the stream before any other event
starts over from the current status.

Only records that are events Shepherd publishes, under their own routing key, are relayed: a
record that is not (bytes that are not JSON or not UTF-8, another shape, a ``job.failed``
event published as ``job.done``) is skipped, logged and counted
(``shepherd_rejected_messages_total{source="events"}``), and the stream goes on past it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Callable
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.errors import format_validation_error
from schemas.events import PROGRESS, JobEvent, JobRejectedEvent
from schemas.status import JobStatus
from services.common.history import EventHistory, StreamedEvent, Subscription
from services.common.lookup import StatusLookup
from services.common.metrics import invalid_reason, reject
from services.common.params import parse_job_id
from services.common.problems import Problem
from services.gateway.api_docs import ERRORS, JOB, PROBLEM, Answer, Doc, Docs
from services.gateway.sse import (
    KEEPALIVE,
    MAX_OFFSET_DIGITS,
    EventSourceResponse,
    frame,
    last_event_id,
)

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 15.0
"""Seconds of silence after which a stream sends a comment, before proxies' idle timeouts
(commonly 30-60 s) cut it."""
STATUS_EVENT = "status"
"""Event name of the job's current status that opens ``GET /jobs/{job_id}/events``."""
_KIND = r"job\.[a-z][a-z-]*"
TYPES = re.compile(rf"{_KIND}(,{_KIND})*")
"""What ``?types=`` takes: event kinds (routing keys), comma-separated."""


PUBLISHED: TypeAdapter[JobEvent | JobRejectedEvent] = TypeAdapter(JobEvent | JobRejectedEvent)
"""What the notifier and the gateway publish on the events exchange."""


class Verdict(Enum):
    SKIP = "skip"
    SEND = "send"
    LAST = "last"
    """Send it, and end the stream."""


Selector = Callable[[StreamedEvent], Verdict]
StreamAnswer = Response | EventSourceResponse


class _Envelope(BaseModel):
    """What a job's stream reads of an event; the client gets the event as published."""

    model_config = ConfigDict(extra="ignore")

    subject: str | None = None
    data: Any = None


class JobSelector:
    """Picks one job's events out of everyone's, in lifecycle order.

    After the client was shown a status (the opening ``status`` event, then each event
    sent), an event that does not move past it is skipped: one published between the
    stream's attaching and its reading the status, which that status already includes, or
    the notifier announcing a transition again after a redelivery.
    """

    def __init__(self, job_id: str, shown: JobStatus | None) -> None:
        self._job_id = job_id
        self._needle = job_id.encode()
        self._shown = shown

    def __call__(self, event: StreamedEvent) -> Verdict:
        if self._needle not in event.body:  # most events are other jobs': no parsing those
            return Verdict.SKIP
        try:
            envelope = _Envelope.model_validate_json(event.body)
        except ValidationError:
            return Verdict.SKIP
        if envelope.subject != self._job_id:
            return Verdict.SKIP
        try:
            status = JobStatus.model_validate(envelope.data)
        except ValidationError:
            return Verdict.SEND  # about the job, without a status to order it by
        if self._shown is not None and not _moves_on(
            status, self._shown, event.kind == f"job.{PROGRESS}"
        ):
            return Verdict.SKIP
        self._shown = status
        return Verdict.LAST if status.ready else Verdict.SEND


def _moves_on(status: JobStatus, shown: JobStatus, progress: bool) -> bool:
    position, seen = (status.attempt, status.state.rank), (shown.attempt, shown.state.rank)
    if position != seen:
        return position > seen
    return progress and status.progress != shown.progress


def kinds_selector(kinds: frozenset[str] | None) -> Selector:
    def select(event: StreamedEvent) -> Verdict:
        if not event.kind.startswith("job."):  # a notifier's replay mark (services.common.live)
            return Verdict.SKIP
        return Verdict.SEND if kinds is None or event.kind in kinds else Verdict.SKIP

    return select


_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this event (the id of the last one received): every event "
    "published since is sent, none twice. Browsers' EventSource sends it when it reconnects. "
    "Empty: as if absent.",
    "schema": {"type": "string", "pattern": f"^[0-9]{{0,{MAX_OFFSET_DIGITS}}}$"},
}
_EVENTS = (
    "Server-sent events. Each event: `id` its offset in the event history (send it back as "
    "Last-Event-ID to resume), `event` its kind (`job.accepted`, `job.queued`, "
    "`job.running`, `job.progress`, `job.done`, `job.failed`, `job.cancelled`, ...), `data` "
    "the CloudEvent as published on AMQP (`data.data` is the job's status). A comment line "
    "every 15 s keeps an idle stream open."
)
DOCS: Docs = {
    ("GET", "/jobs/{job_id}/events"): Doc(
        "The job's events, live: its current status, then each transition and progress "
        "report, ending after done, failed or cancelled",
        {
            200: Answer(
                "Without Last-Event-ID, first an event `status` (no id) with the job's current "
                "status, as GET /jobs/{job_id}/status answers it; the stream ends after a "
                f"terminal event. {_EVENTS}",
                media_type="text/event-stream",
            ),
            204: Answer(
                "Resumed after the job's terminal event: nothing more will come "
                "(EventSource stops reconnecting)"
            ),
            **ERRORS,
        },
        [*JOB, _LAST_EVENT_ID],
    ),
    ("GET", "/events"): Doc(
        "Every job's events, live, from now on (or after Last-Event-ID)",
        {
            200: Answer(f"Never ends by itself. {_EVENTS}", media_type="text/event-stream"),
            400: PROBLEM,
            503: PROBLEM,
        },
        [
            {
                "name": "types",
                "in": "query",
                "required": False,
                "description": "Only these kinds, comma-separated: `job.done,job.failed`. "
                "Default (or empty): all.",
                "schema": {"type": "string", "pattern": f"^({TYPES.pattern})?$"},
            },
            _LAST_EVENT_ID,
        ],
    ),
}


class StreamRoutes:
    def __init__(
        self,
        history: EventHistory,
        lookup: StatusLookup,
        keepalive: float = KEEPALIVE_INTERVAL,
    ) -> None:
        self._history = history
        self._lookup = lookup
        self._keepalive = keepalive

    def routes(self) -> list[Route]:
        return [
            Route("/events", self.all_events, methods=["GET"]),
            Route("/jobs/{job_id}/events", self.job_events, methods=["GET"]),
        ]

    async def all_events(self, request: Request) -> StreamAnswer:
        kinds = _parse_types(request)
        last = last_event_id(request)
        subscription = await self._history.subscribe("next" if last is None else last + 1)
        return EventSourceResponse(
            self._frames(subscription, kinds_selector(kinds)), subscription.close
        )

    async def job_events(self, request: Request) -> StreamAnswer:
        job_id = parse_job_id(request.path_params["job_id"])
        last = last_event_id(request)
        if last is not None:
            return await self._resume(job_id, last)
        # Attached before the status is read: whatever happens after the read is streamed.
        subscription = await self._history.subscribe("next")
        try:
            status = await self._lookup.status(job_id)
        except BaseException:
            await subscription.close()
            raise
        if status is None:
            await subscription.close()
            raise Problem(404, f"no job {job_id}")
        opening = frame(status.model_dump_json(), event=STATUS_EVENT)
        frames = (
            _once(opening)
            if status.ready
            else self._frames(subscription, JobSelector(job_id, status), first=opening)
        )
        return EventSourceResponse(frames, subscription.close)

    async def _resume(self, job_id: str, last: int) -> StreamAnswer:
        status = await self._lookup.status(job_id)
        if status is None:
            raise Problem(404, f"no job {job_id}")
        if status.ready and await self._saw_the_end(job_id, last):
            # Tells EventSource to stop reconnecting: the stream has nothing more to say.
            return Response(status_code=204)
        subscription = await self._history.subscribe(last + 1)
        return EventSourceResponse(
            self._frames(subscription, JobSelector(job_id, None)), subscription.close
        )

    async def _saw_the_end(self, job_id: str, last: int) -> bool:
        """Whether the event at offset ``last`` is the job's terminal one. Only a terminal
        job's event is looked for, which the history holds unless it aged out; a reading
        that finds nothing in a keep-alive interval says no, and the stream replays."""
        subscription = await self._history.subscribe(last)
        try:
            async with asyncio.timeout(self._keepalive):
                event = await subscription.get()
        except TimeoutError:
            return False
        finally:
            await subscription.close()
        return (
            event is not None
            and event.offset == last
            and JobSelector(job_id, None)(event) is Verdict.LAST
        )

    async def _frames(
        self, subscription: Subscription, select: Selector, first: bytes | None = None
    ) -> AsyncGenerator[bytes, None]:
        """``first``, then the selected events, with a keep-alive comment after each
        ``keepalive`` seconds of silence; ends after a LAST event or with the subscription."""
        if first is not None:
            yield first
        while True:
            try:
                async with asyncio.timeout(self._keepalive):
                    event = await subscription.get()
            except TimeoutError:
                yield KEEPALIVE
                continue
            if event is None:
                return  # the broker connection dropped: the client resumes from its last id
            verdict = select(event)
            if verdict is Verdict.SKIP or not _relayable(event):
                continue
            yield frame(event.body, event=event.kind, id=str(event.offset))
            if verdict is Verdict.LAST:
                return


def _relayable(event: StreamedEvent) -> bool:
    """Whether a record of the history is an event Shepherd published, under its own routing
    key; one that is not is logged and counted, never relayed."""
    try:
        published = PUBLISHED.validate_json(event.body)
    except ValidationError as exc:
        reason, problem = invalid_reason(exc), format_validation_error(exc)
    else:
        if published.routing_key == event.kind:
            return True
        reason, problem = "invalid", f"a {published.type} event under routing key {event.kind}"
    log.warning("not relaying record %d of the event history: %s", event.offset, problem)
    reject("events", reason)
    return False


async def _once(chunk: bytes) -> AsyncGenerator[bytes, None]:
    yield chunk


def _parse_types(request: Request) -> frozenset[str] | None:
    """``?types=job.done,job.failed`` (or the parameter repeated); None: every kind."""
    values = [value for value in request.query_params.getlist("types") if value]
    bad = [value for value in values if not TYPES.fullmatch(value)]
    if bad:
        message = f"a comma-separated list of job.<kind> (job.done,job.progress), not {bad[0]!r}"
        raise Problem(400, f"types: {message}", errors=[{"field": "types", "message": message}])
    return frozenset(kind for value in values for kind in value.split(",")) or None
