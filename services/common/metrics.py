"""The Prometheus series of what every service shares: input it could not use, and the
servers' outages as it sees them (the series of jobs are :mod:`.job_metrics`).

Input Shepherd cannot use is dead-lettered or dropped, never allowed to stop a consumer; the
rejected-messages counter makes it visible, so that a producer sending garbage is noticed.

    except ValidationError as exc:
        reject("status", invalid_reason(exc))
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from prometheus_client import Counter, Gauge
from prometheus_client.metrics import MetricWrapperBase
from pydantic import ValidationError

Reason = Literal[
    "not-json",  # the bytes are not JSON at all
    "unsupported-media-type",  # a submission whose content type is not JSON
    "invalid",  # JSON, but not the message the schema describes (or an unknown sheep)
    "too-large",  # a submission over gateway.max_payload_bytes
    "conflict",  # a submission of a job id declared with a different request
    "error",  # its handler failed; dead-lettered (by the broker guard, if it raised)
    "other-bucket",  # an S3 event of a bucket that is not ours
    "not-created",  # an S3 event other than a creation (a removal), which queues nothing
    "outside-layout",  # an S3 event for a key outside <job_id>/...
]

REJECTED_MESSAGES = Counter(
    "shepherd_rejected_messages",
    "Messages dropped or dead-lettered because Shepherd could not use them.",
    ["source", "reason"],
)


BROKER_CONNECTED = Gauge(
    "shepherd_broker_connected",
    "1 while this process is connected to RabbitMQ, every channel restored; 0 during an outage.",
)
STORAGE_OUTAGE_CALLS = Counter(
    "shepherd_storage_outages",
    "Calls to MinIO that failed because it was unreachable or refused to serve (retried), by "
    "cause: unreachable, server-error (a 5xx or no S3 answer) or the S3 error code.",
    ["cause"],
)
for _cause in ("unreachable", "server-error"):  # the series exist, at 0, before any outage
    STORAGE_OUTAGE_CALLS.labels(cause=_cause)


@functools.cache
def child(metric: MetricWrapperBase, *values: str) -> Any:
    """``metric.labels(*values)`` (in the order the metric declares its labels), made once:
    ``labels()`` checks and locks on every call, about 5 µs, and a job touches a dozen series.
    Only for bounded label values, which every label here is."""
    return metric.labels(*values)


def reject(source: str, reason: Reason) -> None:
    """``source``: where the message came from, the role of its queue without the namespace
    (``inputs``, ``status``, ``jobs``, ...) or ``runner`` for the runner's socket."""
    child(REJECTED_MESSAGES, source, reason).inc()


def invalid_reason(exc: ValidationError) -> Reason:
    """Tells bytes that are not JSON from JSON that fails the schema."""
    return "not-json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "invalid"
