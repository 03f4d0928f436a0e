"""Webhooks against the real RabbitMQ and MinIO and a real HTTP receiver.

Job events are published on ``<ns>.events`` as the notifier publishes them; the webhook
service (dispatcher and delivery workers, as the notifier role runs them) delivers them to a
uvicorn receiver on a loopback port, which the tests allow (``allow_private_targets``) except
where they check the SSRF guard. Retry schedules are short so that the whole schedule runs in
about a second.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import pairwise
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import SecretStr
from standardwebhooks import Webhook

from schemas.broker_names import Names
from schemas.config import Config, NotifierConfig, WebhookSubscription
from schemas.events import CLOUDEVENTS_CONTENT_TYPE, JobEvent
from schemas.job import JobSpec, ModelRef
from schemas.layout import disabled_webhook_key, job_key
from schemas.status import JobState, JobStatus
from schemas.topology import build_topology, retry_delays_ms
from schemas.webhooks import ATTEMPT_HEADER, GAVE_UP_KEY, REASON_HEADER, DisabledSubscription
from services.common.broker import Broker
from services.common.storage import ObjectMissing, Storage
from services.notifier.webhooks import Webhooks
from tests.support.polling import eventually
from tests.support.receiver import Received, Receiver, Reply
from tests.support.webhooks import counted, delivered, secret

SECRET = secret()
CALLBACK_SECRET = secret()
MODEL = ModelRef(name="echo", version="1")
SCHEDULE = [0.2, 0.4]
JITTER = 0.8
"""A retry comes after at least this share of its step's delay."""

Start = Callable[[], Awaitable[Webhooks]]


def configure(config: Config, *subscriptions: WebhookSubscription, **settings: Any) -> None:
    """The test's notifier settings: a loopback receiver allowed, short timeout and schedule."""
    defaults: dict[str, Any] = {
        "allow_private_targets": True,
        "webhook_timeout": 2.0,
        "webhook_retry_schedule": SCHEDULE,
        "callback_secret": SecretStr(CALLBACK_SECRET),
    }
    config.notifier = NotifierConfig(webhooks=list(subscriptions), **{**defaults, **settings})


def subscription(name: str, url: str, events: list[str] | None = None) -> WebhookSubscription:
    fields: dict[str, Any] = {"name": name, "url": url, "secret": SECRET}
    if events is not None:
        fields["events"] = events
    return WebhookSubscription(**fields)


def job_event(job_id: str, kind: str = "done") -> JobEvent:
    state = JobState.RUNNING if kind == "progress" else JobState(kind)
    return JobEvent.of(JobStatus(job_id=job_id, state=state, model=MODEL), "/test/notifier", kind)


@pytest.fixture
def storage(config: Config) -> Storage:
    return Storage(config.storage)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        yield receiver


@pytest.fixture
async def start(config: Config, broker: Broker, storage: Storage) -> AsyncIterator[Start]:
    """Starts a webhook service on the test's configuration (its retry queues declared, as
    the runtime declares them); each is stopped after the test."""
    started: list[Webhooks] = []

    async def start() -> Webhooks:
        schedule = config.notifier.webhook_retry_schedule
        await broker.declare(
            build_topology(broker.names, config.broker.delivery_limit, [], schedule)
        )
        webhooks = Webhooks(config, broker, storage)
        await webhooks.start()
        started.append(webhooks)
        return webhooks

    yield start
    for webhooks in reversed(started):
        await webhooks.stop()


@pytest.fixture
async def channel(broker: Broker) -> AsyncIterator[AbstractChannel]:
    channel = await broker.connection.channel()
    yield channel
    await channel.close()


async def publish(broker: Broker, event: JobEvent) -> None:
    """As the notifier announces a transition."""
    await broker.publish(
        broker.names.events_exchange,
        event.routing_key,
        event,
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        message_id=event.id,
        mandatory=False,
    )


async def declare_job(storage: Storage, job_id: str, callback_url: str | None) -> None:
    spec = JobSpec(
        job_id=job_id,
        model=MODEL,
        callback_url=callback_url,
        request_digest="0" * 64,
        declared_at=job_event(job_id).time,
    )
    await storage.put_bytes(job_key(job_id), spec.model_dump_json().encode(), "application/json")


