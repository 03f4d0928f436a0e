"""Jobs submitted straight to AMQP by a publisher that is not Python: Debian's ``amqp-publish``
(amqp-tools, C), against the real stack. Accepted, repeated, conflicting and garbage
submissions each get their outcome, refused ones a dead letter with the reason in a header
and a ``job.rejected`` event, and the consumer keeps going through all of them."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from schemas.broker_names import Names
from schemas.config import Config
from schemas.events import CLOUDEVENTS_CONTENT_TYPE, JobEvent, JobRejectedEvent
from schemas.submission import (
    DEAD_LETTER_KEY,
    REJECTION_DETAIL_HEADER,
    REJECTION_HEADER,
    SubmissionReply,
)
from tests.conftest import delete_namespace
from tests.support.metrics import rejected
from tests.support.polling import eventually
from tests.support.requirements import missing
from tests.support.stack import bare_sheep, running_stack


@pytest.fixture(autouse=True)
def _amqp_publish() -> None:
    if shutil.which("amqp-publish") is None:
        missing("amqp-publish is missing: apt-get install amqp-tools (make services does)")


WAIT = 30.0


@pytest.fixture
async def channel(stack, config: Config) -> AsyncIterator[AbstractChannel]:
    """A client of our own, once the stack has declared the topology."""
    connection = await aio_pika.connect(config.broker.url.get_secret_value())
    async with connection:
        yield await connection.channel()


@dataclass
class Inbox:
    """An exclusive queue and what arrived on it."""

    name: str
    messages: asyncio.Queue[AbstractIncomingMessage] = field(default_factory=asyncio.Queue)

    async def next(self) -> AbstractIncomingMessage:
        async with asyncio.timeout(WAIT):
            return await self.messages.get()


async def inbox(channel: AbstractChannel, bind: tuple[str, str] | None = None) -> Inbox:
    """A queue whose name is outside every Shepherd namespace (replies are never sent into
    those), bound to ``(exchange, routing key)`` if given."""
    queue = await channel.declare_queue(f"client-{uuid.uuid4().hex[:8]}", exclusive=True)
    if bind:
        await queue.bind(*bind)
    box = Inbox(queue.name)
    await queue.consume(box.messages.put, no_ack=True)
    return box


@dataclass
class Events:
    """Every ``job.#`` event, as a subscriber sees them."""

    box: Inbox
    seen: list[dict] = field(default_factory=list)

    async def next(self, routing_key: str) -> dict:
        while True:
            message = await self.box.next()
            event = json.loads(message.body)
            self.seen.append(event)
            if message.routing_key == routing_key:
                assert message.content_type == CLOUDEVENTS_CONTENT_TYPE
                return event

    def kinds(self, job_id: str) -> list[str]:
        return [e["type"].rsplit(".", 1)[1] for e in self.seen if e.get("subject") == job_id]


@pytest.fixture
async def events(channel: AbstractChannel, names: Names) -> Events:
    return Events(await inbox(channel, (names.events_exchange, "job.#")))


