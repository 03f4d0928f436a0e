"""Readiness endpoints, mounted by the gateway (which installs ``problem_handler``): a job's
status, whether it is terminal, and a long-poll until it is."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.api import Readiness
from schemas.status import JobStatus
from services.common.lookup import StatusLookup
from services.common.params import parse_job_id
from services.common.problems import Problem
from services.gateway.api_docs import ERRORS, JOB, Answer, Doc, Docs, json_answer

DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
"""Longer waits are cut to this; clients poll again with the 202's status in hand."""


DOCS: Docs = {
    ("GET", "/jobs/{job_id}/status"): Doc(
        "The job's state, model, times, attempt and error",
        {200: Answer("The status", JobStatus), **ERRORS},
        JOB,
    ),
    ("GET", "/jobs/{job_id}/ready"): Doc(
        "Whether the job is terminal (done, failed or cancelled)",
        {200: Answer("Readiness", Readiness), **ERRORS},
        JOB,
    ),
    ("GET", "/jobs/{job_id}/wait_ready"): Doc(
        "Long-poll until the job is terminal",
        {
            200: Answer("Terminal", JobStatus),
            202: Answer("Not terminal after the timeout", JobStatus),
            **ERRORS,
        },
        [
            *JOB,
            {
                "name": "timeout",
                "in": "query",
                "required": False,
                "description": f"Seconds to wait (default {DEFAULT_WAIT:g}); longer waits are "
                f"cut to {MAX_WAIT:g}.",
                "schema": {"type": "number", "minimum": 0},
            },
        ],
    ),
}


def routes(lookup: StatusLookup) -> list[Route]:
    async def status(request: Request) -> JSONResponse:
        return json_answer(await _known(lookup, request))

    async def ready(request: Request) -> JSONResponse:
        found = await _known(lookup, request)
        return json_answer(Readiness(ready=found.ready, state=found.state))

    async def wait_ready(request: Request) -> JSONResponse:
        job_id = parse_job_id(request.path_params["job_id"])
        timeout = _parse_timeout(request)
        found = await lookup.wait_terminal(job_id, timeout)
        if found is None:
            raise Problem(404, f"no job {job_id}")
        return json_answer(found, 200 if found.ready else 202)

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
