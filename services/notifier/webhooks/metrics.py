"""The webhook series: how each delivery attempt ended, by receiver, and the subscriptions
disabled.

``target`` is a subscription's name, or ``callback`` for every job's callback_url (one label
value for them all, so that clients cannot grow the label set).

    shepherd_webhook_deliveries_total{target="billing", outcome="gave-up"}
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Gauge

Outcome = Literal[
    "delivered",  # a 2xx answer
    "retried",  # parked in a retry queue after a failed attempt
    "gave-up",  # kept in <ns>.dead: the schedule is spent, a 4xx, or a refused target
    "gone",  # 410 Gone: a subscription is disabled, a callback stops
    "dropped",  # not attempted: its subscription is disabled or no longer configured
]

DELIVERIES = Counter(
    "shepherd_webhook_deliveries",
    "Webhook delivery attempts and what came of them.",
    ["target", "outcome"],
)


DISABLED = Gauge(
    "shepherd_webhook_subscriptions_disabled",
    "Webhook subscriptions disabled (their receiver answered 410 Gone) until re-enabled.",
)
"""Retries waiting are RabbitMQ's own figure: the depth of ``<ns>.webhook-retry.*``."""


def count(target: str, outcome: Outcome) -> None:
    DELIVERIES.labels(target=target, outcome=outcome).inc()
