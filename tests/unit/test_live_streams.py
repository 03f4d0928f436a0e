"""Live streams without servers: the SSE format, which events a job's stream shows, keep-alives,
and letting go of the subscription whichever way a stream ends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.applications import Starlette

from schemas.events import JobEvent
from schemas.job import ModelRef
from schemas.status import ErrorInfo, JobState, JobStatus, Progress
from services.common.history import Offset, StreamedEvent
from services.common.problems import Problem, problem_handler
from services.gateway.sse import KEEPALIVE, frame
from services.gateway.streams import JobSelector, StreamRoutes, Verdict, kinds_selector

JOB = "job-1"


def status(state: JobState, attempt: int = 1, progress: float | None = None, **extra) -> JobStatus:
    return JobStatus(
        job_id=extra.pop("job_id", JOB),
        state=state,
        model=ModelRef(name="sleep", version="1"),
        attempt=attempt,
        progress=None if progress is None else Progress(fraction=progress),
        **extra,
    )


def event(current: JobStatus, kind: str | None = None, offset: int = 0) -> StreamedEvent:
    published = JobEvent.of(current, "/test/notifier", kind)
    return StreamedEvent(offset, published.routing_key, published.model_dump_json().encode())


def test_a_frame_has_id_event_and_one_data_line_per_line():
    assert (
        frame(b'{"a":1}', event="job.done", id="42")
        == b'id: 42\nevent: job.done\ndata: {"a":1}\n\n'
    )
    assert frame("one\ntwo") == b"data: one\ndata: two\n\n"
    assert frame("") == b"data: \n\n"


def test_a_jobs_selector_shows_its_events_in_order_and_ends_after_a_terminal_one():
    select = JobSelector(JOB, None)
    assert select(event(status(JobState.QUEUED, job_id="job-11"))) is Verdict.SKIP
    assert select(event(status(JobState.QUEUED))) is Verdict.SEND
    assert select(event(status(JobState.RUNNING))) is Verdict.SEND
    assert select(event(status(JobState.RUNNING, progress=0.5), "progress")) is Verdict.SEND
    assert select(event(status(JobState.RUNNING, progress=0.5), "progress")) is Verdict.SKIP
    assert select(event(status(JobState.RUNNING, progress=0.7), "progress")) is Verdict.SEND
    assert select(event(status(JobState.QUEUED, attempt=2))) is Verdict.SEND  # a redelivery
    failed = status(JobState.FAILED, attempt=2, error=ErrorInfo(type="E", message="m"))
    assert select(event(failed)) is Verdict.LAST


def test_a_jobs_selector_skips_what_the_opening_status_already_showed():
    select = JobSelector(JOB, status(JobState.RUNNING, progress=0.25))
    assert select(event(status(JobState.ACCEPTED))) is Verdict.SKIP
    assert select(event(status(JobState.QUEUED))) is Verdict.SKIP
    assert select(event(status(JobState.RUNNING))) is Verdict.SKIP
    assert select(event(status(JobState.RUNNING, progress=0.25), "progress")) is Verdict.SKIP
    assert select(event(status(JobState.RUNNING, progress=0.5), "progress")) is Verdict.SEND
    assert select(event(status(JobState.DONE, finished_at=datetime.now(UTC)))) is Verdict.LAST


def test_a_jobs_selector_passes_on_events_about_the_job_without_a_status():
    rejected = (
        b'{"specversion":"1.0","id":"x","source":"/t/gateway","type":"io.shepherd.job.rejected",'
        b'"subject":"job-1","data":{"job_id":"job-1","reason":"conflict","detail":"d"}}'
    )
    select = JobSelector(JOB, status(JobState.RUNNING))
    assert select(StreamedEvent(1, "job.rejected", rejected)) is Verdict.SEND
    assert select(StreamedEvent(2, "job.done", b"job-1 but not JSON")) is Verdict.SKIP


def test_kinds_select_by_routing_key():
    select = kinds_selector(frozenset({"job.done"}))
    assert select(event(status(JobState.DONE))) is Verdict.SEND
    assert select(event(status(JobState.RUNNING))) is Verdict.SKIP
    assert kinds_selector(None)(event(status(JobState.RUNNING))) is Verdict.SEND


class FakeSubscription:
    def __init__(self) -> None:
        self.events: asyncio.Queue[StreamedEvent | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def get(self) -> StreamedEvent | None:
        return await self.events.get()

    async def close(self) -> None:
        self.closed.set()


class FakeHistory:
    def __init__(self) -> None:
        self.subscriptions: list[tuple[Offset, FakeSubscription]] = []

    async def subscribe(self, start: Offset) -> FakeSubscription:
        subscription = FakeSubscription()
        self.subscriptions.append((start, subscription))
        return subscription


class FakeLookup:
    def __init__(self, found: JobStatus | None) -> None:
        self.found = found

    async def status(self, job_id: str) -> JobStatus | None:
        return self.found


class Exchange:
    """One request to the ASGI app: what it sent, and a client that can hang up."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._requested = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.put_nowait(message)

    def hang_up(self) -> None:
        self._gone.set()

    async def body(self) -> bytes:
        """The next chunk of the body."""
        message = await self.sent.get()
        assert message["type"] == "http.response.body", message
        return message["body"]


