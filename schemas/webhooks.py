"""Webhooks: what the dispatcher hands its delivery workers, and what a 410 leaves behind.

Every job event (a CloudEvent on ``<ns>.events``, routing key ``job.<kind>``) also reaches
``<ns>.webhook-events``. The webhook dispatcher turns it into one :class:`WebhookDelivery` per
receiver (each matching subscription, and the job's ``callback_url`` for terminal events) on
``<ns>.webhook-deliveries``, where delivery workers POST it. A failed attempt is parked in the
retry queue of its step, ``<ns>.webhook-retry.<ms>ms``, whose TTL sends it back; the attempt
number travels in the header :data:`ATTEMPT_HEADER`, so retry state lives in RabbitMQ.

Secrets never travel: a delivery names its subscription, whose secret is in the
configuration (``notifier.callback_secret`` for callbacks).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from schemas.names import PathSegment

DEFAULT_RETRY_SCHEDULE = (1.0, 5.0, 30.0, 120.0, 600.0, 1800.0)
"""Seconds before each retry of a failed delivery (``notifier.webhook_retry_schedule``)."""
ATTEMPT_HEADER = "shepherd-webhook-attempt"
"""The attempt a delivery message is on: 1 when fanned out, +1 for each retry."""
REASON_HEADER = "shepherd-reason"
"""Why a delivery was given up, on its copy in ``<ns>.dead``."""
GAVE_UP_KEY = "webhook.gave-up"
"""Routing key of given-up deliveries on ``<ns>.dlx`` (they land in ``<ns>.dead``)."""


def _absent(value: object) -> bool:
    return value is None


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured event as published on ``job.<kind>``, whatever its kind
    (``schemas.events.JobEvent`` and ``JobRejectedEvent`` are two): the attributes are kept
    in their order and as they came (an absent one stays absent), ``data`` and any extension
    untouched, so that receivers get the event the AMQP subscribers get."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str
    type: str
    subject: str | None = Field(default=None, exclude_if=_absent)
    time: str | None = Field(default=None, exclude_if=_absent)
    datacontenttype: str | None = Field(default=None, exclude_if=_absent)
    data: Any = Field(default=None, exclude_if=_absent)


class WebhookDelivery(BaseModel):
    """One event for one receiver (``<ns>.webhook-deliveries`` and the retry queues)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        description="The webhook-id header: the same for the same event and receiver, on "
        "every attempt, so receivers can drop duplicates."
    )
    subscription: PathSegment | None = Field(
        description="The configured subscription; null for the job's callback_url."
    )
    url: AnyHttpUrl
    event: CloudEvent

    @property
    def target(self) -> str:
        """Who receives it, for logs and metrics: the subscription's name or ``callback``."""
        return self.subscription or "callback"


class WebhookAttempt(BaseModel):
    """``<job_id>/webhooks/<webhook-id>/<attempt>.json``: one attempt to deliver one of the
    job's events, as the notifier recorded it (``GET /jobs/{job_id}/webhooks``)."""

    model_config = ConfigDict(extra="forbid")

    webhook_id: str = Field(description="The delivery's webhook-id, the same on every attempt.")
    subscription: PathSegment | None = Field(description="Null for the job's callback_url.")
    url: str = Field(
        description="Where it went: scheme, host and port only (a path or query may be the "
        "receiver's secret)."
    )
    event_type: str = Field(description="The CloudEvent's type: io.shepherd.job.done, ...")
    attempt: int = Field(ge=1)
    at: datetime = Field(description="When the attempt ended.")
    outcome: Literal["delivered", "retrying", "gone", "gave-up"]
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    detail: str = Field(description="What happened: HTTP 503; next attempt in 4.0 s, ...")


#: The most attempts ``GET /jobs/{job_id}/webhooks`` reads and answers with.
MOST_ATTEMPTS_LISTED = 500


class WebhookAttempts(BaseModel):
    """``GET /jobs/{job_id}/webhooks``: every attempt to deliver the job's events, oldest
    first."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    attempts: list[WebhookAttempt]
    truncated: bool = Field(
        default=False,
        description=f"More than {MOST_ATTEMPTS_LISTED} were recorded: only the latest.",
    )


class DisabledSubscription(BaseModel):
    """``_shepherd/webhooks/disabled/<name>``: the subscription answered 410 Gone at ``url``.
    It stays disabled, across restarts, until the object is removed or the URL changes."""

    model_config = ConfigDict(extra="forbid")

    url: str
    disabled_at: datetime
    reason: str
