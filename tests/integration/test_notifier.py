"""The notifier and the readiness lookups against the real RabbitMQ and MinIO."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from starlette.applications import Starlette

from schemas.broker_names import Names
from schemas.config import Config
from schemas.events import CLOUDEVENTS_CONTENT_TYPE, JobEvent, StatusReport
from schemas.job import JobSpec, ModelRef
from schemas.layout import job_key, live_snapshot_key, status_key
from schemas.status import ErrorInfo, JobState, JobStatus, LiveSnapshot, Progress, Usage
from services.common.broker import Broker
from services.common.history import EventHistory
from services.common.lookup import StatusLookup
from services.common.problems import PROBLEM_JSON, Problem, problem_handler
from services.common.storage import ObjectMissing, Storage
from services.gateway.readiness import routes
from services.notifier.service import Notifier
from tests.support.metrics import rejected
from tests.support.polling import eventually, take

MODEL = ModelRef(name="echo", version="1")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ACCEPTED, QUEUED, RUNNING = JobState.ACCEPTED, JobState.QUEUED, JobState.RUNNING
DONE, FAILED, CANCELLED = JobState.DONE, JobState.FAILED, JobState.CANCELLED

Events = asyncio.Queue[AbstractIncomingMessage]


def report(
    job_id: str, state: JobState | None, t: float = 0, attempt: int = 1, **fields
) -> StatusReport:
    return StatusReport(
        job_id=job_id,
        state=state,
        model=MODEL,
        attempt=attempt,
        time=T0 + timedelta(seconds=t),
        **fields,
    )


@pytest.fixture
def storage(config: Config) -> Storage:
    return Storage(config.storage)


@pytest.fixture
async def notifier(config: Config, broker: Broker, storage: Storage) -> AsyncIterator[Notifier]:
    notifier = Notifier(config, broker, storage)
    await notifier.start()
    yield notifier
    await notifier.stop()


@pytest.fixture
async def lookup(config: Config, names: Names, storage: Storage) -> AsyncIterator[StatusLookup]:
    lookup = StatusLookup(storage, EventHistory(config.broker, names), names.namespace)
    await lookup.start()
    yield lookup
    await lookup.stop()


MARK = "test.mark"
"""Routing key of the marks of :func:`assert_quiet`: no Shepherd queue is bound to it."""


@pytest.fixture
async def events(broker: Broker, names: Names) -> AsyncIterator[Events]:
    """Every job event of the namespace, as a subscriber would see it."""
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(names.events_exchange, "job.#")
    await queue.bind(names.events_exchange, MARK)  # see assert_quiet
    received: Events = asyncio.Queue()
    await queue.consume(received.put, no_ack=True)
    yield received
    await channel.close()


async def send(broker: Broker, *reports: StatusReport) -> None:
    for r in reports:
        await broker.publish(broker.names.events_exchange, r.routing_key, r)


async def next_events(received: Events, count: int, within: float = 10) -> list[JobEvent]:
    events = []
    async with asyncio.timeout(within):
        for _ in range(count):
            message = await received.get()
            assert message.content_type == CLOUDEVENTS_CONTENT_TYPE
            event = JobEvent.model_validate_json(message.body)
            assert message.routing_key == event.routing_key
            assert message.message_id == event.id
            events.append(event)
    return events


async def parked(lookup: StatusLookup, job_id: str) -> None:
    """Until a long-poll waits for ``job_id``: what is sent now must wake it."""

    async def one() -> bool:
        return lookup.waiting(job_id) == 1

    await eventually(one, within=5)


async def assert_quiet(broker: Broker, received: Events) -> None:
    """No event is left on its way: a mark published now to the events exchange is the next
    message, and every event published before it lies before it in the queue."""
    mark = uuid.uuid4().hex.encode()
    await broker.publish(broker.names.events_exchange, MARK, mark)
    async with asyncio.timeout(10):
        message = await received.get()
    assert message.body == mark, message.routing_key


async def stored_status(storage: Storage, job_id: str) -> JobStatus:
    return JobStatus.model_validate_json(await storage.get_bytes(status_key(job_id)))


async def test_reports_out_of_order_give_one_monotonic_status_and_each_event_once(
    config, broker, storage, events, job_id
):
    # prefetch=1: the barrier report below is processed only after every earlier one.
    notifier = Notifier(config, broker, storage, prefetch=1)
    await notifier.start()
    try:
        await send(
            broker,
            report(job_id, ACCEPTED, t=0),
            report(job_id, RUNNING, t=2, sheep_id="gpu-1"),
            report(job_id, QUEUED, t=1),  # late: fills enqueued_at, announces nothing
            report(job_id, None, t=2.5, progress=Progress(fraction=0.5)),
            report(job_id, DONE, t=3, sheep_id="gpu-1"),
            report(job_id, RUNNING, t=4, sheep_id="gpu-2"),  # stale
            report(job_id, DONE, t=3, sheep_id="gpu-1"),  # duplicate
            report("barrier-" + job_id, ACCEPTED),
        )
        got = await next_events(events, 5)
    finally:
        await notifier.stop()

    assert [(e.subject, e.type) for e in got] == [
        (job_id, "io.shepherd.job.accepted"),
        (job_id, "io.shepherd.job.running"),
        (job_id, "io.shepherd.job.progress"),
        (job_id, "io.shepherd.job.done"),
        ("barrier-" + job_id, "io.shepherd.job.accepted"),
    ]
    await assert_quiet(broker, events)
    for event in got:
        assert event.specversion == "1.0"
        assert event.source == notifier.source == f"/{config.broker.namespace}/notifier"
        assert event.datacontenttype == "application/json"
        assert event.data.job_id == event.subject
    assert got[1].data.state is RUNNING and got[1].data.enqueued_at is None
    assert got[2].data.progress == Progress(fraction=0.5)
    expected = JobStatus(
        job_id=job_id,
        state=DONE,
        model=MODEL,
        sheep_id="gpu-1",
        accepted_at=T0,
        enqueued_at=T0 + timedelta(seconds=1),
        started_at=T0 + timedelta(seconds=2),
        finished_at=T0 + timedelta(seconds=3),
    )
    assert await stored_status(storage, job_id) == expected
    assert got[3].data == expected


async def test_a_redelivery_and_a_failure_are_announced_with_their_attempt(
    broker, storage, notifier, events, job_id
):
    error = ErrorInfo(type="RuntimeError", message="out of memory")
    await send(
        broker,
        report(job_id, QUEUED, t=1),
        report(job_id, RUNNING, t=2, sheep_id="gpu-1"),
        report(job_id, QUEUED, t=3, attempt=2),
        report(job_id, RUNNING, t=4, attempt=2, sheep_id="gpu-2"),
        report(job_id, FAILED, t=5, attempt=2, sheep_id="gpu-2", error=error),
    )
    got = await next_events(events, 5)
    assert [(e.data.state, e.data.attempt) for e in got] == [
        (QUEUED, 1),
        (RUNNING, 1),
        (QUEUED, 2),
        (RUNNING, 2),
        (FAILED, 2),
    ]
    status = await stored_status(storage, job_id)
    assert status.error == error and status.sheep_id == "gpu-2" and status.attempt == 2


async def test_many_jobs_concurrently_each_in_lifecycle_order(broker, storage, notifier, events):
    jobs = [f"many-{i}-{time.monotonic_ns()}" for i in range(40)]
    lifecycle = [ACCEPTED, QUEUED, RUNNING, None, DONE]
    reports = [
        report(j, s, t=i, sheep_id="gpu-1", progress=Progress(fraction=0.5) if s is None else None)
        for i, s in enumerate(lifecycle)
        for j in jobs
    ]
    await send(broker, *reports)
    got = await next_events(events, len(reports), within=30)
    kinds: dict[str, list[str]] = {}
    for event in got:
        kinds.setdefault(event.subject, []).append(event.routing_key)
    expected = ["job.accepted", "job.queued", "job.running", "job.progress", "job.done"]
    assert kinds == {j: expected for j in jobs}
    statuses = await asyncio.gather(*(stored_status(storage, j) for j in jobs))
    assert all(s.state is DONE for s in statuses)


async def test_a_malformed_report_is_dead_lettered_and_consuming_goes_on(
    broker, names, storage, notifier, events, job_id, caplog
):
    caplog.set_level(logging.WARNING, logger="services.notifier.service")
    before = rejected("status", "not-json"), rejected("status", "invalid")
    await broker.publish(names.events_exchange, "status.running", b"this is not json")
    await broker.publish(
        names.events_exchange,
        "status.running",
        b'{"job_id": "../etc", "state": "running", "model": {"name": "echo"}}',
    )
    await send(broker, report(job_id, RUNNING))
    [event] = await next_events(events, 1)
    assert event.subject == job_id and event.data.state is RUNNING

    channel = await broker.connection.channel()
    bodies = await take(channel, names.dead_letter_queue, 2)
    await channel.close()
    assert bodies[0] == b"this is not json"
    assert b"../etc" in bodies[1]
    assert "Invalid JSON" in caplog.text
    assert "job_id" in caplog.text
    assert (rejected("status", "not-json"), rejected("status", "invalid")) == (
        before[0] + 1,
        before[1] + 1,
    )


async def test_a_storage_outage_is_retried_without_losing_the_report(
    config, broker, storage, events, job_id
):
    failures = 2

    class FlakyStorage(Storage):
        async def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
            nonlocal failures
            if failures:
                failures -= 1
                raise ConnectionError("store unreachable")
            await super().put_bytes(key, data, content_type)

    notifier = Notifier(config, broker, FlakyStorage(config.storage), retry_delay=0.05)
    await notifier.start()
    try:
        await send(broker, report(job_id, DONE))
        [event] = await next_events(events, 1)
    finally:
        await notifier.stop()
    assert failures == 0 and event.data.state is DONE
    assert (await stored_status(storage, job_id)).state is DONE
    await assert_quiet(broker, events)


async def test_only_a_final_status_is_stored(broker, storage, notifier, lookup, events, job_id):
    await send(broker, report(job_id, ACCEPTED), report(job_id, QUEUED, t=1))
    await send(broker, report(job_id, RUNNING, t=2, sheep_id="gpu-1"))
    await next_events(events, 3)
    with pytest.raises(ObjectMissing):
        await stored_status(storage, job_id)
    running = await wait_for_state(lookup, job_id, RUNNING)
    assert running.enqueued_at == T0 + timedelta(seconds=1) and running.sheep_id == "gpu-1"

    await send(broker, report(job_id, DONE, t=3, sheep_id="gpu-1"))
    [done] = await next_events(events, 1)
    assert await stored_status(storage, job_id) == done.data
    assert await lookup.status(job_id) == done.data


async def wait_for_state(lookup: StatusLookup, job_id: str, state: JobState) -> JobStatus:
    """The lookup's answer once it has read the events up to ``state``."""

    async def answer() -> JobStatus | None:
        status = await lookup.status(job_id)
        return status if status is not None and status.state is state else None

    return await eventually(answer, within=10)


