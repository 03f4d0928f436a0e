"""Least privilege on the broker (``schemas/permissions.py``), against the real RabbitMQ: each
role's user does its work, and the broker refuses it everything else. The users are the test
namespace's, with exactly the rights ``make services`` grants to ``shepherd``."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelAccessRefused
from pydantic import SecretStr
from standardwebhooks import Webhook

from schemas.broker_names import Names
from schemas.config import NotifierConfig, WebhookSubscription
from schemas.permissions import own_queues
from tests.conftest import serving
from tests.support.broker_users import Management, RoleUsers, role_users
from tests.support.polling import eventually
from tests.support.receiver import Receiver
from tests.support.requirements import missing
from tests.support.sse import read_events
from tests.support.stack import bare_sheep
from tests.support.webhooks import secret

WAIT = 30.0


@pytest.fixture
async def users(servers, names: Names) -> AsyncIterator[RoleUsers]:
    async with role_users(servers.amqp_url, names) as users:
        yield users


async def refused(url: str, attempt: Callable[[AbstractChannel], Awaitable[object]]) -> str:
    """What RabbitMQ said when it refused ``attempt`` (403 ACCESS_REFUSED): each attempt on a
    channel of its own, since a refusal closes the channel."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()  # publisher confirms: a refused publish raises
        with pytest.raises(ChannelAccessRefused) as refusal:
            await attempt(channel)
    return str(refusal.value)


def publish(exchange: str, routing_key: str, body: bytes = b"{}"):
    async def attempt(channel: AbstractChannel) -> None:
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(body), routing_key)

    return attempt


async def ignore(message: AbstractIncomingMessage) -> None:
    pass


def consume(queue: str):
    async def attempt(channel: AbstractChannel) -> None:
        await (await channel.get_queue(queue, ensure=False)).consume(ignore)

    return attempt


def declare(queue: str):
    async def attempt(channel: AbstractChannel) -> None:
        await channel.declare_queue(queue, exclusive=True)

    return attempt


def bind_own_queue(exchange: str, routing_key: str):
    async def attempt(channel: AbstractChannel) -> None:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key)

    return attempt


async def next_body(queue: asyncio.Queue[AbstractIncomingMessage]) -> dict:
    async with asyncio.timeout(WAIT):
        return json.loads((await queue.get()).body)


FORGED = json.dumps(
    {
        "specversion": "1.0",
        "id": "1",
        "source": "/shepherd/notifier",
        "type": "io.shepherd.job.done",
    }
).encode()


async def test_a_subscriber_binds_and_reads_job_events_and_can_publish_nothing(
    broker, users, names
):
    subscriber = users.url("subscriber")
    async with await aio_pika.connect(subscriber) as connection:
        channel = await connection.channel()
        mine = await channel.declare_queue(
            f"{own_queues(names, 'subscriber')}events", exclusive=True
        )
        await mine.bind(names.events_exchange, "job.#")
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await mine.consume(arrived.put, no_ack=True)
        # What Shepherd's services publish reaches it.
        async with await aio_pika.connect(users.url("services")) as services:
            events = await (await services.channel()).get_exchange(names.events_exchange)
            await events.publish(aio_pika.Message(b'{"n": 1}'), "job.done")
        assert await next_body(arrived) == {"n": 1}

    assert "ACCESS_REFUSED" in await refused(subscriber, publish(names.events_exchange, "job.done"))
    await refused(subscriber, publish(names.submit_exchange, ""))
    await refused(subscriber, publish("", names.status_queue))  # the default exchange
    # Job events only: the sheep's internal reports stay internal.
    topic = await refused(subscriber, bind_own_queue(names.events_exchange, "status.#"))
    assert "status.#" in topic
    await refused(subscriber, bind_own_queue(names.events_exchange, "#"))
    for queue in (names.status_queue, names.webhook_events_queue, names.submit_queue):
        await refused(subscriber, consume(queue))
    await refused(subscriber, declare(f"{names.namespace}.mine"))
    await refused(subscriber, declare(f"{own_queues(names, 'submitter')}theirs"))


