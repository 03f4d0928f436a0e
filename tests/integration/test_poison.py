"""Poison input on every queue Shepherd consumes, against the real RabbitMQ and MinIO: it is
dead-lettered, or dropped with a log line, and counted; the consumer goes on with the next
message. (The status queue's case is in test_notifier.py, the job queues' in test_sheep.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from schemas.config import Config
from schemas.events import JobEvent, SheepState, StatusReport
from schemas.job import JobDispatch, JobRequest, JobSpec, ModelRef
from schemas.layout import status_key
from schemas.status import JobState, JobStatus
from services.common.broker import Broker
from services.common.consumer import Outcome, QueueConsumer
from services.common.history import EventHistory
from services.common.lookup import StatusLookup
from services.common.storage import Storage
from services.gateway.fleet import Fleet
from services.gateway.intake import Intake
from services.gateway.uploads import UploadListener
from services.notifier.gave_up import GaveUpListener
from services.sheep.cancellations import Cancellations
from tests.support.metrics import rejected
from tests.support.polling import eventually, take
from tests.support.stack import bare_sheep

WAIT = 10.0
MODEL = ModelRef(name="echo", version="1")


@pytest.fixture
def storage(config: Config) -> Storage:
    return Storage(config.storage)


@pytest.fixture
async def channel(broker: Broker) -> AsyncIterator[AbstractChannel]:
    channel = await broker.connection.channel()
    yield channel
    await channel.close()


@pytest.fixture
async def uploads(config: Config, broker: Broker, storage: Storage) -> AsyncIterator[None]:
    listener = UploadListener(Intake(config, broker, storage), config.storage.bucket)
    await listener.start()
    yield
    await listener.stop()


async def send_to_queue(channel: AbstractChannel, queue: str, *bodies: bytes) -> None:
    """Straight into one queue (the default exchange), not to every namespace's."""
    for body in bodies:
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)


async def assert_empty(channel: AbstractChannel, queue_name: str) -> None:
    queue = await channel.declare_queue(queue_name, passive=True)
    assert queue.declaration_result.message_count == 0