async def test_a_restarted_notifier_continues_from_its_snapshot(
    config, names, broker, storage, events, job_id
):
    """Stopping writes a snapshot of the statuses of the jobs that have not ended; the next
    notifier starts from it (and the events published since)."""
    first = Notifier(config, broker, storage)
    await first.start()
    await send(broker, report(job_id, ACCEPTED), report(job_id, QUEUED, t=1))
    await next_events(events, 2)
    await first.stop()
    snapshot = LiveSnapshot.model_validate_json(
        await storage.get_bytes(live_snapshot_key(names.namespace))
    )
    assert [s.state for s in snapshot.statuses if s.job_id == job_id] == [QUEUED]

    second = Notifier(config, broker, storage)
    await second.start()
    try:
        await send(broker, report(job_id, ACCEPTED), report(job_id, RUNNING, t=2))
        [event] = await next_events(events, 1)
    finally:
        await second.stop()
    assert event.data.state is RUNNING and event.data.enqueued_at == T0 + timedelta(seconds=1)


async def test_a_notifier_killed_before_its_snapshot_is_replayed_from_the_event_history(
    config, names, broker, storage, events, job_id
):
    """The statuses of jobs that have not ended are nowhere in the store: a notifier that
    dies leaves the events it published, and the next one replays them."""
    first = Notifier(config, broker, storage)
    await first.start()
    await send(broker, report(job_id, QUEUED, t=1), report(job_id, RUNNING, t=2, sheep_id="a"))
    await next_events(events, 2)
    await first.stop()
    # As if the notifier had died before its snapshot: an older one is found, from before
    # the job ran (the start of the history, here).
    stale = LiveSnapshot(
        taken_at=datetime.now(UTC), offset=0, statuses=[report_status(job_id, QUEUED)]
    )
    await storage.put_bytes(live_snapshot_key(names.namespace), stale.model_dump_json().encode())
    second = Notifier(config, broker, storage)
    await second.start()
    try:
        await send(broker, report(job_id, None, t=3, progress=Progress(fraction=0.5)))
        [event] = await next_events(events, 1)
    finally:
        await second.stop()
    assert event.type == "io.shepherd.job.progress"
    assert event.data.state is RUNNING and event.data.sheep_id == "a"
    assert event.data.enqueued_at == T0 + timedelta(seconds=1)