async def dead_letter(channel: AbstractChannel, names: Names) -> AbstractIncomingMessage:
    queue = await channel.get_queue(names.dead_letter_queue, ensure=False)

    async def one() -> AbstractIncomingMessage | None:
        return await queue.get(fail=False, no_ack=True)

    return await eventually(one, within=10)


def gaps(requests: list[Received]) -> list[float]:
    return [b.at - a.at for a, b in pairwise(requests)]


async def test_a_delivery_is_a_signed_cloudevent(config, broker, start, receiver, job_id):
    configure(config, subscription("all", receiver.url("/all")))
    await start()
    event = job_event(job_id, "done")
    await publish(broker, event)

    request = await receiver.next("/all")
    assert request.headers["content-type"] == CLOUDEVENTS_CONTENT_TYPE
    assert json.loads(request.body) == event.model_dump(mode="json")
    # The official verifier, and the HMAC computed here from the specification.
    assert Webhook(SECRET).verify(request.body, request.headers) == json.loads(request.body)
    msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.headers["webhook-signature"] == "v1," + base64.b64encode(mac.digest()).decode()
    assert msg_id.startswith("msg_")
    # Another secret does not verify.
    with pytest.raises(Exception, match="signature"):
        Webhook(secret()).verify(request.body, request.headers)


async def test_subscriptions_get_the_events_their_patterns_match(
    config, broker, start, receiver, job_id
):
    configure(
        config,
        subscription("outcomes", receiver.url("/outcomes"), ["job.done", "job.failed"]),
        subscription("every", receiver.url("/every"), ["job.#"]),
        subscription("running", receiver.url("/running"), ["job.running"]),
    )
    await start()
    for kind in ("queued", "progress", "done"):
        await publish(broker, job_event(job_id, kind))

    every = [json.loads((await receiver.next("/every")).body)["type"] for _ in range(3)]
    assert sorted(every) == sorted(f"io.shepherd.job.{k}" for k in ("queued", "progress", "done"))
    assert json.loads((await receiver.next("/outcomes")).body)["type"] == "io.shepherd.job.done"
    await receiver.silent("/outcomes", 0.5)
    assert receiver.to("/running") == []


async def test_a_callback_url_gets_the_jobs_terminal_event_signed_with_the_callback_secret(
    config, broker, storage, start, receiver, job_id
):
    configure(config)
    await start()
    await declare_job(storage, job_id, receiver.url(f"/cb/{job_id}"))
    other = f"job-{uuid.uuid4().hex[:12]}"
    await declare_job(storage, other, None)
    for kind in ("queued", "running"):
        await publish(broker, job_event(job_id, kind))
    await publish(broker, job_event(other, "done"))
    done = job_event(job_id, "done")
    await publish(broker, done)

    request = await receiver.next(f"/cb/{job_id}")
    assert Webhook(CALLBACK_SECRET).verify(request.body, request.headers)["id"] == done.id
    await receiver.silent(f"/cb/{job_id}", 0.5)
    assert len(receiver.requests) == 1


async def test_5xx_is_retried_with_backoff_and_delivered_once(
    config, broker, start, receiver, job_id
):
    configure(config, subscription("flaky", receiver.url("/flaky")))
    receiver.script("/flaky", Reply(503), Reply(502), Reply(200))
    before = delivered("flaky")
    await start()
    await publish(broker, job_event(job_id))

    requests = [await receiver.next("/flaky") for _ in range(3)]
    await receiver.silent("/flaky", 1.0)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    for request in requests:  # each attempt signed afresh, all verify
        Webhook(SECRET).verify(request.body, request.headers)
    first, second = gaps(requests)
    assert first >= SCHEDULE[0] * JITTER and second >= SCHEDULE[1] * JITTER, (first, second)
    assert delivered("flaky") == before + 1


async def test_retry_after_is_honoured(config, broker, start, receiver, job_id):
    configure(config, subscription("busy", receiver.url("/busy")), webhook_retry_schedule=[0.2, 3])
    receiver.script("/busy", Reply(503, {"Retry-After": "1"}), Reply(200))
    await start()
    await publish(broker, job_event(job_id))

    requests = [await receiver.next("/busy") for _ in range(2)]
    (gap,) = gaps(requests)
    # Not after the 0.2 s step: after Retry-After (two clocks: a millisecond either way).
    assert 0.99 <= gap < 2.5, gap


