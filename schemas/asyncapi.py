"""The AsyncAPI 3.0 document of Shepherd's AMQP interface, built from ``schemas``.

Served by the gateway at ``/asyncapi.json`` and written by ``python -m schemas export``. It
describes Shepherd as one application, so its operations are Shepherd's own: it *sends* what
its services publish and *receives* what they consume; a client's view is the mirror image
(a client sends job requests to ``submit``, receives ``job.<kind>`` events).

AMQP bindings (0.3.0) allow a channel to be an exchange with a routing key *or* a queue, not
both, so there are two kinds of channel:

* one per address on each exchange (``is: routingKey``): what publishers need, routing keys
  with ``{parameters}`` where they vary (``sheep.{sheep_id}``);
* one per queue of the topology (``is: queue``): what Shepherd's services consume, and what
  the exchanges route to.

Message payloads are the pydantic models' JSON Schemas, under ``components.schemas``. The
runner protocol (ZeroMQ) and HTTP are not AMQP and are described elsewhere: the JSON Schemas
of ``python -m schemas export`` and the gateway's OpenAPI document.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

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
from schemas.submission import (
    DEAD_LETTER_KEY,
    REJECTION_DETAIL_HEADER,
    REJECTION_HEADER,
    SubmissionReply,
)
from schemas.topology import ATTEMPTS, DELIVER, GAVE_UP, HOLDER, Names, build_topology
from schemas.webhooks import ATTEMPT_HEADER, GAVE_UP_KEY, REASON_HEADER, WebhookDelivery

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
_JSON = "application/json"

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
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

_SHEEP_ID = {"description": "A configured sheep id.", "examples": ["gpu0"]}
_RETRY_DELAY = {
    "description": "A delay of notifier.webhook_retry_schedule, in milliseconds.",
    "examples": ["5000"],
}
_EVENT_KINDS = (*STATUS_KINDS, REJECTED)


def _schema(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def build_asyncapi(names: Names | None = None, broker_host: str = "127.0.0.1:5672") -> dict:
    """The document for the namespace of ``names`` (``shepherd`` by default), whose broker
    listens at ``broker_host`` (host and port only: never credentials)."""
    names = names or Names()
    return _Builder(names).document(broker_host)


class _Builder:
    def __init__(self, names: Names) -> None:
        self.names = names
        topology = build_topology(names, delivery_limit=1)
        self.exchange_types = {e.name: e.type for e in topology.exchanges}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}

    def document(self, broker_host: str) -> dict[str, Any]:
        _, definitions = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
        self._exchange_channels()
        self._queue_channels()
        self._webhook_channels()
        self._shepherd_sends()
        self._shepherd_receives()
        self._webhook_operations()
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": "Shepherd",
                "version": "1",
                "description": "Asynchronous jobs on GPU and CPU machines. Submit a job request "
                f"to the exchange {self.names.submit_exchange}, follow it through the "
                f"CloudEvents job.<kind> on {self.names.events_exchange} (type "
                f"{CLOUDEVENT_TYPE_PREFIX}<kind>). Every message is persistent and every "
                "publish confirmed; every Shepherd queue is a quorum queue that dead-letters "
                f"into {self.names.dead_letter_exchange}.",
            },
            "defaultContentType": _JSON,
            "servers": {
                "rabbitmq": {
                    "host": broker_host,
                    "protocol": "amqp",
                    "protocolVersion": "0.9.1",
                    "description": "RabbitMQ, virtual host /.",
                }
            },
            "channels": self.channels,
            "operations": self.operations,
            "components": {"schemas": definitions["$defs"], "messages": _messages()},
        }

    # -- channels -----------------------------------------------------------------------------

    def _on_exchange(
        self,
        channel_id: str,
        exchange: str,
        address: str | None,
        messages: list[str],
        description: str,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        kind = self.exchange_types.get(exchange, "default")
        self.channels[channel_id] = {
            "address": address,
            "description": description,
            "messages": {m: _ref("components", "messages", m) for m in messages},
            **({"parameters": parameters} if parameters else {}),
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": kind,
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }

    def _queue(
        self,
        channel_id: str,
        name: str,
        messages: list[str],
        description: str,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.channels[channel_id] = {
            "address": name,
            "description": description,
            "messages": {m: _ref("components", "messages", m) for m in messages},
            **({"parameters": parameters} if parameters else {}),
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": name,
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }

    def _exchange_channels(self) -> None:
        n = self.names
        self._on_exchange(
            "submit",
            n.submit_exchange,
            None,
            ["jobRequest"],
            "Job requests from any AMQP client (fanout: the routing key is ignored). Handled "
            "like POST /start-job; name reply_to (and correlation_id) to get the outcome.",
        )
        self._on_exchange(
            "submissionReplies",
            "",
            None,
            ["submissionReply"],
            "The reply_to queue a submission named, through the default exchange. Shepherd "
            f"never replies into queues of its namespace ({n.namespace}.*).",
        )
        self._on_exchange(
            "jobsForSheep",
            n.jobs_exchange,
            "sheep.{sheep_id}",
            ["jobDispatch"],
            "Queued jobs for one sheep.",
            {"sheep_id": _SHEEP_ID},
        )
        self._on_exchange(
            "jobsForPool", n.jobs_exchange, "pool", ["jobDispatch"], "Queued jobs for any sheep."
        )
        self._on_exchange(
            "storageEvents",
            n.storage_exchange,
            None,
            ["s3Event"],
            "MinIO's bucket notifications (fanout; MinIO's own routing key). Shared by every "
            "namespace on the broker.",
        )
        self._on_exchange(
            "statusReports",
            n.events_exchange,
            "status.{state}",
            ["statusReport"],
            "Reports of what happened to a job, from the gateway and the sheep, for the "
            "notifier only: subscribe to job.<kind> instead.",
            {
                "state": {
                    "description": "The job's new state, or progress.",
                    "enum": list(STATUS_KINDS),
                }
            },
        )
        for kind in STATUS_KINDS:
            self._on_exchange(
                _event_channel(kind),
                n.events_exchange,
                f"job.{kind}",
                [_event_message(kind)],
                f"CloudEvents {CLOUDEVENT_TYPE_PREFIX}{kind}: {_KIND_SUMMARY[kind]} Published "
                "once the status is durable; bind your own queue (job.# for all).",
            )
        self._on_exchange(
            _event_channel(REJECTED),
            n.events_exchange,
            f"job.{REJECTED}",
            [_event_message(REJECTED)],
            f"CloudEvents {CLOUDEVENT_TYPE_PREFIX}{REJECTED}: a submission on "
            f"{n.submit_exchange} was refused. Not a job state: no status changes.",
        )
        self._on_exchange(
            "sheepStates",
            n.events_exchange,
            "sheep.{sheep_id}",
            ["sheepState"],
            "What each sheep announces when its state changes and every few seconds.",
            {"sheep_id": _SHEEP_ID},
        )
        self._on_exchange(
            "leases",
            n.leases_exchange,
            None,
            ["leasedJob"],
            f"Copies of running jobs (headers exchange, routed on {HOLDER}; the routing key "
            "is the job's own, sheep.<id> or pool, for its return).",
        )
        self._on_exchange(
            "deadLetters",
            n.dead_letter_exchange,
            None,
            ["deadLetter"],
            "Everything dead-lettered, under its original routing key.",
        )
        self._on_exchange(
            "gaveUp",
            n.dead_letter_exchange,
            GAVE_UP,
            ["jobDispatch"],
            "Jobs that ran out of deliveries.",
        )
        self._on_exchange(
            "rejectedSubmissions",
            n.dead_letter_exchange,
            DEAD_LETTER_KEY,
            ["rejectedSubmission"],
            "Submissions Shepherd refused, as they arrived plus the reason in headers.",
        )

    def _queue_channels(self) -> None:
        n = self.names
        sheep = {"sheep_id": _SHEEP_ID}
        self._queue(
            "submitQueue",
            n.submit_queue,
            ["jobRequest"],
            f"Bound to {n.submit_exchange}; the gateways consume it.",
        )
        self._queue(
            "inputsQueue",
            n.inputs_queue,
            ["s3Event"],
            f"Bound to {n.storage_exchange}; the gateways consume it.",
        )
        self._queue(
            "statusQueue",
            n.status_queue,
            ["statusReport"],
            f"Bound to {n.events_exchange} for status.#; one notifier consumes it at a time "
            "(single active consumer).",
        )
        self._queue(
            "poolQueue", n.pool_queue, ["jobDispatch"], "Pool jobs; any idle sheep takes one."
        )
        self._queue(
            "sheepQueue",
            n.sheep_queue("{sheep_id}"),
            ["jobDispatch"],
            "Jobs for one sheep.",
            sheep,
        )
        self._queue(
            "leaseQueue",
            n.lease_queue("{sheep_id}"),
            ["leasedJob"],
            f"The job a sheep runs, renewed while it runs; expired, it returns to "
            f"{n.jobs_exchange} under its routing key.",
            sheep,
        )
        self._queue(
            "deadQueue",
            n.dead_letter_queue,
            ["deadLetter", "rejectedSubmission", "abandonedWebhookDelivery"],
            "Every dead letter, kept two weeks for inspection.",
        )
        self._queue(
            "gaveUpQueue",
            n.gave_up_queue,
            ["jobDispatch"],
            "Jobs that ran out of deliveries; the notifier marks them failed.",
        )

    # -- operations ---------------------------------------------------------------------------

    def _operation(
        self,
        operation_id: str,
        action: str,
        channel: str,
        summary: str,
        reply: dict[str, Any] | None = None,
    ) -> None:
        messages = self.channels[channel]["messages"]
        amqp: dict[str, Any] = (
            {"deliveryMode": 2, "mandatory": True} if action == "send" else {"ack": True}
        )
        self.operations[operation_id] = {
            "action": action,
            "channel": _ref("channels", channel),
            "summary": summary,
            "messages": [_ref("channels", channel, "messages", m) for m in messages],
            **({"reply": reply} if reply else {}),
            "bindings": {"amqp": {**amqp, "bindingVersion": AMQP_BINDING_VERSION}},
        }

    def _shepherd_sends(self) -> None:
        self._operation("dispatchToSheep", "send", "jobsForSheep", "The gateway queues a job.")
        self._operation("dispatchToPool", "send", "jobsForPool", "The gateway queues a job.")
        self._operation(
            "reportStatus", "send", "statusReports", "The gateway and the sheep report."
        )
        for kind in _EVENT_KINDS:
            source = "gateway" if kind == REJECTED else "notifier"
            self._operation(
                f"announce{_camel(kind)}",
                "send",
                _event_channel(kind),
                f"The {source} announces job.{kind}.",
            )
        self._operation("announceSheep", "send", "sheepStates", "A sheep announces itself.")
        self._operation("leaseJob", "send", "leases", "A sheep parks and renews its job.")
        self._operation(
            "rejectSubmission",
            "send",
            "rejectedSubmissions",
            "The gateway dead-letters a submission it refused.",
        )

    def _shepherd_receives(self) -> None:
        self._operation(
            "takeSubmission",
            "receive",
            "submitQueue",
            "The gateway declares a submitted job, acks it once the declaration is durable, "
            "and replies if asked.",
            reply={
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "The submission's AMQP reply_to property.",
                },
                "channel": _ref("channels", "submissionReplies"),
                "messages": [_ref("channels", "submissionReplies", "messages", "submissionReply")],
            },
        )
        self._operation(
            "takeUpload", "receive", "inputsQueue", "The gateway queues jobs whose inputs are in."
        )
        self._operation("applyStatus", "receive", "statusQueue", "The notifier writes status.json.")
        self._operation("runPoolJob", "receive", "poolQueue", "An idle sheep runs a pool job.")
        self._operation("runSheepJob", "receive", "sheepQueue", "A sheep runs its own job.")
        self._operation(
            "returnLease",
            "receive",
            "leaseQueue",
            "A sheep starting again returns the job its previous life held.",
        )
        self._operation(
            "failGaveUpJob", "receive", "gaveUpQueue", "The notifier marks the job failed."
        )
        self._operation(
            "watchSheep",
            "receive",
            "sheepStates",
            "The gateway keeps the fleet for GET /status (on a private queue).",
        )
        for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
            self._operation(
                f"wake{_camel(state.value)}",
                "receive",
                _event_channel(state.value),
                "The gateway wakes the long-polls of the job (on a private queue).",
            )

    # -- webhooks and the event history -------------------------------------------------------

    def _webhook_channels(self) -> None:
        n = self.names
        every_event = [_event_message(kind) for kind in _EVENT_KINDS]
        self._queue(
            "eventStream",
            n.event_stream,
            every_event,
            f"A RabbitMQ stream bound to {n.events_exchange} for job.#: the history of job "
            "events, kept a day (1 GB at most), which GET /events and GET /jobs/{id}/events "
            "replay from an offset.",
        )
        self._queue(
            "webhookEventsQueue",
            n.webhook_events_queue,
            every_event,
            f"Bound to {n.events_exchange} for job.# by the notifier while webhooks are "
            "configured; its webhook dispatcher consumes it.",
        )
        self._on_exchange(
            "webhookDeliveries",
            n.webhooks_exchange,
            DELIVER,
            ["webhookDelivery"],
            "One job event for one receiver, due now.",
        )
        self._queue(
            "webhookDeliveriesQueue",
            n.webhook_deliveries_queue,
            ["webhookDelivery"],
            "Deliveries due; the notifier's delivery workers POST them.",
        )
        self._on_exchange(
            "webhookRetries",
            n.webhooks_exchange,
            "retry.{delay_ms}ms",
            ["webhookDelivery"],
            "A delivery to try again after a delay of the retry schedule.",
            {"delay_ms": _RETRY_DELAY},
        )
        self._queue(
            "webhookRetryQueue",
            f"{n.namespace}.webhook-retry.{{delay_ms}}ms",
            ["webhookDelivery"],
            f"Holds each delivery for its delay (its TTL), then dead-letters it to "
            f"{n.webhooks_exchange} under {DELIVER}.",
            {"delay_ms": _RETRY_DELAY},
        )
        self._on_exchange(
            "webhookGaveUp",
            n.dead_letter_exchange,
            GAVE_UP_KEY,
            ["abandonedWebhookDelivery"],
            "Deliveries given up after the last retry, or refused by their receiver.",
        )

    def _webhook_operations(self) -> None:
        self._operation(
            "fanOutWebhooks",
            "receive",
            "webhookEventsQueue",
            "The notifier makes one delivery per matching subscription and callback_url.",
        )
        self._operation(
            "queueWebhookDelivery", "send", "webhookDeliveries", "The notifier queues one."
        )
        self._operation(
            "deliverWebhook", "receive", "webhookDeliveriesQueue", "The notifier POSTs one."
        )
        self._operation(
            "retryWebhook", "send", "webhookRetries", "The notifier parks a failed attempt."
        )
        self._operation(
            "abandonWebhook", "send", "webhookGaveUp", "The notifier gives a delivery up."
        )
        self._operation(
            "streamEvents",
            "receive",
            "eventStream",
            "The gateway reads the history for its live streams (server-sent events).",
        )


# -- messages ---------------------------------------------------------------------------------

_KIND_SUMMARY = {
    JobState.ACCEPTED.value: "the job is declared and waits for its inputs.",
    JobState.QUEUED.value: "the job is queued for a sheep.",
    JobState.RUNNING.value: "a sheep runs the job (again, with attempt + 1, after a loss).",
    JobState.DONE.value: "the job's outputs are in the store.",
    JobState.FAILED.value: "the job failed; data.error says why.",
    JobState.CANCELLED.value: "the job was cancelled.",
    PROGRESS: "the running job reported progress (data.progress).",
}


def _camel(kind: str) -> str:
    return kind[:1].upper() + kind[1:]


def _event_channel(kind: str) -> str:
    return f"job{_camel(kind)}"


def _event_message(kind: str) -> str:
    return f"job{_camel(kind)}Event"


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
        "summary": _KIND_SUMMARY[kind],
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


def _messages() -> dict[str, Any]:
    reasons: list[str] = list(get_args(RejectionReason))
    return {
        "jobRequest": {
            "name": "job-request",
            "title": "Job request",
            "summary": "The POST /start-job body; at most gateway.max_payload_bytes.",
            "contentType": _JSON,
            "payload": _schema(JobRequest),
            "correlationId": _correlation(),
        },
        "submissionReply": {
            "name": "submission-reply",
            "title": "Submission reply",
            "summary": "The outcome of a submission that named reply_to.",
            "contentType": _JSON,
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
            "contentType": _JSON,
            "headers": _attempts_headers(),
            "payload": _schema(JobDispatch),
        },
        "leasedJob": {
            "name": "leased-job",
            "title": "Leased job",
            "summary": "A copy of the job a sheep runs, expiring after the lease time.",
            "contentType": _JSON,
            "headers": {
                **_attempts_headers({HOLDER: {"type": "string", "description": "Its sheep."}}),
                "required": [HOLDER],
            },
            "payload": _schema(JobDispatch),
        },
        "statusReport": {
            "name": "status-report",
            "title": "Status report",
            "contentType": _JSON,
            "payload": _schema(StatusReport),
        },
        **{_event_message(kind): _status_event(kind) for kind in STATUS_KINDS},
        _event_message(REJECTED): {
            "name": f"job.{REJECTED}",
            "title": "Submission rejected",
            "summary": "A submission was refused; subject is the job id it names, if valid.",
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "payload": _schema(JobRejectedEvent),
        },
        "sheepState": {
            "name": "sheep-state",
            "title": "Sheep state",
            "contentType": _JSON,
            "payload": _schema(SheepState),
        },
        "s3Event": {
            "name": "s3-event",
            "title": "S3 event notification",
            "summary": "MinIO's notification of an object created or removed.",
            "contentType": _JSON,
            "payload": _schema(S3EventNotification),
        },
        "webhookDelivery": {
            "name": "webhook-delivery",
            "title": "Webhook delivery",
            "summary": "A job event to POST to one receiver.",
            "contentType": _JSON,
            "headers": _webhook_headers(),
            "payload": _schema(WebhookDelivery),
        },
        "abandonedWebhookDelivery": {
            "name": "abandoned-webhook-delivery",
            "title": "Abandoned webhook delivery",
            "summary": "A delivery given up, and why.",
            "contentType": _JSON,
            "headers": _webhook_headers(
                {REASON_HEADER: {"type": "string", "description": "Why it was given up."}}
            ),
            "payload": _schema(WebhookDelivery),
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