async def test_a_snapshot_of_another_history_means_replaying_all_of_this_one(
    config, names, broker, storage, events, job_id
):
    """A snapshot whose offset lies past the end of the stream (deleted and declared again
    since) cannot be continued: the whole history is replayed instead of waiting forever."""
    first = Notifier(config, broker, storage)
    await first.start()
    await send(broker, report(job_id, QUEUED, t=1), report(job_id, RUNNING, t=2, sheep_id="a"))
    await next_events(events, 2)
    await first.stop()
    other = LiveSnapshot(taken_at=datetime.now(UTC), offset=10**9, statuses=[])
    await storage.put_bytes(live_snapshot_key(names.namespace), other.model_dump_json().encode())
    second = Notifier(config, broker, storage)
    await second.start()
    try:
        await send(broker, report(job_id, DONE, t=3, sheep_id="a"))
        [event] = await next_events(events, 1)
    finally:
        await second.stop()
    assert event.data.state is DONE and event.data.started_at == T0 + timedelta(seconds=2)


def report_status(job_id: str, state: JobState) -> JobStatus:
    return JobStatus(job_id=job_id, state=state, model=MODEL)


async def test_stop_cancels_the_consumer_and_leaves_new_reports_queued(
    broker, names, notifier, job_id
):
    await notifier.stop()
    await send(broker, report(job_id, ACCEPTED))
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(names.status_queue, passive=True)
    await channel.close()
    assert queue.declaration_result.consumer_count == 0
    assert queue.declaration_result.message_count == 1


