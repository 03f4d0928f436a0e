"""Every transition of a job run end to end reaches AMQP subscribers as a CloudEvent, progress
included, and progress reaches the job's status too."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import pytest
from aio_pika.abc import AbstractIncomingMessage
from minio.error import S3Error

from schemas.events import CLOUDEVENT_TYPE_PREFIX, CLOUDEVENTS_CONTENT_TYPE
from schemas.status import JobStatus
from tests.support.polling import eventually

WAIT = 30


async def until_terminal(messages: asyncio.Queue[AbstractIncomingMessage], job_id: str) -> list:
    """The job's messages, in order, up to its terminal event."""
    seen = []
    async with asyncio.timeout(WAIT):
        while True:
            message = await messages.get()
            if json.loads(message.body)["subject"] != job_id:
                continue
            seen.append(message)
            if message.routing_key in {"job.done", "job.failed", "job.cancelled"}:
                return seen


def sleep_job(job_id: str, seconds: float) -> dict:
    return {
        "job_id": job_id,
        "model": {"name": "sleep", "version": "1"},
        "payload": {"seconds": seconds, "value": "late"},
    }


async def test_each_transition_is_a_cloudevent_on_the_events_exchange(
    stack, subscriber, names, job_id
):
    assert (await stack.post("/start-job", json=sleep_job(job_id, 2))).status_code == 202
    messages = await until_terminal(subscriber, job_id)

    kinds = [m.routing_key.removeprefix("job.") for m in messages]
    assert kinds[:3] == ["accepted", "queued", "running"], kinds
    assert kinds[-1] == "done", kinds
    assert set(kinds[3:-1]) == {"progress"}, kinds
    ids = set()
    for message, kind in zip(messages, kinds, strict=True):
        assert message.content_type == CLOUDEVENTS_CONTENT_TYPE
        event = json.loads(message.body)
        assert event["specversion"] == "1.0"
        assert event["id"] and event["id"] == message.message_id
        ids.add(event["id"])
        assert event["source"] == f"/{names.namespace}/notifier"
        assert event["type"] == CLOUDEVENT_TYPE_PREFIX + kind
        assert event["subject"] == job_id
        assert datetime.fromisoformat(event["time"]).tzinfo is not None
        assert event["datacontenttype"] == "application/json"
        status = JobStatus.model_validate(event["data"])
        assert status.job_id == job_id
        assert status.state.value == ("running" if kind == "progress" else kind)
    assert len(ids) == len(messages), "event ids are unique"

    progress = [
        json.loads(m.body)["data"]["progress"] for m in messages if m.routing_key == "job.progress"
    ]
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, progress
    assert progress[-1]["message"] == "awake"
    done = JobStatus.model_validate(json.loads(messages[-1].body)["data"])
    assert done.progress is None and done.finished_at is not None


async def test_progress_reaches_the_status_while_the_job_runs(
    stack, subscriber, minio_client, test_bucket, job_id
):
    assert (await stack.post("/start-job", json=sleep_job(job_id, 3))).status_code == 202
    async with asyncio.timeout(WAIT):
        while True:
            message = await subscriber.get()
            event = json.loads(message.body)
            if event["subject"] == job_id and message.routing_key == "job.progress":
                break
    # The gateway follows the same events: its answer catches up with the one just read.
    # Nothing is stored until the job ends.

    async def caught_up() -> dict | None:
        status = (await stack.get(f"/jobs/{job_id}/status")).json()
        return status if status.get("progress") == event["data"]["progress"] else None

    status = await eventually(caught_up, within=5)
    assert status == event["data"]
    assert status["state"] == "running"
    assert 0 <= status["progress"]["fraction"] < 1
    assert status["progress"]["message"].startswith("slept")
    with pytest.raises(S3Error, match="NoSuchKey"):
        await asyncio.to_thread(minio_client.stat_object, test_bucket, f"{job_id}/status.json")


async def test_a_failure_and_a_cancellation_are_cloudevents_too(stack, subscriber, job_id):
    failing, waiting = f"{job_id}-fails", f"{job_id}-waits"
    fail_job = {"job_id": failing, "model": {"name": "fail", "version": "1"}, "payload": {}}
    assert (await stack.post("/start-job", json=fail_job)).status_code == 202
    failed = await until_terminal(subscriber, failing)
    assert [m.routing_key for m in failed][-1] == "job.failed"
    event = json.loads(failed[-1].body)
    assert event["type"] == CLOUDEVENT_TYPE_PREFIX + "failed"
    error = JobStatus.model_validate(event["data"]).error
    assert error is not None and (error.type, error.message) == ("ValueError", "requested failure")

    # Declared inputs that never arrive keep the job accepted until it is cancelled.
    echo_job = {"job_id": waiting, "model": {"name": "echo", "version": "1"}, "inputs": ["a"]}
    assert (await stack.post("/start-job", json=echo_job)).status_code == 202
    assert (await stack.post(f"/jobs/{waiting}/cancel")).status_code == 202
    cancelled = await until_terminal(subscriber, waiting)
    assert [m.routing_key for m in cancelled] == ["job.accepted", "job.cancelled"]
    event = json.loads(cancelled[-1].body)
    assert (event["type"], event["subject"]) == (CLOUDEVENT_TYPE_PREFIX + "cancelled", waiting)
    assert JobStatus.model_validate(event["data"]).state.value == "cancelled"
