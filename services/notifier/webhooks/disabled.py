"""Subscriptions disabled by a 410 Gone, kept in the bucket so that a restart keeps them so.

A receiver answering 410 says it will never take deliveries again: its subscription gets no
more, until an operator removes ``_shepherd/webhooks/disabled/<name>`` (any S3 client) and
restarts the notifier, or changes the subscription's URL (a record names the URL it was made
for, and a record for another URL is ignored).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import ValidationError

from schemas.config import WebhookSubscription
from schemas.layout import disabled_webhook_key
from schemas.webhooks import DisabledSubscription
from services.common.outages import OUTAGES
from services.common.storage import ObjectMissing, Storage
from services.notifier.webhooks.metrics import DISABLED

log = logging.getLogger(__name__)


class DisabledSubscriptions:
    def __init__(self, storage: Storage, subscriptions: list[WebhookSubscription]) -> None:
        self._storage = storage
        self._urls = {s.name: str(s.url) for s in subscriptions}
        self._disabled: set[str] = set()

    async def load(self) -> None:
        """Read the records of the configured subscriptions. If the store is unreachable,
        start without them: a subscription disabled before answers 410 again, once."""
        try:
            for name, url in self._urls.items():
                record = await self._record(name)
                if record is not None and record.url == url:
                    self._disabled.add(name)
                    DISABLED.set(len(self._disabled))
                    log.warning(
                        "webhook subscription %s stays disabled: %s (remove %s to enable it)",
                        name,
                        record.reason,
                        disabled_webhook_key(name),
                    )
        except OUTAGES as exc:
            log.warning("could not read the disabled webhook subscriptions: %r", exc)

    async def _record(self, name: str) -> DisabledSubscription | None:
        try:
            raw = await self._storage.get_bytes(disabled_webhook_key(name))
        except ObjectMissing:
            return None
        try:
            return DisabledSubscription.model_validate_json(raw)
        except ValidationError as exc:
            log.error("%s is unreadable, ignored: %s", disabled_webhook_key(name), exc)
            return None

    def __contains__(self, name: object) -> bool:
        return name in self._disabled

    async def disable(self, name: str, reason: str) -> None:
        """Disable at once in this process, then record it (raises on a store outage; the
        caller retries)."""
        self._disabled.add(name)
        DISABLED.set(len(self._disabled))
        record = DisabledSubscription(
            url=self._urls[name], disabled_at=datetime.now(UTC), reason=reason
        )
        await self._storage.put_bytes(
            disabled_webhook_key(name), record.model_dump_json().encode(), "application/json"
        )
