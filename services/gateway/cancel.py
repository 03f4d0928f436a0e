"""Cancelling jobs: ``POST /jobs/{job_id}/cancel`` and ``DELETE /jobs/{job_id}``.

The gateway writes ``<job_id>/cancel.json`` before it answers, so a job not yet started never
starts (a sheep checks the marker first), then publishes a ``cancelled`` report: the notifier
ends the job with it, and the sheep running the job, if any, stops its runner on hearing it.
A job that has already ended is left as it is.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.events import StatusReport, utcnow
from schemas.layout import cancel_key
from schemas.status import ErrorInfo, JobState, JobStatus
from services.common.broker import Broker
from services.common.lookup import StatusLookup
from services.common.params import parse_job_id
from services.common.problems import Problem
from services.common.storage import Storage
from services.common.transitions import apply
from services.gateway.api_docs import ERRORS, JOB, Answer, Doc, Docs, json_answer

_CANCEL = Doc(
    "Cancel a job: a queued job never runs, a running one is stopped within 2 s; an ended "
    "job is left as it is",
    {
        200: Answer("The job had already ended; unchanged", JobStatus),
        202: Answer("Cancelled", JobStatus),
        **ERRORS,
    },
    JOB,
)
DOCS: Docs = {
    ("POST", "/jobs/{job_id}/cancel"): _CANCEL,
    ("DELETE", "/jobs/{job_id}"): _CANCEL,
}


class CancelRoutes:
    def __init__(self, lookup: StatusLookup, storage: Storage, broker: Broker) -> None:
        self._lookup = lookup
        self._storage = storage
        self._broker = broker

    def routes(self) -> list[Route]:
        return [
            Route("/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
            Route("/jobs/{job_id}", self.cancel, methods=["DELETE"]),
        ]

    async def cancel(self, request: Request) -> JSONResponse:
        """200 with the status of a job that had already ended; 202 with the cancelled
        status otherwise."""
        job_id = parse_job_id(request.path_params["job_id"])
        status = await self._lookup.status(job_id)
        if status is None:
            raise Problem(404, f"no job {job_id}")
        if status.state.terminal:
            return json_answer(status, 200)
        marker = json.dumps({"requested_at": utcnow().isoformat()}).encode()
        await self._storage.put_bytes(cancel_key(job_id), marker, "application/json")
        report = StatusReport(
            job_id=job_id,
            model=status.model,
            attempt=status.attempt,
            state=JobState.CANCELLED,
            error=ErrorInfo(type="Cancelled", message="cancelled by request"),
        )
        await self._broker.publish(self._broker.names.events_exchange, report.routing_key, report)
        transition = apply(status, report)
        return json_answer(transition.status if transition else status, 202)
