"""Shepherd's AMQP interface as data: every address on an exchange that something publishes to,
every queue that something consumes, and who does which. ``schemas.asyncapi`` builds the
AsyncAPI document from these tables in loops; names come from :class:`Names` and exchange
types from the topology, so a renamed queue or a changed exchange shows everywhere at once
(``tests/unit/test_asyncapi.py`` checks that every exchange, queue and binding of the
topology is described here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from schemas.asyncapi_messages import (
    EVENT_KINDS,
    KIND_SUMMARY,
    camel,
    event_channel,
    event_message,
)
from schemas.events import CLOUDEVENT_TYPE_PREFIX, REJECTED, STATUS_KINDS
from schemas.status import JobState
from schemas.submission import DEAD_LETTER_KEY
from schemas.topology import DELIVER, GAVE_UP, HOLDER, Names
from schemas.webhooks import GAVE_UP_KEY

Text = Callable[[Names], str]
"""A name or description of the namespace ``Names`` stands for."""

SHEEP_ID = {"description": "A configured sheep id.", "examples": ["gpu0"]}
RETRY_DELAY = {
    "description": "A delay of notifier.webhook_retry_schedule, in milliseconds.",
    "examples": ["5000"],
}
PARAMETERS: dict[str, dict[str, Any]] = {
    "sheep_id": SHEEP_ID,
    "delay_ms": RETRY_DELAY,
    "state": {"description": "The job's new state, or progress.", "enum": list(STATUS_KINDS)},
}


@dataclass(frozen=True)
class Channel:
    """An address on an exchange (``exchange`` set: publishers need it) or a queue
    (``exchange`` None: what a service consumes). ``{parameters}`` in the address vary."""

    id: str
    address: Text | None
    messages: tuple[str, ...]
    description: Text
    exchange: Text | None = None

    @property
    def parameters(self) -> list[str]:
        return (
            [p for p in PARAMETERS if f"{{{p}}}" in self.address(Names())] if self.address else []
        )


@dataclass(frozen=True)
class Operation:
    id: str
    action: Literal["send", "receive"]
    channel: str
    summary: str


def _on(exchange: Text, channel: str, key: str | None, messages: tuple[str, ...], text: Text):
    return Channel(channel, (lambda _: key) if key else None, messages, text, exchange)


def _queue(channel: str, queue: Text, messages: tuple[str, ...], text: Text) -> Channel:
    return Channel(channel, queue, messages, text)


EVERY_EVENT = tuple(event_message(kind) for kind in EVENT_KINDS)

CHANNELS: list[Channel] = [
    # -- addresses on exchanges -------------------------------------------------------------
    _on(lambda n: n.submit_exchange, "submit", None, ("jobRequest",), lambda n: (
        "Job requests from any AMQP client (fanout: the routing key is ignored). Handled "
        "like POST /start-job; name reply_to (and correlation_id) to get the outcome.")),
    _on(lambda n: "", "submissionReplies", None, ("submissionReply",), lambda n: (
        "The reply_to queue a submission named, through the default exchange. Shepherd "
        f"never replies into queues of its namespace ({n.namespace}.*).")),
    _on(lambda n: n.jobs_exchange, "jobsForSheep", "sheep.{sheep_id}", ("jobDispatch",),
        lambda n: "Queued jobs for one sheep."),
    _on(lambda n: n.jobs_exchange, "jobsForPool", "pool", ("jobDispatch",),
        lambda n: "Queued jobs for any sheep."),
    _on(lambda n: n.storage_exchange, "storageEvents", None, ("s3Event",), lambda n: (
        "MinIO's bucket notifications (fanout; MinIO's own routing key). Shared by every "
        "namespace on the broker.")),
    _on(lambda n: n.events_exchange, "statusReports", "status.{state}", ("statusReport",),
        lambda n: ("Reports of what happened to a job, from the gateway and the sheep, for the "
        "notifier only: subscribe to job.<kind> instead.")),
    *(
        _on(lambda n: n.events_exchange, event_channel(kind), f"job.{kind}",
            (event_message(kind),), lambda n, kind=kind: (
            f"CloudEvents {CLOUDEVENT_TYPE_PREFIX}{kind}: {KIND_SUMMARY[kind]} Published "
            "once the status is durable; bind your own queue (job.# for all)."))
        for kind in STATUS_KINDS
    ),
    _on(lambda n: n.events_exchange, event_channel(REJECTED), f"job.{REJECTED}",
        (event_message(REJECTED),), lambda n: (
        f"CloudEvents {CLOUDEVENT_TYPE_PREFIX}{REJECTED}: a submission on "
        f"{n.submit_exchange} was refused. Not a job state: no status changes.")),
    _on(lambda n: n.events_exchange, "sheepStates", "sheep.{sheep_id}", ("sheepState",),
        lambda n: "What each sheep announces when its state changes and every few seconds."),
    _on(lambda n: n.leases_exchange, "leases", None, ("leasedJob",), lambda n: (
        f"Copies of running jobs (headers exchange, routed on {HOLDER}; the routing key "
        "is the job's own, sheep.<id> or pool, for its return).")),
    _on(lambda n: n.dead_letter_exchange, "deadLetters", None, ("deadLetter",),
        lambda n: "Everything dead-lettered, under its original routing key."),
    _on(lambda n: n.dead_letter_exchange, "gaveUp", GAVE_UP, ("jobDispatch",),
        lambda n: "Jobs that ran out of deliveries."),
    _on(lambda n: n.dead_letter_exchange, "rejectedSubmissions", DEAD_LETTER_KEY,
        ("rejectedSubmission",),
        lambda n: "Submissions Shepherd refused, as they arrived plus the reason in headers."),
    # -- queues ------------------------------------------------------------------------------
    _queue("submitQueue", lambda n: n.submit_queue, ("jobRequest",),
           lambda n: f"Bound to {n.submit_exchange}; the gateways consume it."),
    _queue("inputsQueue", lambda n: n.inputs_queue, ("s3Event",),
           lambda n: f"Bound to {n.storage_exchange}; the gateways consume it."),
    _queue("statusQueue", lambda n: n.status_queue, ("statusReport",), lambda n: (
        f"Bound to {n.events_exchange} for status.#; one notifier consumes it at a time "
        "(single active consumer).")),
    _queue("poolQueue", lambda n: n.pool_queue, ("jobDispatch",),
           lambda n: "Pool jobs; any idle sheep takes one."),
    _queue("sheepQueue", lambda n: n.sheep_queue("{sheep_id}"), ("jobDispatch",),
           lambda n: "Jobs for one sheep."),
    _queue("leaseQueue", lambda n: n.lease_queue("{sheep_id}"), ("leasedJob",), lambda n: (
        f"The job a sheep runs, renewed while it runs; expired, it returns to "
        f"{n.jobs_exchange} under its routing key.")),
    _queue("deadQueue", lambda n: n.dead_letter_queue,
           ("deadLetter", "rejectedSubmission", "abandonedWebhookDelivery"),
           lambda n: "Every dead letter, kept two weeks for inspection."),
    _queue("gaveUpQueue", lambda n: n.gave_up_queue, ("jobDispatch",),
           lambda n: "Jobs that ran out of deliveries; the notifier marks them failed."),
    # -- webhooks and the event history ------------------------------------------------------
    _queue("eventStream", lambda n: n.event_stream, EVERY_EVENT, lambda n: (
        f"A RabbitMQ stream bound to {n.events_exchange} for job.#: the history of job "
        "events, kept a day (1 GB at most), which GET /events and GET /jobs/{id}/events "
        "replay from an offset.")),
    _queue("webhookEventsQueue", lambda n: n.webhook_events_queue, EVERY_EVENT, lambda n: (
        f"Bound to {n.events_exchange} for job.# by the notifier while webhooks are "
        "configured; its webhook dispatcher consumes it.")),
    _on(lambda n: n.webhooks_exchange, "webhookDeliveries", DELIVER, ("webhookDelivery",),
        lambda n: "One job event for one receiver, due now."),
    _queue("webhookDeliveriesQueue", lambda n: n.webhook_deliveries_queue, ("webhookDelivery",),
           lambda n: "Deliveries due; the notifier's delivery workers POST them."),
    _on(lambda n: n.webhooks_exchange, "webhookRetries", "retry.{delay_ms}ms",
        ("webhookDelivery",),
        lambda n: "A delivery to try again after a delay of the retry schedule."),
    _queue("webhookRetryQueue", lambda n: f"{n.namespace}.webhook-retry.{{delay_ms}}ms",
           ("webhookDelivery",), lambda n: (
        f"Holds each delivery for its delay (its TTL), then dead-letters it to "
        f"{n.webhooks_exchange} under {DELIVER}.")),
    _on(lambda n: n.dead_letter_exchange, "webhookGaveUp", GAVE_UP_KEY,
        ("abandonedWebhookDelivery",),
        lambda n: "Deliveries given up after the last retry, or refused by their receiver."),
]  # fmt: skip

_TERMINAL = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

OPERATIONS: list[Operation] = [
    # -- what Shepherd sends -----------------------------------------------------------------
    Operation("dispatchToSheep", "send", "jobsForSheep", "The gateway queues a job."),
    Operation("dispatchToPool", "send", "jobsForPool", "The gateway queues a job."),
    Operation("reportStatus", "send", "statusReports", "The gateway and the sheep report."),
    *(
        Operation(
            f"announce{camel(kind)}",
            "send",
            event_channel(kind),
            f"The {'gateway' if kind == REJECTED else 'notifier'} announces job.{kind}.",
        )
        for kind in EVENT_KINDS
    ),
    Operation("announceSheep", "send", "sheepStates", "A sheep announces itself."),
    Operation("leaseJob", "send", "leases", "A sheep parks and renews its job."),
    Operation(
        "rejectSubmission",
        "send",
        "rejectedSubmissions",
        "The gateway dead-letters a submission it refused.",
    ),
    # -- what Shepherd receives --------------------------------------------------------------
    Operation(
        "takeSubmission",
        "receive",
        "submitQueue",
        "The gateway declares a submitted job, acks it once the declaration is durable, "
        "and replies if asked.",
    ),
    Operation(
        "takeUpload", "receive", "inputsQueue", "The gateway queues jobs whose inputs are in."
    ),
    Operation("applyStatus", "receive", "statusQueue", "The notifier writes status.json."),
    Operation("runPoolJob", "receive", "poolQueue", "An idle sheep runs a pool job."),
    Operation("runSheepJob", "receive", "sheepQueue", "A sheep runs its own job."),
    Operation(
        "returnLease",
        "receive",
        "leaseQueue",
        "A sheep starting again returns the job its previous life held.",
    ),
    Operation("failGaveUpJob", "receive", "gaveUpQueue", "The notifier marks the job failed."),
    Operation(
        "watchSheep",
        "receive",
        "sheepStates",
        "The gateway keeps the fleet for GET /status (on a private queue).",
    ),
    *(
        Operation(
            f"wake{camel(state.value)}",
            "receive",
            event_channel(state.value),
            "The gateway wakes the long-polls of the job (on a private queue).",
        )
        for state in _TERMINAL
    ),
    # -- webhooks and the event history ------------------------------------------------------
    Operation(
        "fanOutWebhooks",
        "receive",
        "webhookEventsQueue",
        "The notifier makes one delivery per matching subscription and callback_url.",
    ),
    Operation("queueWebhookDelivery", "send", "webhookDeliveries", "The notifier queues one."),
    Operation("deliverWebhook", "receive", "webhookDeliveriesQueue", "The notifier POSTs one."),
    Operation("retryWebhook", "send", "webhookRetries", "The notifier parks a failed attempt."),
    Operation("abandonWebhook", "send", "webhookGaveUp", "The notifier gives a delivery up."),
    Operation(
        "streamEvents",
        "receive",
        "eventStream",
        "The gateway reads the history for its live streams (server-sent events).",
    ),
]

REPLIES: dict[str, tuple[str, str]] = {
    "takeSubmission": ("submissionReplies", "submissionReply"),
}
"""Operations that reply: the channel and message of the reply, sent to ``reply_to``."""