def app(history: FakeHistory, lookup: FakeLookup, keepalive: float = 60) -> Starlette:
    return Starlette(
        routes=StreamRoutes(history, lookup, keepalive).routes(),  # type: ignore[arg-type]
        exception_handlers={Problem: problem_handler},
    )


def request(path: str, query: bytes = b"", method: str = "GET", **headers: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "server": ("test", 80),
        "client": ("test", 1),
    }


async def test_a_quiet_stream_sends_keepalives_and_lets_go_when_the_client_leaves():
    history = FakeHistory()
    exchange = Exchange()
    served = asyncio.create_task(
        app(history, FakeLookup(None), keepalive=0.01)(
            request("/events"), exchange.receive, exchange.send
        )
    )
    start = await exchange.sent.get()
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-type"].startswith(b"text/event-stream")
    assert [await exchange.body() for _ in range(2)] == [KEEPALIVE, KEEPALIVE]
    [(offset, subscription)] = history.subscriptions
    assert offset == "next"
    exchange.hang_up()
    await asyncio.wait_for(served, 1)
    assert subscription.closed.is_set()


async def test_an_every_jobs_stream_resumes_after_the_last_event_id_and_filters():
    history = FakeHistory()
    exchange = Exchange()
    served = asyncio.create_task(
        app(history, FakeLookup(None))(
            request("/events", b"types=job.done", Last_Event_ID="41"),
            exchange.receive,
            exchange.send,
        )
    )
    await exchange.sent.get()
    [(offset, subscription)] = history.subscriptions
    assert offset == 42
    subscription.events.put_nowait(event(status(JobState.RUNNING), offset=42))
    done = event(status(JobState.DONE), offset=43)
    subscription.events.put_nowait(done)
    assert await exchange.body() == frame(done.body, event="job.done", id="43")
    subscription.events.put_nowait(None)  # the broker connection dropped
    assert await exchange.body() == b""
    await asyncio.wait_for(served, 1)
    assert subscription.closed.is_set()


async def test_a_jobs_stream_opens_with_its_status_and_ends_after_its_terminal_event():
    history = FakeHistory()
    exchange = Exchange()
    queued = status(JobState.QUEUED)
    served = asyncio.create_task(
        app(history, FakeLookup(queued))(
            request(f"/jobs/{JOB}/events"), exchange.receive, exchange.send
        )
    )
    await exchange.sent.get()
    assert await exchange.body() == frame(queued.model_dump_json(), event="status")
    [(_, subscription)] = history.subscriptions
    done = event(status(JobState.DONE), offset=9)
    for streamed in [event(status(JobState.QUEUED), offset=7), done]:
        subscription.events.put_nowait(streamed)
    assert await exchange.body() == frame(done.body, event="job.done", id="9")
    assert await exchange.body() == b""
    await asyncio.wait_for(served, 1)
    assert subscription.closed.is_set()


@pytest.mark.parametrize("method", ["HEAD", "GET"])
async def test_head_gets_headers_only_and_an_unknown_job_is_404(method):
    history = FakeHistory()
    exchange = Exchange()
    path = "/events" if method == "HEAD" else f"/jobs/{JOB}/events"
    await asyncio.wait_for(
        app(history, FakeLookup(None))(
            request(path, method=method), exchange.receive, exchange.send
        ),
        1,
    )
    start = await exchange.sent.get()
    assert start["status"] == (200 if method == "HEAD" else 404)
    if method == "HEAD":
        assert await exchange.body() == b""
    assert all(subscription.closed.is_set() for _, subscription in history.subscriptions)