async def test_a_subscriber_replays_the_event_history(broker, users, names):
    async with await aio_pika.connect(users.url("services")) as services:
        events = await (await services.channel()).get_exchange(names.events_exchange)
        await events.publish(aio_pika.Message(b'{"replayed": true}'), "job.done")
    async with await aio_pika.connect(users.url("subscriber")) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        stream = await channel.get_queue(names.event_stream, ensure=False)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await stream.consume(arrived.put, arguments={"x-stream-offset": "first"})
        assert await next_body(arrived) == {"replayed": True}


async def test_a_submitter_submits_and_reads_only_its_replies(broker, users, names):
    submitter = users.url("submitter")
    async with await aio_pika.connect(submitter) as connection:
        channel = await connection.channel()
        await channel.declare_queue(f"{own_queues(names, 'submitter')}replies", exclusive=True)
        await channel.declare_queue(exclusive=True)  # server-named
        submit = await channel.get_exchange(names.submit_exchange, ensure=False)
        await submit.publish(aio_pika.Message(b"{}"), "")  # confirmed

    await refused(submitter, publish(names.events_exchange, "job.done", FORGED))
    await refused(submitter, publish(names.jobs_exchange, "pool"))
    await refused(submitter, publish("", names.submit_queue))
    await refused(submitter, consume(names.submit_queue))
    await refused(submitter, bind_own_queue(names.events_exchange, "job.#"))
    await refused(submitter, declare(f"{names.namespace}.replies"))


