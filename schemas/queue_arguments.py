"""The arguments of each kind of queue in the topology: how it is replicated, bounded, retained
and dead-lettered. Queue arguments cannot change once a queue is declared: a new value needs
the queue deleted first."""

from __future__ import annotations

from typing import Any

from schemas.broker_names import DELIVER, GAVE_UP, Names

_REPLICATED: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
"""A quorum queue that dead-letters at-least-once (the dead-letter copy is confirmed before
the original is dropped) and refuses publishes when full rather than dropping its head."""

EVENT_STREAM_RETENTION: dict[str, Any] = {
    "x-max-age": "1D",
    "x-max-length-bytes": 1_000_000_000,
    # Retention drops whole segments: smaller ones than the default 500 MB keep the size
    # bound close to what it says.
    "x-stream-max-segment-size-bytes": 50_000_000,
}
"""How long ``<ns>.event-stream`` keeps events: a day, and 1 GB at most (about a million
events), whichever is reached first. A client away for longer misses what was dropped."""


def quorum(names: Names, delivery_limit: int | None = None) -> dict[str, Any]:
    """Replicated and durable; rejected or over-delivered messages go to ``<ns>.dlx``."""
    arguments = {**_REPLICATED, "x-dead-letter-exchange": names.dead_letter_exchange}
    if delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    return arguments


def job_queue(names: Names, delivery_limit: int) -> dict[str, Any]:
    """A queue of jobs (the pool or one sheep's): bounded redeliveries, then dead-lettered
    under ``gave-up``."""
    return {**quorum(names, delivery_limit), "x-dead-letter-routing-key": GAVE_UP}


def lease_queue(names: Names) -> dict[str, Any]:
    """Expired lease copies go back to ``<ns>.jobs`` under the routing key they were parked
    with."""
    return {**_REPLICATED, "x-dead-letter-exchange": names.jobs_exchange}


def joined_lease_queue(names: Names, lease_time: float) -> dict[str, Any]:
    """The lease queue of a sheep that joined a class (its id made at start, never seen
    again once it is gone): RabbitMQ deletes it once unused for three lease times, when
    every copy it held has expired back to its queue (a copy lives one lease time)."""
    return {**lease_queue(names), "x-expires": round(3 * lease_time * 1000)}


JOB_LOGS_RETENTION: dict[str, Any] = {
    "x-max-age": "1h",
    "x-max-length-bytes": 1_000_000_000,
    "x-stream-max-segment-size-bytes": 50_000_000,
}
"""How long ``<ns>.job-logs`` keeps live output: an hour, 1 GB at most. It serves followers
of running jobs only: a job's logs are stored with it as it ends."""


def event_stream() -> dict[str, Any]:
    return {"x-queue-type": "stream", **EVENT_STREAM_RETENTION}


def job_logs_stream() -> dict[str, Any]:
    return {"x-queue-type": "stream", **JOB_LOGS_RETENTION}


def retry_queue(names: Names, delay_ms: int | str) -> dict[str, Any]:
    """Holds each message for its TTL (or the message's own, shorter expiration: jitter,
    Retry-After), then dead-letters it to the deliveries due."""
    return {
        **_REPLICATED,
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": names.webhooks_exchange,
        "x-dead-letter-routing-key": DELIVER,
    }
