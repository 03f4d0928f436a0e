"""The ``webhooks`` section of the OpenAPI document: what a receiver is sent, and how to
tell it came from here.

The payloads are the CloudEvents published on AMQP, by the schemas in ``schemas.events``; the
gateway's document lists those under ``components`` and this section refers to them.
"""

from __future__ import annotations

from typing import Any

from schemas.events import CLOUDEVENTS_CONTENT_TYPE

SIGNATURE_TEXT = (
    "Signed as Standard Webhooks specifies (https://www.standardwebhooks.com): "
    "`webhook-signature` holds `v1,` and the base64 HMAC-SHA256 of "
    "`<webhook-id>.<webhook-timestamp>.<body>`, keyed by the base64-decoded part of the "
    "`whsec_` secret after the prefix (the subscription's `secret`, or "
    "`notifier.callback_secret` for a job's `callback_url`). Verify it over the raw body, "
    "reject timestamps more than five minutes off, and drop a `webhook-id` already seen: "
    "retries and redeliveries repeat it."
)
RESPONSES_TEXT = (
    "Any 2xx: delivered. 410: the subscription is disabled (for good, across restarts; a "
    "callback_url gets no more attempts). 429, 5xx, no answer within 10 s "
    "(notifier.webhook_timeout) or a network error: retried after "
    "notifier.webhook_retry_schedule (1, 5, 30, 120, 600, 1800 s by default, with jitter), "
    "or after Retry-After if longer, then given up. Anything else, redirects included: "
    "given up at once. Given-up deliveries are kept in the namespace's `dead` queue."
)
_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The same for one event and one receiver on every attempt.",
        "schema": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "When this attempt was signed, in seconds since the Unix epoch.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Space-separated `v1,<base64 signature>` entries.",
        "schema": {"type": "string", "pattern": "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$"},
    },
]


def _delivery(summary: str, schema: str, description: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": f"{description} {SIGNATURE_TEXT}",
            "parameters": _HEADERS,
            "requestBody": {
                "required": True,
                "content": {
                    CLOUDEVENTS_CONTENT_TYPE: {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                },
            },
            "responses": {
                "2XX": {"description": RESPONSES_TEXT},
                "410": {"description": "Gone: no more deliveries to this receiver."},
            },
        }
    }


def webhooks_section() -> dict[str, Any]:
    """Needs ``JobEvent`` and ``JobRejectedEvent`` among the document's components."""
    return {
        "jobEvent": _delivery(
            "A job event, to a subscription or a job's callback_url",
            "JobEvent",
            "Sent to each subscription in notifier.webhooks whose `events` patterns match the "
            "routing key (`job.<kind>`: job.accepted, job.queued, job.running, job.progress, "
            "job.done, job.failed, job.cancelled), and to a job's callback_url for job.done, "
            "job.failed and job.cancelled. `type` is `io.shepherd.job.<kind>`, `subject` the "
            "job id, `data` the job's status.",
        ),
        "jobRejected": _delivery(
            "A refused AMQP submission, to subscriptions matching job.rejected",
            "JobRejectedEvent",
            "Sent to each subscription whose `events` patterns match `job.rejected`.",
        ),
    }
