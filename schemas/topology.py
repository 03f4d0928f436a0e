"""The broker topology, declared once as data, each exchange, queue and binding with what flows
through it and why.

The same declarations are made by the services at start-up (idempotently, over AMQP),
exported to ``deploy/rabbitmq/definitions.json``, which RabbitMQ loads at boot, and shaped
into the AsyncAPI document (:mod:`schemas.asyncapi`), which takes every channel, message and
description from here. Names are in :mod:`schemas.broker_names`.

Leases. A sheep acks a job as soon as it has parked a copy of it in its lease queue
``<ns>.lease.<sheep>`` (through ``<ns>.leases``, which keeps the job's routing key), and
renews that copy while the job runs. The copy expires after the lease time and is then
dead-lettered back to ``<ns>.jobs``, into the queue it came from. So no delivery stays
unacked for long (RabbitMQ's consumer timeout never cuts a long job off), and a job whose
sheep died is run again: at once when the sheep restarts (it returns what its lease queue
holds), after the lease time otherwise.

Dead letters. Everything dead-lettered lands in ``<ns>.dead``, kept for inspection; jobs that
ran out of deliveries also land in ``<ns>.gave-up``, whose consumer (the notifier) marks them
failed.

Event history. ``<ns>.event-stream`` is a RabbitMQ *stream* bound to ``<ns>.events`` for
``job.#``: an append-only log of every job event, kept for a day (or up to a size), which any
number of readers consume from an offset of their choice without taking messages from each
other. The gateway's live streams (``GET /events``) read it, and resume from the offset a
client last saw.

Webhooks. ``<ns>.webhook-events`` feeds the notifier's webhook dispatcher. It is bound to
``<ns>.events`` for ``job.#`` (:func:`webhook_events_binding`) by the notifier, and only while
webhooks are configured: without receivers, job events would only pile up there or cost the
broker a copy each for nothing. The dispatcher publishes one delivery per receiver to
``<ns>.webhooks`` (``deliver``: ``<ns>.webhook-deliveries``). A failed attempt waits in the
retry queue of its delay, ``<ns>.webhook-retry.<ms>ms`` (routing key ``retry.<ms>ms``),
whose TTL dead-letters it back to ``deliver``: retry state lives in RabbitMQ, not in a
process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from schemas import queue_arguments as arguments
from schemas.asyncapi_messages import EVENT_KINDS, KIND_SUMMARY, event_channel, event_message
from schemas.broker_names import (
    DELIVER,
    GAVE_UP,
    HOLDER,
    Names,
    log_routing_key,
    retry_routing_key,
)
from schemas.events import CLOUDEVENT_TYPE_PREFIX, REJECTED
from schemas.job import PRIORITIES, Priority
from schemas.submission import DEAD_LETTER_KEY
from schemas.webhooks import DEFAULT_RETRY_SCHEDULE, GAVE_UP_KEY

if TYPE_CHECKING:
    from schemas.config import Config

ExchangeType = Literal["direct", "fanout", "topic", "headers"]

#: Placeholders of the documented topology (:meth:`Topology.documented`).
SHEEP_ID = "{sheep_id}"
SHEEP_CLASS = "{sheep_class}"
DELAY_MS = "{delay_ms}"


@dataclass(frozen=True)
class Address:
    """A routing key publishers use on an exchange (None where it plays no part), the
    messages sent with it and what they are for; ``channel`` is its AsyncAPI channel id."""

    channel: str
    routing_key: str | None
    messages: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Exchange:
    name: str
    type: ExchangeType
    addresses: tuple[Address, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Queue:
    """A queue; ``channel``, ``messages`` and ``description`` say what it holds and who
    consumes it."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    channel: str = field(default="", compare=False)
    messages: tuple[str, ...] = field(default=(), compare=False)
    description: str = field(default="", compare=False)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    description: str = field(default="", compare=False)
    """Why the queue is bound, where its own description does not say."""


@dataclass(frozen=True)
class Policy:
    name: str
    pattern: str
    definition: dict[str, Any]
    apply_to: Literal["queues", "exchanges", "all"] = "queues"