def s3_event(bucket: str, key: str, event: str = "s3:ObjectCreated:Put") -> bytes:
    record = {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
    return json.dumps({"Records": [record]}).encode()


async def upload_queues_a_job(
    config: Config, broker: Broker, storage: Storage, channel: AbstractChannel, job_id: str
) -> None:
    """A job waiting for its input is queued once the input is uploaded: the listener works."""
    intake = Intake(config, broker, storage)
    declared = await intake.declare(
        JobRequest(job_id=job_id, model=MODEL, inputs=["input.json"]), "http"
    )
    assert not declared.queued
    await storage.put_bytes(f"{job_id}/inputs/input.json", b"{}", "application/json")
    [body] = await take(channel, broker.names.pool_queue, 1)
    assert JobDispatch.model_validate_json(body).job.job_id == job_id


GARBAGE = {
    "not-json": [b"not json", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000, b""],
    "invalid": [b"[1, 2]", b'{"Records": []}', b'{"Records": [{"s3": {}}]}', b'{"x": 1}'],
}


async def test_garbage_on_the_inputs_queue_is_dead_lettered_and_uploads_still_queue_jobs(
    config, broker, storage, channel, names, uploads, job_id, caplog
):
    caplog.set_level(logging.WARNING, logger="services.gateway.uploads")
    before = {reason: rejected("inputs", reason) for reason in GARBAGE}
    garbage = [body for bodies in GARBAGE.values() for body in bodies]

    await send_to_queue(channel, names.inputs_queue, *garbage)
    await upload_queues_a_job(config, broker, storage, channel, job_id)

    assert sorted(await take(channel, names.dead_letter_queue, len(garbage))) == sorted(garbage)
    for reason, bodies in GARBAGE.items():
        assert rejected("inputs", reason) == before[reason] + len(bodies)
    assert "not an S3 notification: (root): Invalid JSON" in caplog.text
    assert "Records: List should have at least 1 item" in caplog.text


async def test_s3_events_shepherd_cannot_use_are_counted_and_ignored(
    config, broker, storage, channel, names, uploads, job_id, caplog
):
    caplog.set_level(logging.DEBUG, logger="services.gateway.uploads")
    bucket = config.storage.bucket
    outside = ["notajob", "x/unknown/file", "../a", "j1/inputs/../../b", "%2E%2E/inputs/x", "j1/"]
    ignored = {
        "outside-layout": [s3_event(bucket, key) for key in outside],
        "other-bucket": [s3_event("another-bucket", f"{job_id}/inputs/input.json")],
        "not-created": [s3_event(bucket, f"{job_id}/inputs/input.json", "s3:ObjectRemoved:Delete")],
    }
    before = {reason: rejected("inputs", reason) for reason in ignored}

    await send_to_queue(channel, names.inputs_queue, *(b for bs in ignored.values() for b in bs))
    await upload_queues_a_job(config, broker, storage, channel, job_id)

    for reason, events in ignored.items():  # other buckets' real events may count as well
        assert rejected("inputs", reason) >= before[reason] + len(events)
    await assert_empty(channel, names.dead_letter_queue)
    for key in ("notajob", "x/unknown/file", "../a", "j1/inputs/../../b", "j1/"):
        assert f"ignoring an event of {key!r}, a key outside the layout" in caplog.text
    assert "ignoring an event of bucket another-bucket" in caplog.text
    assert f"ignoring s3:ObjectRemoved:Delete of {job_id}/inputs/input.json" in caplog.text


async def test_malformed_sheep_announcements_are_dropped_and_the_fleet_still_reports(
    config, broker, names, caplog
):
    caplog.set_level(logging.WARNING, logger="services.gateway.fleet")
    config.sheep = {"s1": bare_sheep()}
    fleet = Fleet(config, broker)
    await fleet.start()
    valid = SheepState(sheep_id="s1", kind="bare", runner_alive=True, interval=5)
    bad = {
        "not-json": [b"not json", b"\xff"],
        "invalid": [
            b'{"sheep_id": "../s1", "kind": "bare", "runner_alive": true, "interval": 5}',
            # A naive time or an infinite interval would break the "alive" arithmetic.
            valid.model_dump_json().replace('Z"', '"').encode(),
            valid.model_dump_json().replace('"interval":5.0', '"interval":Infinity').encode(),
        ],
    }
    before = {reason: rejected("sheep-state", reason) for reason in bad}
    try:
        for body in (b for bs in bad.values() for b in bs):
            await broker.publish(names.events_exchange, "sheep.s1", body)
        await broker.publish(names.events_exchange, valid.routing_key, valid)

        async def alive() -> bool:  # announcements are handled in order
            return (await fleet.report())["sheep"]["s1"]["alive"]

        await eventually(alive, within=WAIT)
        assert fleet.states["s1"] == valid
    finally:
        await fleet.stop()
    for reason, bodies in bad.items():
        assert rejected("sheep-state", reason) == before[reason] + len(bodies)
    assert caplog.text.count("ignoring a malformed sheep announcement") == 5
    assert "time: Input should have timezone info" in caplog.text


async def test_malformed_job_events_are_dropped_and_waiters_still_wake(
    config, broker, storage, names, job_id, caplog
):
    caplog.set_level(logging.WARNING, logger="services.common.lookup")
    running = JobStatus(job_id=job_id, state=JobState.RUNNING, model=MODEL)
    await storage.put_bytes(
        status_key(job_id), running.model_dump_json().encode(), "application/json"
    )
    lookup = StatusLookup(storage, EventHistory(config.broker, names), names.namespace)
    await lookup.start()
    before = rejected("job-events", "not-json"), rejected("job-events", "invalid")
    try:
        waiting = asyncio.create_task(lookup.wait_terminal(job_id, timeout=WAIT))

        async def parked() -> bool:
            return lookup.waiting(job_id) == 1

        await eventually(parked, within=WAIT)
        await broker.publish(names.events_exchange, "job.done", b"not json")
        await broker.publish(names.events_exchange, "job.done", b'{"subject": "../x"}')
        done = running.model_copy(update={"state": JobState.DONE})
        await broker.publish(names.events_exchange, "job.done", JobEvent.of(done, "/test/notifier"))
        assert await waiting == done
    finally:
        await lookup.stop()
    assert (rejected("job-events", "not-json"), rejected("job-events", "invalid")) == (
        before[0] + 1,
        before[1] + 1,
    )
    assert caplog.text.count("ignoring job event (routing key job.done)") == 2


async def test_garbage_on_the_gave_up_queue_is_dropped_and_jobs_given_up_still_fail(
    config, broker, channel, names, job_id, caplog
):
    caplog.set_level(logging.WARNING, logger="services.notifier.gave_up")
    failures = await channel.declare_queue(exclusive=True)
    await failures.bind(names.events_exchange, "status.failed")
    listener = GaveUpListener(config, broker)
    await listener.start()
    now = datetime.now(UTC)
    spec = JobSpec(job_id=job_id, model=MODEL, request_digest="0" * 64, declared_at=now)
    try:
        await send_to_queue(channel, names.gave_up_queue, b"not json", b'{"job": {}}')
        await send_to_queue(
            channel,
            names.gave_up_queue,
            JobDispatch(job=spec, queued_at=now).model_dump_json().encode(),
        )
        [body] = await take(channel, failures.name, 1)
    finally:
        await listener.stop()
    assert StatusReport.model_validate_json(body).job_id == job_id
    assert caplog.text.count("dropping an unreadable dead-lettered job") == 2


async def test_garbage_cancellation_reports_are_dropped_and_the_next_is_heard(
    broker, storage, names, job_id, caplog
):
    caplog.set_level(logging.WARNING, logger="services.sheep.cancellations")
    cancellations = Cancellations(broker)
    await cancellations.start()
    try:
        cancelled = cancellations.watch(job_id)
        for body in (b"not json", b'{"job_id": "../x", "state": "cancelled"}'):
            await broker.publish(names.events_exchange, "status.cancelled", body)
        report = StatusReport(job_id=job_id, model=MODEL, state=JobState.CANCELLED)
        await broker.publish(names.events_exchange, report.routing_key, report)
        await asyncio.wait_for(cancelled.wait(), WAIT)
    finally:
        await cancellations.stop()
    assert caplog.text.count("ignoring an invalid cancellation report") == 2


async def test_a_handler_that_raises_has_its_message_dead_lettered_and_consuming_goes_on(
    broker, channel, names, caplog
):
    handled: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(message: AbstractIncomingMessage) -> Outcome:
        if message.body == b"poison":
            raise RuntimeError("cannot handle this")
        handled.put_nowait(message.body)
        return "ack"

    before = rejected("submit", "error")
    consumer = QueueConsumer(broker, names.submit_queue, handler, source="submit", prefetch=1)
    await consumer.start()
    try:
        await send_to_queue(channel, names.submit_queue, b"poison", b"fine")
        assert await asyncio.wait_for(handled.get(), WAIT) == b"fine"
        assert await take(channel, names.dead_letter_queue, 1) == [b"poison"]
    finally:
        await consumer.stop()
    assert rejected("submit", "error") == before + 1
    assert "handler for " + names.submit_queue + " failed; dead-lettering" in caplog.text
