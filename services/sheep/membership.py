"""Who a sheep is: a sheep the config names, or one that joins a class (``sheep_classes``) with
an id made as it starts, and the queues that follow from that.

    member = Membership.named(config, "gpu0")         # sheep.gpu0 queues, lease.gpu0
    member = Membership.joining(config, "a100")       # id a100-5f0c2e9b: class.a100 queues
    await broker.declare(member.topology(config))

A named sheep has queues of its own, declared for good. A sheep of a class takes the jobs of
its class's queues and of the pool, as any of its kind would, and has only a lease queue of
its own, which RabbitMQ deletes once it has gone unused (``queue_arguments.joined_lease_queue``),
so that sheep come and go without a trace in the broker or a change to the config.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from schemas.broker_names import Names
from schemas.config import Config, SheepConfig
from schemas.job import PRIORITIES
from schemas.topology import Topology


@dataclass(frozen=True)
class Membership:
    sheep_id: str
    section: SheepConfig
    sheep_class: str | None = None

    @classmethod
    def named(cls, config: Config, sheep_id: str) -> Membership:
        if sheep_id not in config.sheep:
            raise ValueError(
                f"sheep {sheep_id!r} is not configured (known: {sorted(config.sheep)})"
            )
        return cls(sheep_id, config.sheep[sheep_id])

    @classmethod
    def joining(cls, config: Config, sheep_class: str, sheep_id: str | None = None) -> Membership:
        """A new sheep of ``sheep_class``, with a fresh id unless one is given."""
        if sheep_class not in config.sheep_classes:
            raise ValueError(
                f"sheep class {sheep_class!r} is not configured "
                f"(known: {sorted(config.sheep_classes)})"
            )
        member_id = sheep_id or f"{sheep_class}-{secrets.token_hex(4)}"
        return cls(member_id, config.sheep_classes[sheep_class], sheep_class)

    def topology(self, config: Config) -> Topology:
        """What the sheep declares as it starts: the namespace, and its own queues."""
        if self.sheep_class is None:
            return Topology.for_config(config, [self.sheep_id])
        return Topology.for_config(config, [], joined=[self.sheep_id])

    def lease_topology(self, config: Config) -> Topology | None:
        """For a sheep of a class, its lease queue and binding alone: declared again before
        each lease, the queue having perhaps expired while the sheep idled."""
        if self.sheep_class is None:
            return None
        whole = self.topology(config)
        lease_queue = Names.for_config(config).lease_queue(self.sheep_id)
        return Topology(
            exchanges=[],
            queues=[q for q in whole.queues if q.name == lease_queue],
            bindings=[b for b in whole.bindings if b.queue == lease_queue],
            policies=[],
        )

    def own_queues(self, names: Names) -> list[str]:
        """The queues consumed all the time, the highest priority first: a named sheep's."""
        if self.sheep_class is not None:
            return []
        return [names.sheep_queue(self.sheep_id, p) for p in PRIORITIES]

    def shared_queues(self, names: Names) -> list[str]:
        """The queues consumed only while idle (see ``services.sheep.deliveries``): its
        class's, then the pool's."""
        classes = [] if self.sheep_class is None else [self.sheep_class]
        return [
            *(names.class_lane(c, p) for c in classes for p in PRIORITIES),
            *(names.pool_lane(p) for p in PRIORITIES),
        ]