@dataclass(frozen=True)
class Topology:
    exchanges: list[Exchange]
    queues: list[Queue]
    bindings: list[Binding]
    policies: list[Policy]

    @classmethod
    def for_config(
        cls, config: Config, sheep_ids: Sequence[str] | None = None, joined: Sequence[str] = ()
    ) -> Topology:
        """What ``config`` needs declared: its namespace with its delivery limit, webhook
        retry queues for its schedule, the queues of its sheep classes, those of
        ``sheep_ids`` (by default, of every sheep it names) and the lease queues of
        ``joined`` (sheep of a class)."""
        return build_topology(
            Names.for_config(config),
            config.broker.delivery_limit,
            list(config.sheep if sheep_ids is None else sheep_ids),
            config.notifier.webhook_retry_schedule,
            classes=list(config.sheep_classes),
            joined=joined,
            lease_time=config.broker.lease_time,
        )

    @classmethod
    def documented(cls, names: Names) -> Topology:
        """The topology of any configuration, as documents show it: one sheep queue named
        ``{sheep_id}``, one class ``{sheep_class}`` and one retry queue ``{delay_ms}``
        standing for them all."""
        return _declare(names, 1, _Sheep([SHEEP_ID], [SHEEP_CLASS]), [DELAY_MS])


def lane_id(priority: Priority) -> str:
    """What a priority adds to the id of a job queue in documents: nothing for normal."""
    return "" if priority == "normal" else priority.capitalize()


def retry_delays_ms(schedule: Sequence[float]) -> list[int]:
    """The distinct delays of a webhook retry schedule, in milliseconds, shortest first: one
    retry queue each."""
    return sorted({max(1, round(seconds * 1000)) for seconds in schedule})


def webhook_events_binding(names: Names) -> Binding:
    """Every job event, for the webhook dispatcher; bound only while webhooks are configured."""
    return Binding(names.events_exchange, names.webhook_events_queue, "job.#")


@dataclass(frozen=True)
class _Sheep:
    """Whose queues to declare: named sheep (their own queues and lease queue), sheep
    classes (their queues) and sheep that joined a class (their lease queue, expiring)."""

    named: Sequence[str] = ()
    classes: Sequence[str] = ()
    joined: Sequence[str] = ()
    lease_time: float = 60.0


def build_topology(
    names: Names,
    delivery_limit: int,
    sheep_ids: Sequence[str] = (),
    webhook_retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
    *,
    classes: Sequence[str] = (),
    joined: Sequence[str] = (),
    lease_time: float = 60.0,
) -> Topology:
    """Everything a namespace needs; sheep queues for the sheep and classes named here,
    lease queues for sheep that ``joined`` a class (expiring after three ``lease_time``),
    webhook retry queues for the delays of ``webhook_retry_schedule``."""
    sheep = _Sheep(sheep_ids, classes, joined, lease_time)
    return _declare(names, delivery_limit, sheep, retry_delays_ms(webhook_retry_schedule))


def _declare(
    names: Names, delivery_limit: int, sheep: _Sheep, delays: Sequence[int | str]
) -> Topology:
    return Topology(
        exchanges=_exchanges(names),
        queues=_queues(names, delivery_limit, sheep, delays),
        bindings=_bindings(names, sheep, delays),
        policies=[
            # Dead letters are kept two weeks for inspection, then expire.
            Policy(
                f"{names.namespace}-dead-letters",
                f"^{names.dead_letter_queue}$",
                {"message-ttl": 14 * 24 * 3600 * 1000},
            ),
        ],
    )


