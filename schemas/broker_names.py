"""The names of one namespace's exchanges and queues, and the routing keys and headers Shepherd
gives meaning to: the contract other-language clients rely on. What is declared under these
names, and why, is :mod:`schemas.topology`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.config import Config
    from schemas.job import Priority

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
LOG_JOB = "shepherd-job"
"""Header of a piece of live output: the job that printed it."""
LOG_ATTEMPT = "shepherd-attempt"
"""Header of a piece of live output: the attempt of the job that printed it."""


def log_routing_key(stream: str) -> str:
    """Routing key of a piece of a running job's ``stdout`` or ``stderr``, on ``<ns>.events``."""
    return f"log.{stream}"


DELIVER = "deliver"
"""Routing key of webhook deliveries due now, on ``<ns>.webhooks``."""


def retry_routing_key(delay_ms: int | str) -> str:
    """Routing key of webhook deliveries to try again after ``delay_ms``, on ``<ns>.webhooks``."""
    return f"retry.{delay_ms}ms"


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
        """The pool's queue of normal-priority jobs; :meth:`pool_lane` names each."""
        return self.pool_lane("normal")

    def pool_lane(self, priority: Priority) -> str:
        return f"{self.namespace}.pool{_lane(priority)}"

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
    def job_logs_stream(self) -> str:
        return f"{self.namespace}.job-logs"

    @property
    def webhook_events_queue(self) -> str:
        return f"{self.namespace}.webhook-events"

    @property
    def webhook_deliveries_queue(self) -> str:
        return f"{self.namespace}.webhook-deliveries"

    def webhook_retry_queue(self, delay_ms: int | str) -> str:
        return f"{self.namespace}.webhook-retry.{delay_ms}ms"

    def sheep_queue(self, sheep_id: str, priority: Priority = "normal") -> str:
        """A sheep's own queue of jobs of ``priority``."""
        return f"{self.namespace}.sheep.{sheep_id}{_lane(priority)}"

    def class_lane(self, sheep_class: str, priority: Priority = "normal") -> str:
        """The queue of jobs of ``priority`` for any sheep of a class."""
        return f"{self.namespace}.class.{sheep_class}{_lane(priority)}"

    def lease_queue(self, sheep_id: str) -> str:
        return f"{self.namespace}.lease.{sheep_id}"

    @staticmethod
    def job_routing_key(
        sheep_id: str | None, priority: Priority = "normal", *, sheep_class: str | None = None
    ) -> str:
        """The routing key of a job on ``<ns>.jobs``: its sheep's, its sheep class's, or the
        pool's, and its priority's."""
        target = (
            f"sheep.{sheep_id}" if sheep_id else f"class.{sheep_class}" if sheep_class else "pool"
        )
        return target + _lane(priority)


def _lane(priority: Priority) -> str:
    """What a priority adds to a job queue's name and routing key: nothing for normal (the
    queues of before priorities), else ``:high`` or ``:low`` (no sheep id holds a colon)."""
    return "" if priority == "normal" else f":{priority}"
