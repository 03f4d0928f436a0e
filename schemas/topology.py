"""The broker topology, declared once as data.

The same description is declared by the services at start-up (idempotently, over AMQP) and
exported to ``deploy/rabbitmq/definitions.json``, which RabbitMQ loads at boot. Names are the
contract other-language clients rely on:

==========================  =======  =================================================
exchange                    type     what flows
==========================  =======  =================================================
``<ns>.submit``             fanout   job requests from any AMQP client
``<ns>.jobs``               direct   queued jobs: ``sheep.<id>`` or ``pool``
``shepherd.storage``        fanout   S3 event notifications from MinIO
``<ns>.events``             topic    ``status.<state>`` reports, ``job.<state>`` events
``<ns>.leases``             headers  the job each sheep is running (see below)
``<ns>.dlx``                topic    dead letters of every Shepherd queue
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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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


@dataclass(frozen=True)
class Names:
    """Every exchange and queue name of one namespace (``shepherd`` unless configured)."""

    namespace: str = "shepherd"
    storage_exchange: str = "shepherd.storage"

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


def build_topology(names: Names, delivery_limit: int, sheep_ids: list[str] = ()) -> Topology:
    """Everything a namespace needs; sheep queues for the sheep named here."""
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
        ],
        queues=[
            Queue(names.submit_queue, _quorum(names, delivery_limit)),
            Queue(names.inputs_queue, _quorum(names, delivery_limit)),
            status,
            *jobs,
            *leases,
            dead,
            gave_up,
        ],
        bindings=[
            Binding(names.submit_exchange, names.submit_queue),
            Binding(names.storage_exchange, names.inputs_queue),
            Binding(names.events_exchange, names.status_queue, "status.#"),
            Binding(names.jobs_exchange, names.pool_queue, Names.job_routing_key(None)),
            *(
                Binding(names.jobs_exchange, names.sheep_queue(s), Names.job_routing_key(s))
                for s in sheep_ids
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