async def test_the_storage_user_only_publishes_bucket_notifications(broker, users, names):
    storage = users.url("storage")
    async with await aio_pika.connect(storage) as connection:
        channel = await connection.channel()
        # As MinIO's AMQP target does on connecting.
        notifications = await channel.declare_exchange(
            names.storage_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        await notifications.publish(aio_pika.Message(b'{"EventName": "s3:Test"}'), "s3")

    await refused(storage, publish(names.events_exchange, "job.done", FORGED))
    await refused(storage, consume(names.inputs_queue))
    await refused(storage, declare(f"{names.namespace}.inputs-copy"))


async def test_services_keep_to_their_namespace(broker, users, names):
    services = users.url("services")
    other = Names("shepherd")
    await refused(services, publish(other.events_exchange, "job.done", FORGED))
    await refused(services, consume(other.status_queue))
    await refused(services, declare(f"{own_queues(names, 'subscriber')}q"))


async def subscribed(
    channel: AbstractChannel, queue_name: str, names: Names
) -> tuple[AbstractQueue, asyncio.Queue[AbstractIncomingMessage]]:
    queue = await channel.declare_queue(queue_name, exclusive=True)
    await queue.bind(names.events_exchange, "job.#")
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await queue.consume(arrived.put, no_ack=True)
    return queue, arrived


async def event_of(
    arrived: asyncio.Queue[AbstractIncomingMessage], job_id: str, routing_key: str
) -> dict:
    async with asyncio.timeout(WAIT):
        while True:
            message = await arrived.get()
            event = json.loads(message.body)
            if message.routing_key == routing_key and event.get("subject") == job_id:
                return event


async def test_the_whole_stack_runs_on_the_services_user(config, names, users, job_id):
    """Every way in and out, with the services holding only the services user's rights:
    an upload through the gateway, a submission over AMQP with its reply, a cancellation,
    the live stream, a subscriber's queue and a webhook."""
    hook_secret = secret()
    config.broker.url = SecretStr(users.url("services"))
    config.sheep = {"s1": bare_sheep()}
    async with Receiver() as receiver:
        config.notifier = NotifierConfig(
            webhooks=[
                WebhookSubscription(
                    name="all",
                    url=receiver.url("/hook"),
                    events=["job.done"],
                    secret=hook_secret,
                )
            ],
            allow_private_targets=True,
        )
        async with (
            serving(config, names) as client,
            await aio_pika.connect(users.url("subscriber")) as listening,
            await aio_pika.connect(users.url("submitter")) as submitting,
        ):
            _, events = await subscribed(
                await listening.channel(), f"{own_queues(names, 'subscriber')}all", names
            )
            stream = client.stream("GET", "/events", params={"types": "job.done"})
            async with stream as live:
                # An upload: MinIO's notification queues the job.
                declared = {
                    "job_id": job_id,
                    "model": {"name": "echo", "version": "1"},
                    "inputs": ["input.json"],
                }
                assert (await client.post("/start-job", json=declared)).status_code == 202
                upload = await client.put(f"/jobs/{job_id}/input/input.json", content=b'{"u": 1}')
                assert upload.status_code == 201
                done = await event_of(events, job_id, "job.done")
                assert done["data"]["state"] == "done"
                assert (await client.get(f"/jobs/{job_id}/result")).json() == {"u": 1}
                first = await anext(read_events(live))
                assert first.json()["subject"] == job_id

            # Over AMQP, with a reply.
            channel = await submitting.channel()
            replies = await channel.declare_queue(
                f"{own_queues(names, 'submitter')}replies", exclusive=True
            )
            submitted = f"{job_id}-amqp"
            request = {"job_id": submitted, "model": {"name": "sleep", "version": "1"}}
            request["payload"] = {"seconds": 60}
            submit = await channel.get_exchange(names.submit_exchange, ensure=False)
            body = json.dumps(request).encode()
            message = aio_pika.Message(body, content_type="application/json", reply_to=replies.name)
            await submit.publish(message, "")
            async with asyncio.timeout(WAIT):
                async with replies.iterator() as answers:
                    reply = json.loads((await anext(answers)).body)
            assert reply["outcome"] == "accepted"

            # Cancelled while it runs.
            await event_of(events, submitted, "job.running")
            assert (await client.post(f"/jobs/{submitted}/cancel")).status_code == 202
            await event_of(events, submitted, "job.cancelled")

            fleet = await client.get("/status")  # looks the queues up
            assert fleet.status_code == 200
            assert fleet.json()["sheep"]["s1"]["queue_depth"] == 0

        delivery = await receiver.next("/hook")
        event = Webhook(hook_secret).verify(delivery.body, delivery.headers)
        assert (event["subject"], event["type"]) == (job_id, "io.shepherd.job.done")


async def amqp_tool(*command: str) -> tuple[int, str]:
    """Run one of Debian's amqp-tools (C, librabbitmq): its exit status and its output
    (what it said on stderr too, when it failed)."""
    if shutil.which(command[0]) is None:
        missing(f"{command[0]} is missing: apt-get install amqp-tools (make services does)")
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    output, said = await process.communicate()
    if process.returncode:
        return process.returncode, (output + said).decode()
    return 0, output.decode()


async def test_the_readmes_amqp_tools_lines_work_as_the_role_users(
    servers, config, names, users, job_id
):
    """The README's subscriber and submitter, as written there but for the namespace."""
    # librabbitmq reads a trailing "/" as the virtual host named "".
    subscriber, submitter = (users.url(r).removesuffix("/") for r in ("subscriber", "submitter"))
    config.sheep = {}
    async with serving(config, names) as client, Management(servers.amqp_url) as management:
        following = asyncio.create_task(
            amqp_tool(
                "amqp-consume", "-u", subscriber, "-e", names.events_exchange, "-r", "job.#",
                "-c", "1", "--", "cat",
            )
        )  # fmt: skip

        async def bound() -> bool:
            keys = await management.bindings_from(names.events_exchange)
            return ("amq.gen-", "job.#") in {(queue[:8], key) for queue, key in keys}

        await eventually(bound, within=WAIT)
        replies = f"{own_queues(names, 'submitter')}replies"
        assert (await amqp_tool("amqp-declare-queue", "-u", submitter, "-q", replies))[0] == 0
        request = {"job_id": job_id, "model": {"name": "echo", "version": "1"}, "payload": 1}
        published = await amqp_tool(
            "amqp-publish", "-u", submitter, "-e", names.submit_exchange, "-p",
            "-C", "application/json", "-t", replies, "-b", json.dumps(request),
        )  # fmt: skip
        assert published == (0, "")
        try:

            async def reply() -> str | None:
                status, output = await amqp_tool("amqp-get", "-u", submitter, "-q", replies)
                return output if status == 0 else None

            answer = json.loads(await eventually(reply, within=WAIT))
            assert (answer["outcome"], answer["job_id"]) == ("accepted", job_id)
            status, output = await asyncio.wait_for(following, WAIT)
            assert status == 0, output
            event = json.loads(output)
            assert (event["type"], event["subject"]) == ("io.shepherd.job.accepted", job_id)
            assert (await client.get(f"/jobs/{job_id}/status")).json()["state"] == "queued"
        finally:
            await management.delete_queue(replies)
