"""A record of each delivery attempt of a job's event, kept with the job in the store, so
that its webhook deliveries can be looked up (``GET /jobs/{job_id}/webhooks``, the dashboard).

    attempts = AttemptRecords(storage)
    await attempts.record(delivery, attempt=2, outcome="retrying", status_code=503,
                          detail="HTTP 503; next attempt in 4.0 s")

One small object per attempt, ``<job_id>/webhooks/<webhook-id>/<attempt>.json``: written once,
never read back here, and only for events about a job. A record that cannot be written is
logged and skipped: the delivery itself goes on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import AnyHttpUrl

from schemas.layout import webhook_attempt_key
from schemas.names import is_job_id
from schemas.webhooks import WebhookAttempt, WebhookDelivery
from services.common.storage import Storage

log = logging.getLogger(__name__)

#: Seconds a record may take before the delivery goes on without it (the store is away).
RECORD_TIMEOUT = 5.0
Outcome = Literal["delivered", "retrying", "gone", "gave-up"]


class AttemptRecords:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def record(
        self,
        delivery: WebhookDelivery,
        attempt: int,
        outcome: Outcome,
        status_code: int | None,
        detail: str,
    ) -> None:
        job_id = delivery.event.subject
        if not (job_id and is_job_id(job_id)):
            return
        record = WebhookAttempt(
            webhook_id=delivery.id,
            subscription=delivery.subscription,
            url=shown_url(delivery.url),
            event_type=delivery.event.type,
            attempt=attempt,
            at=datetime.now(UTC),
            outcome=outcome,
            status_code=status_code,
            detail=detail,
        )
        key = webhook_attempt_key(job_id, delivery.id, attempt)
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                await self._storage.put_bytes(
                    key, record.model_dump_json().encode(), "application/json"
                )
        except Exception as exc:
            log.warning("cannot record webhook attempt %s: %s", key, exc)


def shown_url(url: AnyHttpUrl) -> str:
    """The URL without credentials or query, which may hold secrets: fit for logs and records."""
    return f"{url.scheme}://{url.host}:{url.port}{url.path or ''}"
