"""Who does what on Shepherd's AMQP interface: which service sends to each address of the
topology and which consumes each queue (the channels themselves, their messages and
descriptions are the topology's own, :mod:`schemas.topology`). ``schemas.asyncapi`` builds
the AsyncAPI document's operations from these tables in loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from schemas.asyncapi_messages import EVENT_KINDS, camel, event_channel
from schemas.events import REJECTED, STATUS_KINDS
from schemas.job import PRIORITIES
from schemas.status import JobState
from schemas.topology import Address, lane_id

SUBMISSION_REPLIES = Address(
    "submissionReplies",
    None,
    ("submissionReply",),
    "The reply_to queue a submission named, through the default exchange. Shepherd never "
    "replies into queues of its namespace.",
)
"""The one address outside the topology: replies go through the default exchange."""

PARAMETERS: dict[str, dict[str, Any]] = {
    "sheep_id": {"description": "A configured sheep id.", "examples": ["gpu0"]},
    "delay_ms": {
        "description": "A delay of notifier.webhook_retry_schedule, in milliseconds.",
        "examples": ["5000"],
    },
    "state": {"description": "The job's new state, or progress.", "enum": list(STATUS_KINDS)},
    "stream": {"description": "Which output of the runner.", "enum": ["stdout", "stderr"]},
}
"""The ``{parameters}`` of addresses and queue names."""


@dataclass(frozen=True)
class Operation:
    id: str
    action: Literal["send", "receive"]
    channel: str
    summary: str


_TERMINAL = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

OPERATIONS: list[Operation] = [
    # -- what Shepherd sends -----------------------------------------------------------------
    *(
        Operation(
            f"dispatchToSheep{lane_id(p)}",
            "send",
            f"jobsForSheep{lane_id(p)}",
            f"The gateway queues a job of {p} priority.",
        )
        for p in PRIORITIES
    ),
    *(
        Operation(
            f"dispatchToPool{lane_id(p)}",
            "send",
            f"jobsForPool{lane_id(p)}",
            f"The gateway queues a job of {p} priority.",
        )
        for p in PRIORITIES
    ),
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
    Operation("publishOutput", "send", "jobOutput", "A sheep publishes what its job prints."),
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
    *(
        Operation(
            f"runPoolJob{lane_id(p)}",
            "receive",
            f"poolQueue{lane_id(p)}",
            f"An idle sheep runs a pool job of {p} priority.",
        )
        for p in PRIORITIES
    ),
    *(
        Operation(
            f"runSheepJob{lane_id(p)}",
            "receive",
            f"sheepQueue{lane_id(p)}",
            f"A sheep runs its own job of {p} priority.",
        )
        for p in PRIORITIES
    ),
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
        "followOutput",
        "receive",
        "jobLogsStream",
        "The gateway reads a running job's output for GET /jobs/{id}/logs?follow=true.",
    ),
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
