"""Submissions without a job id get one from Shepherd, over HTTP and AMQP, and stay
repeatable through an idempotency key: a repeat names the same job, a different request under
the same key is a conflict."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from schemas.broker_names import Names
from schemas.config import Config
from schemas.submission import SubmissionReply

ECHO = {"name": "echo", "version": "1"}
SERVER_MADE = re.compile(r"job-[0-9a-f]{32}")


async def wait_done(client, job_id: str) -> dict:
    answer = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_submission_without_a_job_id_gets_a_fresh_one_each_time(stack):
    first = await stack.post("/start-job", json={"model": ECHO, "payload": {"n": 1}})
    second = await stack.post("/start-job", json={"model": ECHO, "payload": {"n": 1}})
    assert (first.status_code, second.status_code) == (202, 202)
    ids = first.json()["job_id"], second.json()["job_id"]
    assert all(SERVER_MADE.fullmatch(job_id) for job_id in ids) and ids[0] != ids[1]
    assert first.headers["location"].endswith(f"/jobs/{ids[0]}/status")
    assert (await wait_done(stack, ids[0]))["state"] == "done"
    assert (await stack.get(f"/jobs/{ids[0]}/result")).json() == {"n": 1}


async def test_an_idempotency_key_makes_a_repeat_name_the_same_job(stack):
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    body = {"model": ECHO, "payload": "a"}
    first = await stack.post("/start-job", json=body, headers=key)
    repeat = await stack.post("/start-job", json=body, headers=key)
    assert (first.status_code, repeat.status_code) == (202, 200)
    job_id = first.json()["job_id"]
    assert SERVER_MADE.fullmatch(job_id) and repeat.json()["job_id"] == job_id
    conflict = await stack.post("/start-job", json={**body, "payload": "b"}, headers=key)
    assert conflict.status_code == 409 and job_id in conflict.json()["detail"]
    other_key = await stack.post("/start-job", json=body, headers={"Idempotency-Key": "other"})
    assert other_key.json()["job_id"] != job_id
    assert (await wait_done(stack, job_id))["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).content == b"a"


async def test_a_clients_own_job_id_wins_over_its_idempotency_key(stack, job_id):
    answer = await stack.post(
        "/start-job",
        json={"job_id": job_id, "model": ECHO},
        headers={"Idempotency-Key": "ignored"},
    )
    assert answer.status_code == 202 and answer.json()["job_id"] == job_id


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "caf\u00e9"])
async def test_a_bad_idempotency_key_is_refused_naming_the_header(stack, key):
    answer = await stack.post(
        "/start-job",
        json={"model": ECHO},
        headers={"Idempotency-Key": key.encode()},
    )
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json()["detail"]


@pytest.fixture
async def channel(stack, config: Config) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(config.broker.url.get_secret_value())
    async with connection:
        yield await connection.channel()


async def submit_over_amqp(
    channel: AbstractChannel, names: Names, body: dict, message_id: str | None
) -> SubmissionReply:
    """Publish a submission naming a reply queue of its own; the gateway's reply."""
    replies = await channel.declare_queue(f"client-{uuid.uuid4().hex[:8]}", exclusive=True)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await replies.consume(arrived.put, no_ack=True)
    exchange = await channel.get_exchange(names.submit_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            json.dumps(body).encode(),
            content_type="application/json",
            message_id=message_id,
            reply_to=replies.name,
            correlation_id="c1",
        ),
        routing_key="",
    )
    async with asyncio.timeout(30):
        reply = await arrived.get()
    return SubmissionReply.model_validate_json(reply.body)


async def test_an_amqp_submission_without_a_job_id_is_named_by_its_message_id(
    stack, channel, names
):
    body = {"model": ECHO, "payload": {"over": "amqp"}}
    message_id = f"msg-{uuid.uuid4()}"
    first = await submit_over_amqp(channel, names, body, message_id)
    again = await submit_over_amqp(channel, names, body, message_id)  # a redelivery, say
    fresh = await submit_over_amqp(channel, names, body, None)
    assert (first.outcome, again.outcome, fresh.outcome) == ("accepted", "repeated", "accepted")
    assert first.job_id is not None and SERVER_MADE.fullmatch(first.job_id)
    assert again.job_id == first.job_id and fresh.job_id not in (None, first.job_id)
    assert (await wait_done(stack, first.job_id))["state"] == "done"
    assert (await stack.get(f"/jobs/{first.job_id}/result")).json() == {"over": "amqp"}
