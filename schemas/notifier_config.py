"""The notifier's section of the configuration: webhook subscriptions, callbacks, and how
deliveries are made and retried."""

from __future__ import annotations

import base64
import binascii
import re

from pydantic import (
    AnyHttpUrl,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

from schemas.config_section import MetricsEndpoint, Section
from schemas.names import PathSegment
from schemas.webhooks import DEFAULT_RETRY_SCHEDULE

WHSEC_PREFIX = "whsec_"


def _whsec(secret: SecretStr | None) -> SecretStr | None:
    """A Standard Webhooks secret: ``whsec_`` and 24 to 64 random bytes in base64. The
    message never quotes it."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    try:
        key = base64.b64decode(value.removeprefix(WHSEC_PREFIX), validate=True)
    except binascii.Error:
        key = b""
    if not value.startswith(WHSEC_PREFIX) or not 24 <= len(key) <= 64:
        raise ValueError(
            "must be whsec_ followed by 24 to 64 random bytes in base64; make one with "
            'python3 -c \'import base64,os; print("whsec_" + base64.b64encode(os.urandom(32))'
            ".decode())'"
        )
    return secret


_EVENT_PATTERN = re.compile(r"([a-z0-9_-]+|\*|#)(\.([a-z0-9_-]+|\*|#))*")
_RETRY_DELAYS = (0.001, 86_400.0)


class WebhookSubscription(Section):
    name: PathSegment = Field(
        description="Names the subscription in logs, metrics and webhook-id; unique."
    )
    url: AnyHttpUrl = Field(description="Receiver of the deliveries (POST).")
    events: list[str] = Field(
        default_factory=lambda: ["job.*"],
        min_length=1,
        description='Routing-key patterns of the events delivered, e.g. ["job.done", '
        '"job.failed"]; job.* is every job event.',
    )
    secret: SecretStr = Field(description="whsec_ signing secret, e.g. ${WEBHOOK_SECRET}.")

    _secret_format = field_validator("secret")(_whsec)

    @field_validator("events")
    @classmethod
    def _patterns(cls, events: list[str]) -> list[str]:
        bad = [pattern for pattern in events if not _EVENT_PATTERN.fullmatch(pattern)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: not a routing-key pattern (lowercase words, * for one "
                "word, # for any number, separated by dots)"
            )
        return events


class NotifierConfig(MetricsEndpoint):
    webhooks: list[WebhookSubscription] = Field(
        default_factory=list, description="Global webhook subscriptions."
    )
    callback_secret: SecretStr | None = Field(
        default=None,
        description="whsec_ secret signing the deliveries to a job's callback_url; without "
        "it, a job request naming a callback_url is refused.",
    )
    allow_private_targets: bool = Field(
        default=False,
        description="Deliver webhooks to loopback, private, link-local and other "
        "non-public addresses too (refused by default: SSRF guard).",
    )
    webhook_timeout: PositiveFloat = Field(
        default=10.0, description="Seconds one delivery attempt may take, answer included."
    )
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE),
        max_length=30,
        description="Seconds before each retry of a delivery that met a network error, a "
        "timeout, 429 or 5xx (stretched to a longer Retry-After); given up after the last.",
    )
    webhook_concurrency: PositiveInt = Field(
        default=32, description="Deliveries in flight at once, per notifier."
    )

    _callback_secret_format = field_validator("callback_secret")(_whsec)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _delays(cls, schedule: list[float]) -> list[float]:
        low, high = _RETRY_DELAYS
        if not all(low <= delay <= high for delay in schedule):
            raise ValueError(f"every delay must be from {low:g} to {high:g} seconds")
        return schedule

    @model_validator(mode="after")
    def _unique_names(self) -> NotifierConfig:
        names = [w.name for w in self.webhooks]
        if len(set(names)) != len(names):
            raise ValueError("two notifier.webhooks have the same name")
        return self