async def test_wait_terminal_wakes_on_the_event(broker, events, notifier, lookup, job_id):
    await send(broker, report(job_id, QUEUED), report(job_id, RUNNING, t=1))
    await next_events(events, 2)
    await wait_for_state(lookup, job_id, RUNNING)  # the lookup has read the events too
    waiting = asyncio.create_task(lookup.wait_terminal(job_id, timeout=20))
    await parked(lookup, job_id)
    assert not waiting.done()
    sent = time.monotonic()
    await send(broker, report(job_id, DONE, t=2))
    status = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - sent < 2
    assert status is not None and status.state is DONE


async def test_wait_terminal_returns_at_once_for_a_terminal_or_unknown_job(
    broker, events, notifier, lookup, job_id
):
    await send(broker, report(job_id, DONE))
    await next_events(events, 1)
    started = time.monotonic()
    status = await lookup.wait_terminal(job_id, timeout=10)
    assert status is not None and status.state is DONE
    assert await lookup.wait_terminal("unknown-" + job_id, timeout=10) is None
    assert time.monotonic() - started < 1


async def test_wait_terminal_returns_the_current_status_after_the_timeout(
    broker, events, notifier, lookup, job_id
):
    await send(broker, report(job_id, RUNNING))
    await wait_for_state(lookup, job_id, RUNNING)  # the lookup has read the event
    started = time.monotonic()
    status = await lookup.wait_terminal(job_id, timeout=0.5)
    elapsed = time.monotonic() - started
    assert status is not None and status.state is RUNNING
    assert 0.5 <= elapsed < 2


