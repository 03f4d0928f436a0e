"""A job's webhook deliveries: ``GET /jobs/{job_id}/webhooks``, under the ``read`` scope.

    GET /jobs/job-1/webhooks    {"job_id": "job-1", "attempts": [{"outcome": "retrying", ...}]}

The notifier records each attempt under ``<job_id>/webhooks/`` as it ends
(``services.notifier.webhooks.attempts``); the answer is every record, oldest first. A job
nobody subscribed to has none.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.layout import webhooks_prefix
from schemas.webhooks import MOST_ATTEMPTS_LISTED, WebhookAttempt, WebhookAttempts
from services.common.lookup import StatusLookup
from services.common.params import parse_job_id
from services.common.problems import Problem
from services.common.storage import ObjectMissing, Storage
from services.gateway.api_docs import ERRORS, JOB, Answer, Doc, Docs, json_answer

log = logging.getLogger(__name__)

EPOCH = datetime.fromtimestamp(0, UTC)

DOCS: Docs = {
    ("GET", "/jobs/{job_id}/webhooks"): Doc(
        "Each attempt to deliver the job's events to a webhook, and how it went",
        {200: Answer("The attempts, oldest first", WebhookAttempts), **ERRORS},
        JOB,
    ),
}


class WebhookAttemptRoutes:
    def __init__(self, lookup: StatusLookup, storage: Storage) -> None:
        self._lookup = lookup
        self._storage = storage

    def routes(self) -> list[Route]:
        return [Route("/jobs/{job_id}/webhooks", self.attempts, methods=["GET"])]

    async def attempts(self, request: Request) -> JSONResponse:
        job_id = parse_job_id(request.path_params["job_id"])
        if await self._lookup.status(job_id) is None:
            raise Problem(404, f"no job {job_id}")
        stored = await self._storage.list(webhooks_prefix(job_id))
        # The latest ones, when there are too many (deliveries of every progress report).
        stored.sort(key=lambda o: o.last_modified or EPOCH, reverse=True)
        kept = stored[:MOST_ATTEMPTS_LISTED]
        read = await asyncio.gather(*(self._read(o.key) for o in kept))
        attempts = sorted((a for a in read if a is not None), key=lambda a: a.at)
        truncated = len(stored) > len(kept)
        return json_answer(WebhookAttempts(job_id=job_id, attempts=attempts, truncated=truncated))

    async def _read(self, key: str) -> WebhookAttempt | None:
        try:
            return WebhookAttempt.model_validate_json(await self._storage.get_bytes(key))
        except ObjectMissing:
            return None
        except ValidationError as exc:
            log.warning("skipping the unreadable webhook record %s: %s", key, exc)
            return None