async def test_429_is_retried(config, broker, start, receiver, job_id):
    configure(config, subscription("limited", receiver.url("/limited")))
    receiver.script("/limited", Reply(429), Reply(204))
    before = delivered("limited")
    await start()
    await publish(broker, job_event(job_id))

    refused = await receiver.next("/limited")
    retried = await receiver.next("/limited")
    await eventually(counted("limited", before + 1), within=5)
    # The same delivery again (same id and body), not a new one.
    assert retried.headers["webhook-id"] == refused.headers["webhook-id"]
    assert retried.body == refused.body
    assert json.loads(retried.body)["subject"] == job_id
    await receiver.silent("/limited", 1.0)  # delivered: no more tries


async def test_a_delivery_is_given_up_after_the_schedule_and_kept_in_dead(
    config, broker, channel, start, receiver, job_id
):
    configure(config, subscription("broken", receiver.url("/broken")))
    receiver.script("/broken", Reply(500))
    before = delivered("broken", "gave-up")
    await start()
    event = job_event(job_id)
    await publish(broker, event)

    requests = [await receiver.next("/broken") for _ in range(1 + len(SCHEDULE))]
    await receiver.silent("/broken", 1.0)
    dead = await dead_letter(channel, broker.names)
    assert dead.routing_key == GAVE_UP_KEY
    assert dead.headers[ATTEMPT_HEADER] == 3
    assert "HTTP 500" in dead.headers[REASON_HEADER]
    assert "schedule is spent" in dead.headers[REASON_HEADER]
    assert json.loads(dead.body)["event"]["id"] == event.id
    assert dead.message_id == requests[0].headers["webhook-id"]
    assert SECRET.encode() not in dead.body  # deliveries name their subscription, no secret
    assert delivered("broken", "gave-up") == before + 1


async def test_a_4xx_is_given_up_at_once(config, broker, channel, start, receiver, job_id):
    configure(config, subscription("picky", receiver.url("/picky")))
    receiver.script("/picky", Reply(400))
    await start()
    await publish(broker, job_event(job_id))

    await receiver.next("/picky")
    dead = await dead_letter(channel, broker.names)
    assert dead.headers[ATTEMPT_HEADER] == 1
    assert dead.headers[REASON_HEADER].startswith("HTTP 400")
    await receiver.silent("/picky", 0.6)


async def test_410_disables_the_subscription_for_good(
    config, broker, storage, start, receiver, job_id
):
    # "gone" is listed first: its deliveries would be published before the witness's.
    configure(
        config,
        subscription("gone", receiver.url("/gone")),
        subscription("witness", receiver.url("/witness")),
    )
    receiver.script("/gone", Reply(410))
    webhooks = await start()
    await publish(broker, job_event(job_id, "queued"))
    await receiver.next("/gone")
    await receiver.next("/witness")

    record = DisabledSubscription.model_validate_json(
        await eventually(lambda: _stored(storage, disabled_webhook_key("gone")), within=5)
    )
    assert record.url == receiver.url("/gone") and "410" in record.reason
    await publish(broker, job_event(job_id, "running"))
    await receiver.next("/witness")

    await webhooks.stop()  # a restart reads the record back
    await start()
    await publish(broker, job_event(job_id, "done"))
    await receiver.next("/witness")
    await receiver.silent("/gone", 0.5)
    assert len(receiver.to("/gone")) == 1


async def test_a_subscription_disabled_at_another_url_gets_deliveries_again(
    config, broker, storage, start, receiver, job_id
):
    old = DisabledSubscription(
        url="https://old.example.com/hook", disabled_at=job_event(job_id).time, reason="410"
    )
    await storage.put_bytes(
        disabled_webhook_key("moved"), old.model_dump_json().encode(), "application/json"
    )
    configure(config, subscription("moved", receiver.url("/moved")))
    await start()
    await publish(broker, job_event(job_id))
    await receiver.next("/moved")


async def test_410_from_a_callback_stops_its_retries(
    config, broker, storage, channel, start, receiver, job_id
):
    configure(config)
    receiver.script("/cb", Reply(410))
    await start()
    await declare_job(storage, job_id, receiver.url("/cb"))
    await publish(broker, job_event(job_id, "failed"))

    await receiver.next("/cb")
    await receiver.silent("/cb", 1.0)
    queue = await channel.declare_queue(broker.names.dead_letter_queue, passive=True)
    assert queue.declaration_result.message_count == 0