def _exchanges(n: Names) -> list[Exchange]:
    events = tuple(
        Address(
            event_channel(kind),
            f"job.{kind}",
            (event_message(kind),),
            f"CloudEvents {CLOUDEVENT_TYPE_PREFIX}{kind}: {KIND_SUMMARY[kind]} Published "
            "once the status is durable; bind your own queue (job.# for all).",
        )
        for kind in EVENT_KINDS
        if kind != REJECTED
    )
    return [
        Exchange(n.submit_exchange, "fanout", (
            Address("submit", None, ("jobRequest",),
                "Job requests from any AMQP client (fanout: the routing key is ignored). "
                "Handled like POST /start-job; name reply_to (and correlation_id) to get the "
                "outcome."),
        )),
        Exchange(n.jobs_exchange, "direct", (
            *(
                Address(f"jobsForSheep{lane_id(p)}", Names.job_routing_key(SHEEP_ID, p),
                    ("jobDispatch",), f"Queued jobs of {p} priority for one sheep.")
                for p in PRIORITIES
            ),
            *(
                Address(f"jobsForClass{lane_id(p)}",
                    Names.job_routing_key(None, p, sheep_class=SHEEP_CLASS), ("jobDispatch",),
                    f"Queued jobs of {p} priority for any sheep of a class.")
                for p in PRIORITIES
            ),
            *(
                Address(f"jobsForPool{lane_id(p)}", Names.job_routing_key(None, p),
                    ("jobDispatch",), f"Queued jobs of {p} priority for any sheep.")
                for p in PRIORITIES
            ),
        )),
        Exchange(n.storage_exchange, "fanout", (
            Address("storageEvents", None, ("s3Event",),
                "MinIO's bucket notifications (fanout; MinIO's own routing key). Shared by "
                "every namespace on the broker."),
        )),
        Exchange(n.events_exchange, "topic", (
            Address("statusReports", "status.{state}", ("statusReport",),
                "Reports of what happened to a job, from the gateway and the sheep, for the "
                "notifier only: subscribe to job.<kind> instead."),
            *events,
            Address(event_channel(REJECTED), f"job.{REJECTED}", (event_message(REJECTED),),
                f"CloudEvents {CLOUDEVENT_TYPE_PREFIX}{REJECTED}: a submission on "
                f"{n.submit_exchange} was refused. Not a job state: no status changes."),
            Address("sheepStates", f"sheep.{SHEEP_ID}", ("sheepState",),
                "What each sheep announces when its state changes and every few seconds."),
            Address("jobOutput", log_routing_key("{stream}"), ("logChunk",),
                "What a running job prints, as it prints it, for GET /jobs/{id}/logs?follow="
                "true: not for subscribers (a job's output is read under the read scope)."),
        )),
        Exchange(n.leases_exchange, "headers", (
            Address("leases", None, ("leasedJob",),
                f"Copies of running jobs (headers exchange, routed on {HOLDER}; the routing "
                "key is the job's own, sheep.<id> or pool, for its return)."),
        )),
        Exchange(n.dead_letter_exchange, "topic", (
            Address("deadLetters", None, ("deadLetter",),
                "Everything dead-lettered, under its original routing key."),
            Address("gaveUp", GAVE_UP, ("jobDispatch",), "Jobs that ran out of deliveries."),
            Address("rejectedSubmissions", DEAD_LETTER_KEY, ("rejectedSubmission",),
                "Submissions Shepherd refused, as they arrived plus the reason in headers."),
            Address("webhookGaveUp", GAVE_UP_KEY, ("abandonedWebhookDelivery",),
                "Deliveries given up after the last retry, or refused by their receiver."),
        )),
        Exchange(n.webhooks_exchange, "direct", (
            Address("webhookDeliveries", DELIVER, ("webhookDelivery",),
                "One job event for one receiver, due now."),
            Address("webhookRetries", retry_routing_key(DELAY_MS), ("webhookDelivery",),
                "A delivery to try again after a delay of the retry schedule."),
        )),
    ]  # fmt: skip


def _queues(
    n: Names, delivery_limit: int, sheep: _Sheep, delays: Sequence[int | str]
) -> list[Queue]:
    every_event = tuple(event_message(kind) for kind in EVENT_KINDS)
    jobs = arguments.job_queue(n, delivery_limit)
    return [
        Queue(n.submit_queue, arguments.quorum(n, delivery_limit), "submitQueue",
            ("jobRequest",), "The gateways consume it."),
        Queue(n.inputs_queue, arguments.quorum(n, delivery_limit), "inputsQueue",
            ("s3Event",), "The gateways consume it."),
        Queue(n.status_queue,
            {**arguments.quorum(n, delivery_limit), "x-single-active-consumer": True},
            "statusQueue", ("statusReport",),
            "One notifier consumes it at a time (single active consumer)."),
        *(
            Queue(n.pool_lane(p), jobs, f"poolQueue{lane_id(p)}", ("jobDispatch",),
                f"Pool jobs of {p} priority; any idle sheep takes one.")
            for p in PRIORITIES
        ),
        *(
            Queue(n.sheep_queue(s, p), jobs, f"sheepQueue{lane_id(p)}", ("jobDispatch",),
                f"Jobs of {p} priority for one sheep.")
            for s in sheep.named
            for p in PRIORITIES
        ),
        *(
            Queue(n.class_lane(c, p), jobs, f"classQueue{lane_id(p)}", ("jobDispatch",),
                f"Jobs of {p} priority for any sheep of a class; an idle one takes one.")
            for c in sheep.classes
            for p in PRIORITIES
        ),
        *(
            Queue(n.lease_queue(s), arguments.lease_queue(n), "leaseQueue", ("leasedJob",),
                "The job a sheep runs, renewed while it runs; expired, it returns to "
                f"{n.jobs_exchange} under its routing key. A sheep of a class has one "
                "that RabbitMQ deletes once unused for three lease times.")
            for s in sheep.named
        ),
        *(
            Queue(n.lease_queue(s), arguments.joined_lease_queue(n, sheep.lease_time))
            for s in sheep.joined
        ),
        Queue(n.dead_letter_queue, {"x-queue-type": "quorum"}, "deadQueue",
            ("deadLetter", "rejectedSubmission", "abandonedWebhookDelivery"),
            "Every dead letter, kept two weeks for inspection."),
        Queue(n.gave_up_queue, {"x-queue-type": "quorum"}, "gaveUpQueue", ("jobDispatch",),
            "Jobs that ran out of deliveries; the notifier marks them failed."),
        Queue(n.event_stream, arguments.event_stream(), "eventStream", every_event,
            "A RabbitMQ stream: the history of job events, kept a day (1 GB at most), which "
            "GET /events and GET /jobs/{id}/events replay from an offset."),
        Queue(n.job_logs_stream, arguments.job_logs_stream(), "jobLogsStream", ("logChunk",),
            "A RabbitMQ stream of what running jobs print, kept an hour (1 GB at most), which "
            "the gateways read for GET /jobs/{id}/logs?follow=true."),
        Queue(n.webhook_events_queue, arguments.quorum(n, delivery_limit), "webhookEventsQueue",
            every_event,
            f"Bound to {n.events_exchange} for job.# by the notifier while webhooks are "
            "configured; its webhook dispatcher consumes it."),
        Queue(n.webhook_deliveries_queue, arguments.quorum(n, delivery_limit),
            "webhookDeliveriesQueue", ("webhookDelivery",),
            "Deliveries due; the notifier's delivery workers POST them."),
        *(
            Queue(n.webhook_retry_queue(d), arguments.retry_queue(n, d), "webhookRetryQueue",
                ("webhookDelivery",),
                f"Holds each delivery for its delay (its TTL), then dead-letters it to "
                f"{n.webhooks_exchange} under {DELIVER}: a retry waits in RabbitMQ, not in "
                "a process.")
            for d in delays
        ),
    ]  # fmt: skip