async def test_lookup_stop_releases_waiters(
    config, names, broker, storage, events, notifier, job_id
):
    lookup = StatusLookup(storage, EventHistory(config.broker, names), names.namespace)
    await lookup.start()
    await send(broker, report(job_id, RUNNING))
    await next_events(events, 1)
    await wait_for_state(lookup, job_id, RUNNING)  # the lookup has read the event too
    waiting = asyncio.create_task(lookup.wait_terminal(job_id, timeout=30))
    await parked(lookup, job_id)
    await lookup.stop()
    status = await asyncio.wait_for(waiting, 5)
    assert status is not None and status.state is RUNNING


async def write_spec(storage: Storage, job_id: str, inputs: list[str] | None) -> None:
    spec = JobSpec(
        job_id=job_id,
        model=MODEL,
        sheep_id="gpu-1",
        inputs=inputs,
        request_digest="0" * 64,
        declared_at=T0,
    )
    await storage.put_bytes(job_key(job_id), spec.model_dump_json().encode(), "application/json")


async def test_lookup_of_a_job_with_only_job_json_is_accepted_with_missing_inputs(
    storage, lookup, job_id
):
    await write_spec(storage, job_id, ["a.bin", "dir/b.bin", "input.json"])
    await storage.put_bytes(f"{job_id}/inputs/a.bin", b"a")
    await storage.put_bytes(f"{job_id}/inputs/other.bin", b"o")
    with pytest.raises(ObjectMissing):
        await storage.get_bytes(status_key(job_id))
    status = await lookup.status(job_id)
    assert status == JobStatus(
        job_id=job_id,
        state=ACCEPTED,
        model=MODEL,
        sheep_id="gpu-1",
        accepted_at=T0,
        missing_inputs=["dir/b.bin", "input.json"],
    )


async def test_lookup_fills_missing_inputs_of_an_accepted_status_json(
    broker, storage, events, notifier, lookup, job_id
):
    await write_spec(storage, job_id, ["x.txt"])
    await send(broker, report(job_id, ACCEPTED))
    await next_events(events, 1)
    status = await lookup.status(job_id)
    assert status is not None and status.missing_inputs == ["x.txt"]
    await storage.put_bytes(f"{job_id}/inputs/x.txt", b"x")
    status = await lookup.status(job_id)
    assert status is not None and status.missing_inputs == []


async def test_lookup_of_an_unknown_job_is_none(lookup, job_id):
    assert await lookup.status(job_id) is None


