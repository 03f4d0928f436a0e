"""Job endpoints: declaring jobs and reading their inputs and results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from schemas.errors import field_errors
from schemas.job import PAYLOAD_INPUT, JobRequest
from schemas.layout import inputs_prefix, outputs_prefix
from schemas.status import JobState, JobStatus
from services.common.params import parse_file, parse_job_id
from services.common.problems import Problem
from services.common.storage import ObjectMissing, Storage
from services.gateway.intake import Declared, Intake
from services.notifier.lookup import StatusLookup

_CHUNK = 256 * 1024


def job_links(request: Request, job_id: str) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    return {
        rel: f"{base}/jobs/{job_id}/{rel}"
        for rel in ("status", "ready", "wait_ready", "result", "input")
    }


async def read_json_body(request: Request, limit: int) -> Any:
    """The request's JSON body: 415 for another content type, 413 over ``limit``, 400 if
    malformed. The body is read in chunks and refused as soon as it grows past the limit."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(415, f"expected Content-Type application/json, got {content_type or 'none'}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise Problem(413, f"request body exceeds the limit of {limit} bytes")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, f"request body is not valid JSON: {exc}") from exc


class JobRoutes:
    def __init__(
        self, intake: Intake, lookup: StatusLookup, storage: Storage, max_payload_bytes: int
    ) -> None:
        self.intake = intake
        self.lookup = lookup
        self.storage = storage
        self.max_payload_bytes = max_payload_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/start-job", self.start_job, methods=["POST"]),
            Route("/jobs/{job_id}/result", self.result, methods=["GET"]),
            Route("/jobs/{job_id}/result/{file:path}", self.result, methods=["GET"]),
            Route("/jobs/{job_id}/input", self.input, methods=["GET"]),
            Route("/jobs/{job_id}/input/{file:path}", self.input, methods=["GET"]),
        ]

    async def start_job(self, request: Request) -> JSONResponse:
        body = await read_json_body(request, self.max_payload_bytes)
        try:
            job = JobRequest.model_validate(body)
        except ValidationError as exc:
            errors = field_errors(exc)
            raise Problem(
                422,
                "invalid job request: "
                + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                errors=errors,
            ) from exc
        declaration = await self.intake.declare(job)
        status = 202 if declaration.outcome is Declared.NEW else 200
        state = JobState.QUEUED if declaration.queued else None
        return JSONResponse(
            {"job_id": job.job_id, "state": state, "links": job_links(request, job.job_id)},
            status_code=status,
            headers={"Location": job_links(request, job.job_id)["status"]},
        )

    async def _known_status(self, job_id: str) -> JobStatus:
        status = await self.lookup.status(job_id)
        if status is None:
            raise Problem(404, f"no job {job_id}")
        return status

    async def result(self, request: Request) -> Response:
        job_id = parse_job_id(request.path_params["job_id"])
        status = await self._known_status(job_id)
        if not status.state.terminal:
            return JSONResponse(status.model_dump(mode="json"), status_code=202)
        if status.state is not JobState.DONE:
            error = status.error
            raise Problem(
                409,
                f"job {job_id} {status.state.value}"
                + (f": {error.type}: {error.message}" if error else ""),
                title=f"Job {status.state.value}",
                state=status.state.value,
                error=error.model_dump() if error else None,
            )
        return await self._file_or_listing(request, outputs_prefix(job_id), "output.json")

    async def input(self, request: Request) -> Response:
        job_id = parse_job_id(request.path_params["job_id"])
        await self._known_status(job_id)
        return await self._file_or_listing(request, inputs_prefix(job_id), PAYLOAD_INPUT)

    async def _file_or_listing(self, request: Request, prefix: str, default: str) -> Response:
        """``/{file}`` streams that file; without one, the default file if present, else a
        listing of the files with their links."""
        file = request.path_params.get("file")
        if file is not None:
            return await self._stream(prefix + parse_file(file))
        objects = await self.storage.list(prefix)
        if any(o.key == prefix + default for o in objects):
            return await self._stream(prefix + default)
        base = str(request.url).rstrip("/")
        return JSONResponse(
            {
                "files": [
                    {
                        "name": (name := o.key.removeprefix(prefix)),
                        "size": o.size,
                        "url": f"{base}/{name}",
                    }
                    for o in objects
                ]
            }
        )

    async def _stream(self, key: str) -> StreamingResponse:
        try:
            info = await self.storage.stat(key)
            body = await self.storage.open_stream(key)
        except ObjectMissing:
            raise Problem(404, f"no file {key.split('/', 2)[-1]!r} for this job") from None

        def chunks() -> Iterator[bytes]:  # iterated in a worker thread by Starlette
            try:
                yield from body.stream(_CHUNK)
            finally:
                body.close()
                body.release_conn()

        return StreamingResponse(
            chunks(),
            media_type=info.content_type or "application/octet-stream",
            headers={"Content-Length": str(info.size)},
        )