def _bindings(n: Names, sheep: _Sheep, delays: Sequence[int | str]) -> list[Binding]:
    targets = [
        *((s, None) for s in [None, *sheep.named]),
        *((None, c) for c in sheep.classes),
    ]
    return [
        Binding(n.submit_exchange, n.submit_queue),
        Binding(n.storage_exchange, n.inputs_queue),
        Binding(n.events_exchange, n.status_queue, "status.#"),
        Binding(n.events_exchange, n.event_stream, "job.#"),
        Binding(n.events_exchange, n.job_logs_stream, log_routing_key("*")),
        *(
            Binding(n.jobs_exchange, n.pool_lane(p), Names.job_routing_key(None, p))
            for p in PRIORITIES
        ),
        *(
            Binding(n.jobs_exchange, n.sheep_queue(s, p), Names.job_routing_key(s, p))
            for s in sheep.named
            for p in PRIORITIES
        ),
        *(
            Binding(n.jobs_exchange, n.class_lane(c, p),
                Names.job_routing_key(None, p, sheep_class=c))
            for c in sheep.classes
            for p in PRIORITIES
        ),
        *(
            Binding(n.jobs_exchange, n.status_queue, Names.job_routing_key(s, p, sheep_class=c),
                description="every queued job reaches the notifier too, as its queued "
                "report: one message queues the job and reports it, and the report is in "
                "the status queue before the sheep's running can be")
            for s, c in targets
            for p in PRIORITIES
        ),
        *(
            Binding(n.leases_exchange, n.lease_queue(s), arguments={"x-match": "all", HOLDER: s})
            for s in [*sheep.named, *sheep.joined]
        ),
        Binding(n.dead_letter_exchange, n.dead_letter_queue, "#"),
        Binding(n.dead_letter_exchange, n.gave_up_queue, GAVE_UP),
        Binding(n.webhooks_exchange, n.webhook_deliveries_queue, DELIVER),
        *(
            Binding(n.webhooks_exchange, n.webhook_retry_queue(d), retry_routing_key(d))
            for d in delays
        ),
    ]  # fmt: skip


def to_definitions(topology: Topology, vhost: str = "/") -> dict[str, Any]:
    """RabbitMQ definitions-file form, for ``load_definitions`` at boot."""
    return {
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in topology.exchanges
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": q.arguments,
            }
            for q in topology.queues
        ],
        "bindings": [
            {
                "source": b.exchange,
                "vhost": vhost,
                "destination": b.queue,
                "destination_type": "queue",
                "routing_key": b.routing_key,
                "arguments": b.arguments,
            }
            for b in topology.bindings
        ],
        "policies": [
            {
                "name": p.name,
                "vhost": vhost,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "definition": p.definition,
                "priority": 0,
            }
            for p in topology.policies
        ],
    }