async def test_an_attempt_times_out(config, broker, channel, start, receiver, job_id):
    configure(
        config,
        subscription("hangs", receiver.url("/hangs")),
        webhook_timeout=0.5,
        webhook_retry_schedule=[0.2],
    )
    receiver.script("/hangs", Reply(200, delay=30))
    await start()
    await publish(broker, job_event(job_id))

    requests = [await receiver.next("/hangs") for _ in range(2)]
    (gap,) = gaps(requests)
    assert 0.5 <= gap < 3, gap  # cut off after 0.5 s, then the 0.2 s step; not after 30 s
    dead = await dead_letter(channel, broker.names)
    assert "no answer within 0.5 s" in dead.headers[REASON_HEADER]


async def test_a_slow_receiver_does_not_delay_the_others(config, broker, start, receiver, job_id):
    configure(
        config,
        subscription("slow", receiver.url("/slow")),
        subscription("fast", receiver.url("/fast")),
        webhook_timeout=5.0,
    )
    receiver.script("/slow", Reply(200, delay=5))
    await start()
    events = [job_event(job_id, kind) for kind in ("accepted", "queued", "running", "done")]
    for event in events:
        await publish(broker, event)

    fast = [await receiver.next("/fast", within=2) for _ in events]
    first_slow = await receiver.next("/slow")
    assert {json.loads(r.body)["id"] for r in fast} == {e.id for e in events}
    assert fast[-1].at - first_slow.at < 1.0  # all of them while the slow one hangs


async def test_retry_state_survives_a_restart(config, broker, channel, start, receiver, job_id):
    configure(config, subscription("later", receiver.url("/later")), webhook_retry_schedule=[1.5])
    receiver.script("/later", Reply(503), Reply(200))
    before = delivered("later")
    webhooks = await start()
    await publish(broker, job_event(job_id))
    first = await receiver.next("/later")

    await webhooks.stop()  # nothing of the retry is left in this process
    (delay,) = retry_delays_ms([1.5])
    parked = await channel.declare_queue(broker.names.webhook_retry_queue(delay), passive=True)
    assert parked.declaration_result.message_count == 1
    await start()

    second = await receiver.next("/later")
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.at - first.at >= 1.5 * JITTER
    await eventually(counted("later", before + 1), within=5)


@pytest.mark.parametrize(
    ("host", "why"),
    [("127.0.0.1", "127.0.0.1 is a loopback address"), ("localhost", "localhost resolves to")],
    ids=["literal", "named"],
)
async def test_a_webhook_the_ssrf_guard_refuses_stops_the_start(
    config, broker, start, receiver, host, why
):
    configure(
        config, subscription("internal", receiver.url("/x", host=host)), allow_private_targets=False
    )
    with pytest.raises(ValueError, match=r"notifier\.webhooks internal: ") as refused:
        await start()
    assert why in str(refused.value) and "allow_private_targets" in str(refused.value)
    assert receiver.requests == []


async def test_the_guard_still_refuses_at_delivery_what_passed_at_submission(
    config, broker, channel, storage, start, receiver, job_id
):
    """A callback whose host resolves to a private address by the time it is delivered (DNS
    rebinding): refused at once, never retried."""
    configure(config, allow_private_targets=False)
    await start()
    await declare_job(storage, job_id, receiver.url("/rebound", host="localhost"))
    await publish(broker, job_event(job_id))
    message = await dead_letter(channel, broker.names)
    assert message.headers[ATTEMPT_HEADER] == 1
    assert "localhost resolves to" in message.headers[REASON_HEADER]
    assert "loopback" in message.headers[REASON_HEADER]
    assert receiver.requests == []


async def _stored(storage: Storage, key: str) -> bytes | None:
    try:
        return await storage.get_bytes(key)
    except ObjectMissing:
        return None


async def test_without_webhooks_job_events_are_not_kept_for_them(
    config, broker, channel, start, receiver, job_id
):
    configure(config, subscription("all", receiver.url("/all")))
    first = await start()
    await publish(broker, job_event(job_id, "done"))
    await receiver.next("/all")
    await first.stop()

    config.notifier = NotifierConfig()  # no subscription, no callback secret
    await start()
    await publish(broker, job_event(job_id, "failed"))
    queue = await channel.declare_queue(broker.names.webhook_events_queue, passive=True)
    assert queue.declaration_result.message_count == 0
