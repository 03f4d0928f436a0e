"""The broker topology, declared once as data.

The same description is declared by the services at start-up (idempotently, over AMQP) and
exported to ``deploy/rabbitmq/definitions.json``, which RabbitMQ loads at boot. Names are the
contract other-language clients rely on:

==========================  =======  =================================================
exchange                    type     what flows
==========================  =======  =================================================
``<ns>.submit``             fanout   job requests from any AMQP client
``<ns>.jobs``               direct   queued jobs: ``sheep.<id>`` or ``pool``; also
                                     to ``<ns>.status``: a job's message is its
                                     ``queued`` report
``shepherd.storage``        fanout   S3 event notifications from MinIO
``<ns>.events``             topic    ``status.<state>`` reports, ``job.<state>`` events
``<ns>.leases``             headers  the job each sheep is running (see below)
``<ns>.dlx``                topic    dead letters of every Shepherd queue
``<ns>.webhooks``           direct   webhook deliveries: ``deliver``, ``retry.<ms>ms``
==========================  =======  =================================================

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

from schemas.webhooks import DEFAULT_RETRY_SCHEDULE

if TYPE_CHECKING:
    from schemas.config import Config

ExchangeType = Literal["direct", "fanout", "topic", "headers"]


@dataclass(frozen=True)
class Exchange:
    name: str
    type: ExchangeType


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


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
    def for_config(cls, config: Config, sheep_ids: Sequence[str] | None = None) -> Topology:
        """What ``config`` needs declared: its namespace with its delivery limit, webhook
        retry queues for its schedule, and the queues of ``sheep_ids`` (by default, of every
        sheep it configures)."""
        return build_topology(
            Names.for_config(config),
            config.broker.delivery_limit,
            list(config.sheep if sheep_ids is None else sheep_ids),
            config.notifier.webhook_retry_schedule,
        )


@dataclass(frozen=True)
class Names:
    """Every exchange and queue name of one namespace (``shepherd`` unless configured)."""

    namespace: str = "shepherd"
    storage_exchange: str = "shepherd.storage"

    @classmethod
    def for_config(cls, config: Config) -> Names:
        return cls(config.broker.namespace, config.storage.notification_exchange)

    @property
    def submit_exchange(self) -> str:
        return f"{self.namespace}.submit"

    @property
    def jobs_exchange(self) -> str:
        return f"{self.namespace}.jobs"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def leases_exchange(self) -> str:
        return f"{self.namespace}.leases"

    @property
    def webhooks_exchange(self) -> str:
        return f"{self.namespace}.webhooks"

    @property
    def submit_queue(self) -> str:
        return f"{self.namespace}.submit"

    @property
    def inputs_queue(self) -> str:
        return f"{self.namespace}.inputs"

    @property
    def status_queue(self) -> str:
        return f"{self.namespace}.status"

    @property
    def pool_queue(self) -> str:
        return f"{self.namespace}.pool"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def gave_up_queue(self) -> str:
        return f"{self.namespace}.gave-up"

    @property
    def event_stream(self) -> str:
        return f"{self.namespace}.event-stream"

    @property
    def webhook_events_queue(self) -> str:
        return f"{self.namespace}.webhook-events"

    @property
    def webhook_deliveries_queue(self) -> str:
        return f"{self.namespace}.webhook-deliveries"

    def webhook_retry_queue(self, delay_ms: int) -> str:
        return f"{self.namespace}.webhook-retry.{delay_ms}ms"

    def sheep_queue(self, sheep_id: str) -> str:
        return f"{self.namespace}.sheep.{sheep_id}"

    def lease_queue(self, sheep_id: str) -> str:
        return f"{self.namespace}.lease.{sheep_id}"

    @staticmethod
    def job_routing_key(sheep_id: str | None) -> str:
        return f"sheep.{sheep_id}" if sheep_id else "pool"


def _quorum(names: Names, delivery_limit: int | None = None) -> dict[str, Any]:
    """Replicated, durable queues whose rejected or over-delivered messages are dead-lettered
    at-least-once (the dead-letter copy is confirmed before the original is dropped)."""
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": names.dead_letter_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    return arguments


GAVE_UP = "gave-up"
"""Dead-letter routing key of jobs: they also reach ``<ns>.gave-up``, to be marked failed."""
HOLDER = "shepherd-holder"
"""Header naming the sheep a lease copy belongs to; ``<ns>.leases`` routes on it."""
ATTEMPTS = "shepherd-attempts"
"""Header counting the attempts a job had before it went back to a queue."""
REDISPATCHED = "shepherd-redispatched"
"""Header of a job published again by a gateway recovering its pending jobs: it may have
run already, so its sheep checks its status first."""
NEW_JOB = "shepherd-new-job"
"""Header of a job queued by the declaration that created it: no status can exist yet, so
the notifier need not look one up."""


def job_queue(names: Names, name: str, delivery_limit: int) -> Queue:
    """A queue of jobs (the pool or one sheep's): bounded redeliveries, then dead-lettered."""
    return Queue(name, {**_quorum(names, delivery_limit), "x-dead-letter-routing-key": GAVE_UP})


def lease_queue(names: Names, sheep_id: str) -> Queue:
    """Where a sheep parks the job it runs; expired copies go back to ``<ns>.jobs`` under
    the routing key they were parked with."""
    return Queue(
        names.lease_queue(sheep_id),
        {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": names.jobs_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


EVENT_STREAM_RETENTION: dict[str, Any] = {
    "x-max-age": "1D",
    "x-max-length-bytes": 1_000_000_000,
    # Retention drops whole segments: smaller ones than the default 500 MB keep the size
    # bound close to what it says.
    "x-stream-max-segment-size-bytes": 50_000_000,
}
"""How long ``<ns>.event-stream`` keeps events: a day, and 1 GB at most (about a million
events), whichever is reached first. A client away for longer misses what was dropped. Queue
arguments cannot change once declared: a new retention needs the stream deleted first."""


def event_stream(names: Names) -> Queue:
    """The history of job events that live streams replay from (see the module docstring)."""
    return Queue(names.event_stream, {"x-queue-type": "stream", **EVENT_STREAM_RETENTION})


DELIVER = "deliver"
"""Routing key of webhook deliveries due now, on ``<ns>.webhooks``."""


def retry_delays_ms(schedule: Sequence[float]) -> list[int]:
    """The distinct delays of a webhook retry schedule, in milliseconds, shortest first: one
    retry queue each."""
    return sorted({max(1, round(seconds * 1000)) for seconds in schedule})


def retry_routing_key(delay_ms: int) -> str:
    return f"retry.{delay_ms}ms"


def webhook_queues(names: Names, delivery_limit: int, schedule: Sequence[float]) -> list[Queue]:
    """The dispatcher's feed of job events, the deliveries due, and one retry queue per delay
    of the schedule. A retry queue holds each message for its TTL (or the message's own,
    shorter expiration: jitter, Retry-After) and then dead-letters it back to the deliveries:
    a retry waits in RabbitMQ, not in a process, and never longer than its queue's TTL."""
    return [
        Queue(names.webhook_events_queue, _quorum(names, delivery_limit)),
        Queue(names.webhook_deliveries_queue, _quorum(names, delivery_limit)),
        *(
            Queue(
                names.webhook_retry_queue(delay),
                {
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": names.webhooks_exchange,
                    "x-dead-letter-routing-key": DELIVER,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            for delay in retry_delays_ms(schedule)
        ),
    ]


def webhook_events_binding(names: Names) -> Binding:
    """Every job event, for the webhook dispatcher; bound only while webhooks are configured."""
    return Binding(names.events_exchange, names.webhook_events_queue, "job.#")


def build_topology(
    names: Names,
    delivery_limit: int,
    sheep_ids: list[str] = (),
    webhook_retry_schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE,
) -> Topology:
    """Everything a namespace needs; sheep queues for the sheep named here, webhook retry
    queues for the delays of ``webhook_retry_schedule``."""
    jobs = [job_queue(names, names.pool_queue, delivery_limit)] + [
        job_queue(names, names.sheep_queue(s), delivery_limit) for s in sheep_ids
    ]
    leases = [lease_queue(names, s) for s in sheep_ids]
    dead = Queue(names.dead_letter_queue, {"x-queue-type": "quorum"})
    gave_up = Queue(names.gave_up_queue, {"x-queue-type": "quorum"})
    status = Queue(
        names.status_queue, {**_quorum(names, delivery_limit), "x-single-active-consumer": True}
    )
    return Topology(
        exchanges=[
            Exchange(names.submit_exchange, "fanout"),
            Exchange(names.jobs_exchange, "direct"),
            Exchange(names.storage_exchange, "fanout"),
            Exchange(names.events_exchange, "topic"),
            Exchange(names.leases_exchange, "headers"),
            Exchange(names.dead_letter_exchange, "topic"),
            Exchange(names.webhooks_exchange, "direct"),
        ],
        queues=[
            Queue(names.submit_queue, _quorum(names, delivery_limit)),
            Queue(names.inputs_queue, _quorum(names, delivery_limit)),
            status,
            *jobs,
            *leases,
            dead,
            gave_up,
            event_stream(names),
            *webhook_queues(names, delivery_limit, webhook_retry_schedule),
        ],
        bindings=[
            Binding(names.submit_exchange, names.submit_queue),
            Binding(names.storage_exchange, names.inputs_queue),
            Binding(names.events_exchange, names.status_queue, "status.#"),
            Binding(names.events_exchange, names.event_stream, "job.#"),
            Binding(names.jobs_exchange, names.pool_queue, Names.job_routing_key(None)),
            *(
                Binding(names.jobs_exchange, names.sheep_queue(s), Names.job_routing_key(s))
                for s in sheep_ids
            ),
            # Every queued job reaches the notifier too, as its "queued" report: one message
            # queues the job and reports it, and the report is in the status queue before the
            # sheep's "running" can be.
            *(
                Binding(names.jobs_exchange, names.status_queue, Names.job_routing_key(s))
                for s in [None, *sheep_ids]
            ),
            *(
                Binding(
                    names.leases_exchange,
                    names.lease_queue(s),
                    arguments={"x-match": "all", HOLDER: s},
                )
                for s in sheep_ids
            ),
            Binding(names.dead_letter_exchange, names.dead_letter_queue, "#"),
            Binding(names.dead_letter_exchange, names.gave_up_queue, GAVE_UP),
            Binding(names.webhooks_exchange, names.webhook_deliveries_queue, DELIVER),
            *(
                Binding(names.webhooks_exchange, names.webhook_retry_queue(d), retry_routing_key(d))
                for d in retry_delays_ms(webhook_retry_schedule)
            ),
        ],
        policies=[
            # Dead letters are kept two weeks for inspection, then expire.
            Policy(
                f"{names.namespace}-dead-letters",
                f"^{names.dead_letter_queue}$",
                {"message-ttl": 14 * 24 * 3600 * 1000},
            ),
        ],
    )


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