async def amqp_publish(config: Config, names: Names, body: bytes, *options: str) -> None:
    """``amqp-publish`` to ``<ns>.submit``. librabbitmq reads a URL's trailing ``/`` as the
    empty virtual host, so the default one is named by leaving it out."""
    url = config.broker.url.get_secret_value().removesuffix("/")
    process = await asyncio.create_subprocess_exec(
        "amqp-publish",
        "--url",
        url,
        "--exchange",
        names.submit_exchange,
        "--routing-key",
        "anything",  # a fanout exchange ignores it
        "--persistent",
        *options,
        "--body",
        body.decode(),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


async def reply_of(box: Inbox) -> SubmissionReply:
    return SubmissionReply.model_validate_json((await box.next()).body)


async def dead_letter(channel: AbstractChannel, names: Names) -> AbstractIncomingMessage:
    """The next message of ``<ns>.dead``, acked."""
    queue = await channel.get_queue(names.dead_letter_queue, ensure=False)

    async def one() -> AbstractIncomingMessage | None:
        return await queue.get(fail=False)

    message = await eventually(one, within=WAIT)
    await message.ack()
    return message


def echo(job_id: str, **extra: object) -> bytes:
    request = {"job_id": job_id, "model": {"name": "echo", "version": "1"}, **extra}
    return json.dumps(request).encode()


async def test_a_shell_submitter_gets_jobs_run_repeats_merged_and_bad_requests_dead_lettered(
    stack, channel, events, config, names, job_id
):
    replies = await inbox(channel)
    json_options = ("--content-type", "application/json", "--reply-to", replies.name)

    # A valid request runs to done, as if it came over HTTP.
    await amqp_publish(config, names, echo(job_id, payload={"n": 1}), *json_options)
    assert await reply_of(replies) == SubmissionReply(
        outcome="accepted", job_id=job_id, queued=True
    )
    done = JobEvent.model_validate(await events.next("job.done"))
    assert done.subject == job_id
    assert (await stack.get(f"/jobs/{job_id}/result")).json() == {"n": 1}

    # The identical request again: the same job, not a second one.
    await amqp_publish(config, names, echo(job_id, payload={"n": 1}), *json_options)
    assert await reply_of(replies) == SubmissionReply(outcome="repeated", job_id=job_id)

    # A different request under the same job id: the 409 of HTTP.
    conflicts = rejected("submit", "conflict")
    conflicting = echo(job_id, payload={"n": 2})
    await amqp_publish(
        config, names, conflicting, *json_options, "--header", "x-client: amqp-publish"
    )
    reply = await reply_of(replies)
    assert (reply.outcome, reply.job_id) == ("rejected", job_id)
    assert reply.rejection is not None and reply.rejection.reason == "conflict"
    event = JobRejectedEvent.model_validate(await events.next("job.rejected"))
    assert event.subject == job_id
    assert event.data == reply.rejection
    assert "different request" in event.data.detail
    letter = await dead_letter(channel, names)
    assert letter.body == conflicting
    assert letter.routing_key == DEAD_LETTER_KEY
    assert letter.headers[REJECTION_HEADER] == "conflict"
    assert "different request" in letter.headers[REJECTION_DETAIL_HEADER]
    assert letter.headers["x-client"] == "amqp-publish"  # the submitter's headers are kept
    assert letter.content_type == "application/json"
    assert rejected("submit", "conflict") == conflicts + 1

    # Garbage: not JSON, no content type, no reply_to.
    garbage = rejected("submit", "not-json")
    await amqp_publish(config, names, b"{this is not json")
    event = await events.next("job.rejected")
    assert "subject" not in event  # no job named: the attribute is absent, not null
    assert event["data"]["job_id"] is None
    assert event["data"]["reason"] == "not-json"
    letter = await dead_letter(channel, names)
    assert letter.body == b"{this is not json"
    assert letter.headers[REJECTION_HEADER] == "not-json"
    assert rejected("submit", "not-json") == garbage + 1

    # The consumer goes on: the next job runs.
    after = f"{job_id}-after"
    await amqp_publish(config, names, echo(after, payload="next"), *json_options)
    assert (await reply_of(replies)).outcome == "accepted"
    assert JobEvent.model_validate(await events.next("job.done")).subject == after

    # One job, one run, whatever was repeated or refused in between; its status unchanged.
    assert events.kinds(job_id) == ["accepted", "queued", "running", "done", "rejected"]
    status = (await stack.get(f"/jobs/{job_id}/status")).json()
    assert (status["state"], status["attempt"]) == ("done", 1)
    assert (await stack.get(f"/jobs/{job_id}/result")).json() == {"n": 1}


def request(**fields: object) -> bytes:
    return json.dumps({"model": {"name": "echo"}, **fields}).encode()


REFUSED = [
    # body, its content type, reason, the job id it names (the event's subject), the fields
    # at fault, and what the detail says
    (request(job_id="j-1", colour="red"), None, "invalid", "j-1", ["colour"], "colour"),
    (request(job_id="../etc"), None, "invalid", None, ["job_id"], "job_id"),
    (request(job_id="j-2", sheep_id="nope"), None, "invalid", "j-2", ["sheep_id"], "nope"),
    (
        b'{"job_id": "j-3", "model": {"name": "echo"}, "timeout": NaN}',
        None,
        "not-json",
        None,
        [],
        "is not valid JSON",
    ),
    (b"[" * 210 + b"]" * 210, None, "not-json", None, [], "deeper than the 200 levels"),
    (b"[1, 2]", None, "invalid", None, ["(root)"], "invalid job request"),
    (request(job_id="j-4", payload="x" * 2048), None, "too-large", None, [], "exceeds"),
    (
        request(job_id="j-5"),
        "text/plain",
        "unsupported-media-type",
        None,
        [],
        "expected content type application/json, got text/plain",
    ),
]


async def test_a_refused_request_says_why_to_the_submitter_and_the_subscribers(config, names):
    """Through a Python client this time, with correlation ids to match the replies."""
    config.gateway.max_payload_bytes = 1024
    config.sheep = {"s1": bare_sheep()}
    try:
        async with running_stack(config):
            connection = await aio_pika.connect(config.broker.url.get_secret_value())
            async with connection:
                channel = await connection.channel()
                replies = await inbox(channel)
                events = Events(await inbox(channel, (names.events_exchange, "job.rejected")))
                exchange = await channel.get_exchange(names.submit_exchange)
                for number, (body, media, reason, subject, fields, says) in enumerate(REFUSED):
                    await exchange.publish(
                        aio_pika.Message(
                            body,
                            content_type=media,
                            reply_to=replies.name,
                            correlation_id=f"c{number}",
                        ),
                        "",
                    )
                    message = await replies.next()
                    assert message.correlation_id == f"c{number}"
                    reply = SubmissionReply.model_validate_json(message.body)
                    event = JobRejectedEvent.model_validate(await events.next("job.rejected"))
                    assert reply.outcome == "rejected"
                    assert reply.rejection == event.data
                    assert (event.subject, event.data.job_id) == (subject, subject)
                    assert event.data.reason == reason, event.data.detail
                    assert says in event.data.detail, event.data.detail
                    assert [e.field for e in event.data.errors] == fields
                    letter = await dead_letter(channel, names)
                    assert letter.body == body
                    assert letter.headers[REJECTION_HEADER] == reason
                    assert letter.correlation_id == f"c{number}"
    finally:
        await delete_namespace(config.broker.url.get_secret_value(), names, list(config.sheep))


async def test_the_gateway_serves_the_asyncapi_document_of_its_namespace(stack, config, names):
    served = await stack.get("/asyncapi.json")
    assert served.status_code == 200
    document = served.json()
    exchange = document["channels"]["submit"]["bindings"]["amqp"]["exchange"]
    assert exchange["name"] == names.submit_exchange
    url = urlsplit(config.broker.url.get_secret_value())
    assert document["servers"]["rabbitmq"]["host"] == f"{url.hostname}:{url.port}"
    assert url.password and url.password not in served.text
