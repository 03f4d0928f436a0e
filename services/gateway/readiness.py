"""Readiness endpoints, mounted by the gateway (which installs ``problem_handler``).

GET /jobs/{job_id}/status                  200 JobStatus, 404 unknown job
GET /jobs/{job_id}/ready                   200 {"ready": bool, "state": ...}
GET /jobs/{job_id}/wait_ready?timeout=S    200 once terminal, 202 with the status after S seconds
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.status import JobStatus
from services.common.lookup import StatusLookup
from services.common.params import parse_job_id
from services.common.problems import Problem

DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
"""Longer waits are cut to this; clients poll again with the 202's status in hand."""


def routes(lookup: StatusLookup) -> list[Route]:
    async def status(request: Request) -> JSONResponse:
        return JSONResponse((await _known(lookup, request)).model_dump(mode="json"))

    async def ready(request: Request) -> JSONResponse:
        found = await _known(lookup, request)
        return JSONResponse({"ready": found.ready, "state": found.state.value})

    async def wait_ready(request: Request) -> JSONResponse:
        job_id = parse_job_id(request.path_params["job_id"])
        timeout = _parse_timeout(request)
        found = await lookup.wait_terminal(job_id, timeout)
        if found is None:
            raise Problem(404, f"no job {job_id}")
        return JSONResponse(found.model_dump(mode="json"), status_code=200 if found.ready else 202)

    return [
        Route("/jobs/{job_id}/status", status, methods=["GET"]),
        Route("/jobs/{job_id}/ready", ready, methods=["GET"]),
        Route("/jobs/{job_id}/wait_ready", wait_ready, methods=["GET"]),
    ]


async def _known(lookup: StatusLookup, request: Request) -> JobStatus:
    job_id = parse_job_id(request.path_params["job_id"])
    found = await lookup.status(job_id)
    if found is None:
        raise Problem(404, f"no job {job_id}")
    return found


def _parse_timeout(request: Request) -> float:
    raw = request.query_params.get("timeout")
    if raw is None:
        return DEFAULT_WAIT
    try:
        timeout = float(raw)
    except ValueError:
        timeout = math.nan
    if not math.isfinite(timeout) or timeout < 0:
        message = f"must be a non-negative number of seconds, got {raw!r}"
        raise Problem(
            400,
            f"timeout: {message}",
            errors=[{"field": "timeout", "message": message}],
        )
    return min(timeout, MAX_WAIT)