@pytest.fixture
async def client(lookup: StatusLookup) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=routes(lookup), exception_handlers={Problem: problem_handler})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def test_status_and_ready_routes(broker, events, notifier, client, job_id):
    response = await client.get(f"/jobs/{job_id}/status")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert job_id in response.json()["detail"]

    await send(broker, report(job_id, RUNNING, sheep_id="gpu-1"))
    [event] = await next_events(events, 1)

    async def known() -> httpx.Response | None:  # the lookups read the events after us
        response = await client.get(f"/jobs/{job_id}/status")
        return response if response.status_code == 200 else None

    response = await eventually(known, within=5)
    assert response.json() == event.data.model_dump(mode="json")
    response = await client.get(f"/jobs/{job_id}/ready")
    assert response.json() == {"ready": False, "state": "running"}

    await send(broker, report(job_id, DONE, t=1))
    await next_events(events, 1)
    response = await client.get(f"/jobs/{job_id}/ready")
    assert response.json() == {"ready": True, "state": "done"}


@pytest.mark.parametrize("bad", ["-starts-with-dash", "has%20space", "x" * 129, "%2E%2E"])
@pytest.mark.parametrize("route", ["status", "ready", "wait_ready"])
async def test_invalid_job_ids_are_refused(client, bad, route):
    response = await client.get(f"/jobs/{bad}/{route}")
    assert response.status_code == 400
    body = response.json()
    assert response.headers["content-type"] == PROBLEM_JSON
    assert body["status"] == 400 and body["errors"][0]["field"] == "job_id"


async def test_wait_ready_long_polls(broker, events, notifier, lookup, client, job_id):
    response = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": "0.2"})
    assert response.status_code == 404

    await send(broker, report(job_id, RUNNING))
    await next_events(events, 1)

    async def known() -> bool:  # the gateway's lookups read the events after us
        return (await client.get(f"/jobs/{job_id}/status")).status_code == 200

    await eventually(known, within=5)
    started = time.monotonic()
    response = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": "0.3"})
    assert response.status_code == 202 and response.json()["state"] == "running"
    assert time.monotonic() - started >= 0.3

    waiting = asyncio.create_task(client.get(f"/jobs/{job_id}/wait_ready"))
    await parked(lookup, job_id)
    sent = time.monotonic()
    await send(broker, report(job_id, DONE, t=1))
    response = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - sent < 2
    assert response.status_code == 200 and response.json()["state"] == "done"


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
async def test_wait_ready_refuses_an_invalid_timeout(client, job_id, value):
    response = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": value})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "timeout"


GATEWAY_CANCEL = {"error": ErrorInfo(type="Cancelled", message="cancelled by request")}
SHEEP_CANCEL = {
    "sheep_id": "gpu-1",
    "error": ErrorInfo(type="Cancelled", message="cancelled on sheep gpu-1"),
    "usage": Usage(wall_seconds=1.5, input_bytes=10, output_bytes=0),
}


async def test_a_running_job_cancelled_ends_with_its_sheeps_report_and_usage(
    broker, events, notifier, job_id
):
    await send(broker, report(job_id, RUNNING, t=1, sheep_id="gpu-1"))
    await next_events(events, 1)
    await send(broker, report(job_id, CANCELLED, t=2, **GATEWAY_CANCEL))
    await send(broker, report(job_id, CANCELLED, t=3, **SHEEP_CANCEL))
    (cancelled,) = await next_events(events, 1)
    assert cancelled.data.error.message == "cancelled on sheep gpu-1"
    assert cancelled.data.usage == SHEEP_CANCEL["usage"]
    await assert_quiet(broker, events)  # one job.cancelled, not two


async def test_a_running_job_whose_sheep_is_gone_is_cancelled_after_the_wait(
    config, broker, storage, events, job_id
):
    notifier = Notifier(config, broker, storage, cancel_report_wait=0.5)
    await notifier.start()
    try:
        await send(broker, report(job_id, RUNNING, t=1, sheep_id="gpu-1"))
        await next_events(events, 1)
        await send(broker, report(job_id, CANCELLED, t=2, **GATEWAY_CANCEL))
        (cancelled,) = await next_events(events, 1)
    finally:
        await notifier.stop()
    assert cancelled.data.error.message == "cancelled by request"
    assert cancelled.data.usage is None
