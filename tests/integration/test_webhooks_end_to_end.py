"""Webhooks through a whole running Shepherd: a job submitted over HTTP and run by a bare sheep
is reported to its callback_url by the notifier role, while a subscriber hangs; and the
gateway refuses callback URLs the SSRF guard would refuse, at submission, and notes those
whose host does not resolve yet."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from schemas.config import NotifierConfig, WebhookSubscription
from schemas.layout import webhook_attempt_key
from schemas.submission import SubmissionReply
from schemas.webhooks import MOST_ATTEMPTS_LISTED, WebhookAttempt
from services.common.storage import Storage
from tests.conftest import serving
from tests.support.polling import eventually
from tests.support.receiver import Receiver, Reply
from tests.support.stack import bare_sheep
from tests.support.webhooks import secret

CALLBACK_SECRET = secret()
HANG = 20.0
"""Seconds the slow subscriber takes to answer (its deliveries time out after as long)."""


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        yield receiver


async def test_a_callback_gets_the_outcome_while_a_subscriber_hangs(
    config, names, receiver, job_id
):
    config.sheep = {"s1": bare_sheep()}
    config.notifier = NotifierConfig(
        webhooks=[
            WebhookSubscription(
                name="slow", url=receiver.url("/slow"), events=["job.#"], secret=secret()
            )
        ],
        callback_secret=SecretStr(CALLBACK_SECRET),
        allow_private_targets=True,
        webhook_timeout=HANG,
    )
    receiver.script("/slow", Reply(200, delay=HANG))
    callback = receiver.url(f"/jobs/{job_id}")
    async with serving(config, names) as client:
        started = time.monotonic()
        request = {
            "job_id": job_id,
            "model": {"name": "echo", "version": "1"},
            "payload": {"x": 1},
            "callback_url": callback,
        }
        assert (await client.post("/start-job", json=request)).status_code == 202
        ready = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})
        took = time.monotonic() - started
        assert ready.status_code == 200 and ready.json()["state"] == "done"

        delivery = await receiver.next(f"/jobs/{job_id}")
        event = Webhook(CALLBACK_SECRET).verify(delivery.body, delivery.headers)
        assert event["type"] == "io.shepherd.job.done"
        assert event["subject"] == job_id
        assert event["data"]["state"] == "done"
        await receiver.silent(f"/jobs/{job_id}", 0.5)  # terminal events only

        slow = receiver.to("/slow")  # deliveries run concurrently: in no particular order
        assert "io.shepherd.job.accepted" in {json.loads(d.body)["type"] for d in slow}
        first_slow = min(slow, key=lambda d: d.at)
        # Neither the status nor the callback waited for the subscriber, still hanging.
        assert took < HANG / 2, took
        assert delivery.at - first_slow.at < HANG / 2


async def test_each_delivery_attempt_is_listed_with_the_job(config, names, receiver, job_id):
    config.sheep = {"s1": bare_sheep()}
    config.notifier = NotifierConfig(
        webhooks=[
            WebhookSubscription(
                name="flaky",
                url=receiver.url("/flaky?token=hidden"),
                events=["job.done"],
                secret=secret(),
            )
        ],
        allow_private_targets=True,
        webhook_retry_schedule=[0.2],
    )
    receiver.script("/flaky", Reply(503), Reply(204))
    async with serving(config, names) as client:
        request = {"job_id": job_id, "model": {"name": "echo", "version": "1"}, "payload": 1}
        assert (await client.post("/start-job", json=request)).status_code == 202
        await receiver.next("/flaky")
        await receiver.next("/flaky")

        async def both_recorded() -> list[dict]:
            answer = await client.get(f"/jobs/{job_id}/webhooks")
            assert answer.status_code == 200, answer.text
            attempts = answer.json()["attempts"]
            return attempts if len(attempts) == 2 else []

        first, second = await eventually(both_recorded, within=10)
        outcome = ("attempt", "outcome", "status_code")
        assert [first[k] for k in outcome] == [1, "retrying", 503]
        assert first["detail"].startswith("HTTP 503; next attempt in")
        assert [second[k] for k in outcome] == [2, "delivered", 204]
        for attempt in (first, second):
            assert attempt["subscription"] == "flaky"
            assert attempt["event_type"] == "io.shepherd.job.done"
            assert attempt["url"] == receiver.url("")  # its origin: a path may be a secret
            assert "hidden" not in json.dumps(attempt) and "flaky" not in attempt["url"]
        assert first["webhook_id"] == second["webhook_id"]
        assert (await client.get("/jobs/job-unknown/webhooks")).status_code == 404

        # Past the most listed (a subscription to every progress report), the latest ones.
        storage = Storage(config.storage)
        older = WebhookAttempt.model_validate(first)
        await asyncio.gather(
            *(
                storage.put_bytes(
                    webhook_attempt_key(job_id, "msg_older", n),
                    older.model_copy(update={"attempt": n, "webhook_id": "msg_older"})
                    .model_dump_json()
                    .encode(),
                )
                for n in range(1, MOST_ATTEMPTS_LISTED)
            )
        )
        listed = (await client.get(f"/jobs/{job_id}/webhooks")).json()
        assert listed["truncated"] is True and len(listed["attempts"]) == MOST_ATTEMPTS_LISTED
        assert second in listed["attempts"] and first not in listed["attempts"]  # oldest out


REFUSED = {
    "http://127.0.0.1:8080/hook": "loopback",
    "http://localhost/hook": "loopback",
    "http://[::1]/hook": "loopback",
    "http://[::ffff:127.0.0.1]/hook": "loopback",
    "http://2130706433/hook": "loopback",  # 127.0.0.1 as a number
    "http://169.254.169.254/latest/meta-data": "link-local",
    "http://10.0.0.7/hook": "private",
    "http://0.0.0.0:5000/": "unspecified",
    "http://224.0.0.1/": "multicast",
}


async def test_the_gateway_refuses_callback_urls_the_guard_would_refuse(config, names, job_id):
    config.notifier = NotifierConfig(callback_secret=SecretStr(CALLBACK_SECRET))
    async with serving(config, names) as client:
        for url, kind in REFUSED.items():
            request = {"job_id": job_id, "model": {"name": "echo"}, "callback_url": url}
            answer = await client.post("/start-job", json=request)
            assert answer.status_code == 422, (url, answer.text)
            problem = answer.json()
            assert problem["errors"][0]["field"] == "callback_url", url
            assert kind in problem["detail"], (url, problem["detail"])
            assert "allow_private_targets" in problem["detail"]
        assert (await client.get(f"/jobs/{job_id}/status")).status_code == 404


async def test_a_callback_host_that_does_not_resolve_is_accepted_with_a_note(config, names, job_id):
    """``.invalid`` never resolves (RFC 2606): the job is accepted, and the submitter is told
    over HTTP and over AMQP, since every delivery resolves and checks the host again."""
    config.notifier = NotifierConfig(callback_secret=SecretStr(CALLBACK_SECRET))
    callback = "http://hooks.example.invalid/done"
    async with serving(config, names) as client:
        request = {"job_id": job_id, "model": {"name": "echo"}, "callback_url": callback}
        answer = await client.post("/start-job", json=request)
        assert answer.status_code == 202, answer.text
        [note] = answer.json()["notes"]
        assert "hooks.example.invalid does not resolve now" in note

        async with await aio_pika.connect(config.broker.url.get_secret_value()) as connection:
            channel = await connection.channel()
            replies = await channel.declare_queue(exclusive=True)
            submit = await channel.get_exchange(names.submit_exchange)
            request["job_id"] = f"{job_id}-amqp"
            body = json.dumps(request).encode()
            await submit.publish(aio_pika.Message(body, reply_to=replies.name), "")
            async with asyncio.timeout(15), replies.iterator() as arrived:
                reply = SubmissionReply.model_validate_json((await anext(arrived)).body)
        assert reply.outcome == "accepted"
        [amqp_note] = reply.notes
        assert "hooks.example.invalid does not resolve now" in amqp_note
