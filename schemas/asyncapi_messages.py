"""The messages of the AsyncAPI document (``components.messages``): each names its payload
model, whose JSON Schema is under ``components.schemas``, and the headers it carries."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from schemas.broker_names import ATTEMPTS, HOLDER, LOG_ATTEMPT, LOG_JOB
from schemas.events import (
    CLOUDEVENT_TYPE_PREFIX,
    CLOUDEVENTS_CONTENT_TYPE,
    PROGRESS,
    REJECTED,
    STATUS_KINDS,
    JobEvent,
    JobRejectedEvent,
    RejectionReason,
    SheepState,
    StatusReport,
)
from schemas.job import JobDispatch, JobRequest
from schemas.s3 import S3EventNotification
from schemas.status import JobState
from schemas.submission import REJECTION_DETAIL_HEADER, REJECTION_HEADER, SubmissionReply
from schemas.webhooks import ATTEMPT_HEADER, REASON_HEADER, WebhookDelivery

JSON = "application/json"

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    # What others write is described as Shepherd validates it, what it writes as it writes it.
    (JobRequest, "validation"),
    (S3EventNotification, "validation"),
    (SubmissionReply, "serialization"),
    (JobDispatch, "serialization"),
    (StatusReport, "serialization"),
    (JobEvent, "serialization"),
    (JobRejectedEvent, "serialization"),
    (SheepState, "serialization"),
    (WebhookDelivery, "serialization"),
]
EVENT_KINDS = (*STATUS_KINDS, REJECTED)
"""Every kind of ``job.<kind>`` event."""


def _schema(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


KIND_SUMMARY = {
    JobState.ACCEPTED.value: "the job is declared and waits for its inputs.",
    JobState.QUEUED.value: "the job is queued for a sheep.",
    JobState.RUNNING.value: "a sheep runs the job (again, with attempt + 1, after a loss).",
    JobState.DONE.value: "the job's outputs are in the store.",
    JobState.FAILED.value: "the job failed; data.error says why.",
    JobState.CANCELLED.value: "the job was cancelled.",
    PROGRESS: "the running job reported progress (data.progress).",
}


def camel(kind: str) -> str:
    return kind[:1].upper() + kind[1:]


def event_channel(kind: str) -> str:
    return f"job{camel(kind)}"


def event_message(kind: str) -> str:
    return f"job{camel(kind)}Event"


def _correlation() -> dict[str, str]:
    return {
        "location": "$message.header#/correlation_id",
        "description": "The AMQP correlation_id property, copied from submission to reply.",
    }


def _status_event(kind: str) -> dict[str, Any]:
    """A :class:`JobEvent` of one kind: its ``type``, and the state its data holds."""
    state = JobState.RUNNING.value if kind == PROGRESS else kind
    return {
        "name": f"job.{kind}",
        "title": f"Job {kind}",
        "summary": KIND_SUMMARY[kind],
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "payload": {
            "allOf": [
                _schema(JobEvent),
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": CLOUDEVENT_TYPE_PREFIX + kind},
                        "data": {
                            "type": "object",
                            "properties": {"state": {"const": state}},
                        },
                    },
                },
            ]
        },
    }


def messages() -> dict[str, Any]:
    reasons: list[str] = list(get_args(RejectionReason))
    return {
        "jobRequest": {
            "name": "job-request",
            "title": "Job request",
            "summary": "The POST /start-job body; at most gateway.max_payload_bytes.",
            "contentType": JSON,
            "payload": _schema(JobRequest),
            "correlationId": _correlation(),
        },
        "submissionReply": {
            "name": "submission-reply",
            "title": "Submission reply",
            "summary": "The outcome of a submission that named reply_to.",
            "contentType": JSON,
            "payload": _schema(SubmissionReply),
            "correlationId": _correlation(),
        },
        "rejectedSubmission": {
            "name": "rejected-submission",
            "title": "Rejected submission",
            "summary": "A refused submission: its body and headers as they arrived, and why.",
            "headers": {
                "type": "object",
                "properties": {
                    REJECTION_HEADER: {"type": "string", "enum": reasons},
                    REJECTION_DETAIL_HEADER: {"type": "string"},
                },
                "required": [REJECTION_HEADER, REJECTION_DETAIL_HEADER],
            },
            "payload": {"description": "The submission's body, unchanged."},
        },
        "jobDispatch": {
            "name": "job-dispatch",
            "title": "Queued job",
            "summary": "A job for a sheep to run; message_id is the job id.",
            "contentType": JSON,
            "headers": _attempts_headers(),
            "payload": _schema(JobDispatch),
        },
        "leasedJob": {
            "name": "leased-job",
            "title": "Leased job",
            "summary": "A copy of the job a sheep runs, expiring after the lease time.",
            "contentType": JSON,
            "headers": {
                **_attempts_headers({HOLDER: {"type": "string", "description": "Its sheep."}}),
                "required": [HOLDER],
            },
            "payload": _schema(JobDispatch),
        },
        "statusReport": {
            "name": "status-report",
            "title": "Status report",
            "contentType": JSON,
            "payload": _schema(StatusReport),
        },
        **{event_message(kind): _status_event(kind) for kind in STATUS_KINDS},
        event_message(REJECTED): {
            "name": f"job.{REJECTED}",
            "title": "Submission rejected",
            "summary": "A submission was refused; subject is the job id it names, if valid.",
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "payload": _schema(JobRejectedEvent),
        },
        "sheepState": {
            "name": "sheep-state",
            "title": "Sheep state",
            "contentType": JSON,
            "payload": _schema(SheepState),
        },
        "s3Event": {
            "name": "s3-event",
            "title": "S3 event notification",
            "summary": "MinIO's notification of an object created or removed.",
            "contentType": JSON,
            "payload": _schema(S3EventNotification),
        },
        "webhookDelivery": {
            "name": "webhook-delivery",
            "title": "Webhook delivery",
            "summary": "A job event to POST to one receiver.",
            "contentType": JSON,
            "headers": _webhook_headers(),
            "payload": _schema(WebhookDelivery),
        },
        "abandonedWebhookDelivery": {
            "name": "abandoned-webhook-delivery",
            "title": "Abandoned webhook delivery",
            "summary": "A delivery given up, and why.",
            "contentType": JSON,
            "headers": _webhook_headers(
                {REASON_HEADER: {"type": "string", "description": "Why it was given up."}}
            ),
            "payload": _schema(WebhookDelivery),
        },
        "logChunk": {
            "name": "log-chunk",
            "title": "Job output",
            "summary": "A piece of what a running job printed, as printed (any bytes; its "
            "stream is the routing key's last word).",
            "contentType": "application/octet-stream",
            "headers": {
                "type": "object",
                "properties": {
                    LOG_JOB: {"type": "string", "description": "The job that printed it."},
                    LOG_ATTEMPT: {"type": "integer", "minimum": 1, "description": "Its attempt."},
                },
                "required": [LOG_JOB, LOG_ATTEMPT],
            },
            "payload": {"description": "The bytes printed."},
        },
        "deadLetter": {
            "name": "dead-letter",
            "title": "Dead letter",
            "summary": "Any message a Shepherd queue gave up on, as it was, with RabbitMQ's "
            "x-death headers (x-first-death-queue, x-first-death-reason).",
            "payload": {"description": "The original body."},
        },
    }


def _webhook_headers(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            ATTEMPT_HEADER: {
                "type": "integer",
                "minimum": 1,
                "description": "The attempt the delivery is on: 1, then + 1 for each retry.",
            },
            **(extra or {}),
        },
    }


def _attempts_headers(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            ATTEMPTS: {
                "type": "integer",
                "minimum": 0,
                "description": "Attempts the job had before it went back to a queue.",
            },
            **(extra or {}),
        },
    }
