"""Job endpoints: declaring jobs, uploading their inputs, reading their inputs and results."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas.api import Accepted, FileListing, ListedFile, Uploaded
from schemas.errors import field_errors
from schemas.job import IDEMPOTENCY_KEY, PAYLOAD_INPUT, JobRequest
from schemas.layout import inputs_prefix, outputs_prefix
from schemas.status import JobState, JobStatus
from services.common.json_body import BadJson, is_json_media_type, parse_json
from services.common.lookup import StatusLookup
from services.common.params import parse_file, parse_flag, parse_job_id
from services.common.problems import Problem
from services.common.storage import Storage
from services.gateway.api_docs import ERRORS, FILE, JOB, PROBLEM, Answer, Doc, Docs, json_answer
from services.gateway.auth import token_name
from services.gateway.intake import Declaration, Declared, Intake
from services.gateway.stored_files import stored_file

log = logging.getLogger(__name__)


def job_links(request: Request, job_id: str) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    return {
        rel: f"{base}/jobs/{job_id}/{rel}"
        for rel in ("status", "ready", "wait_ready", "result", "input")
    }


async def bounded_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body in chunks; 413 as soon as it is declared or grows past ``limit``
    (a chunked body has no Content-Length to check up front)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"request body exceeds the limit of {limit} bytes")
        yield chunk


async def read_json_body(request: Request, limit: int) -> Any:
    """The request's JSON body: 415 for another content type, 413 over ``limit``, 400 if
    malformed."""
    content_type = request.headers.get("content-type", "")
    if not is_json_media_type(content_type):
        raise Problem(415, f"expected Content-Type application/json, got {content_type or 'none'}")
    body = b"".join([chunk async for chunk in bounded_body(request, limit)])
    try:
        return parse_json(body)
    except BadJson as exc:
        raise Problem(400, f"request body {exc}") from None


def _idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, which makes a submission without a job id repeatable
    (its job id is derived from the key and the token)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(400, "the Idempotency-Key header must be 1 to 255 visible ASCII characters")
    return key


def _file_param(request: Request) -> str | None:
    """The validated ``{file}`` of the path, if the route has one; checked before anything
    is looked up, so a bad name is always a 400."""
    file = request.path_params.get("file")
    return None if file is None else parse_file(file)


_FILE_OR_LISTING = "The file, or (without it, or with others) a FileListing"
DOCS: Docs = {
    ("POST", "/start-job"): Doc(
        "Declare a job",
        {
            202: Answer("A new job", Accepted),
            200: Answer("An identical repeat of a known job", Accepted),
            409: PROBLEM,
            413: PROBLEM,
            415: PROBLEM,
            422: PROBLEM,
            **ERRORS,
        },
        parameters=[
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern},
                "description": "For a request without job_id: a repeat with the same key (and "
                "token) names the same job, answered 200; a different request under it, 409.",
            }
        ],
        description="Without job_id, Shepherd makes the job's id and returns it.",
        body=JobRequest,
    ),
    ("GET", "/jobs/{job_id}/result"): Doc(
        "outputs/output.json, or the list of output files",
        {
            200: Answer(_FILE_OR_LISTING, media_type="*/*"),
            202: Answer("Not terminal yet", JobStatus),
            409: PROBLEM,
            **ERRORS,
        },
        [
            *JOB,
            {
                "name": "list",
                "in": "query",
                "required": False,
                "description": "The FileListing of every output, output.json among them.",
                "schema": {"type": "boolean"},
            },
        ],
    ),
    ("GET", "/jobs/{job_id}/result/{file:path}"): Doc(
        "One output file",
        {
            200: Answer("The file", media_type="*/*"),
            202: Answer("Not terminal yet", JobStatus),
            409: PROBLEM,
            **ERRORS,
        },
        FILE,
    ),
    ("GET", "/jobs/{job_id}/input"): Doc(
        "inputs/input.json, or the list of input files",
        {200: Answer(_FILE_OR_LISTING, media_type="*/*"), **ERRORS},
        [
            *JOB,
            {
                "name": "list",
                "in": "query",
                "required": False,
                "description": "The FileListing of every input, input.json among them.",
                "schema": {"type": "boolean"},
            },
        ],
    ),
    ("GET", "/jobs/{job_id}/input/{file:path}"): Doc(
        "One input file", {200: Answer("The file", media_type="*/*"), **ERRORS}, FILE
    ),
    ("PUT", "/jobs/{job_id}/input/{file:path}"): Doc(
        "Upload one input file",
        {
            201: Answer("Stored; Location is its URL", Uploaded),
            409: PROBLEM,
            413: PROBLEM,
            **ERRORS,
        },
        FILE,
        description="The body is streamed into <job_id>/inputs/<file>, up to "
        "gateway.max_upload_bytes; like an upload straight to the store, it queues the job "
        "once all its declared inputs are there. An upload over the limit is refused with 413 "
        "and leaves nothing behind. A job's inputs are fixed once it is queued: a later upload "
        "is refused with 409, naming the job's state.",
        raw_body=True,
    ),
}


class JobRoutes:
    def __init__(
        self,
        intake: Intake,
        lookup: StatusLookup,
        storage: Storage,
        max_payload_bytes: int,
        max_upload_bytes: int,
    ) -> None:
        self.intake = intake
        self.lookup = lookup
        self.storage = storage
        self.max_payload_bytes = max_payload_bytes
        self.max_upload_bytes = max_upload_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/start-job", self.start_job, methods=["POST"]),
            Route("/jobs/{job_id}/result", self.result, methods=["GET"]),
            Route("/jobs/{job_id}/result/{file:path}", self.result, methods=["GET"]),
            Route("/jobs/{job_id}/input", self.input, methods=["GET"]),
            Route("/jobs/{job_id}/input/{file:path}", self.input_file, methods=["GET", "PUT"]),
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
        job = job.identified(_idempotency_key(request), token_name(request))
        declaration = await self.intake.declare(job, "http")
        status = 202 if declaration.outcome is Declared.NEW else 200
        state = await self._declared_state(declaration)
        links = job_links(request, job.job_id)
        # Built from values validated already: no second validation on every submission.
        accepted = Accepted.model_construct(
            job_id=job.job_id, state=state, links=links, notes=declaration.notes
        )
        return json_answer(accepted, status, headers={"Location": links["status"]})

    async def _declared_state(self, declaration: Declaration) -> JobState:
        """The state a declaration leaves its job in: a repeat finds it wherever it got."""
        if declaration.queued:
            return JobState.QUEUED
        if declaration.outcome is Declared.REPEATED:
            status = await self.lookup.status(declaration.spec.job_id)
            if status is not None:
                return status.state
        return JobState.ACCEPTED

    async def _known_status(self, job_id: str) -> JobStatus:
        status = await self.lookup.status(job_id)
        if status is None:
            raise Problem(404, f"no job {job_id}")
        return status

    async def result(self, request: Request) -> Response:
        job_id = parse_job_id(request.path_params["job_id"])
        file = _file_param(request)
        status = await self._known_status(job_id)
        if not status.state.terminal:
            return json_answer(status, 202)
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
        listing = parse_flag("list", request.query_params.get("list"))
        return await self._file_or_listing(
            request, outputs_prefix(job_id), "output.json", file, listing=listing
        )

    async def input(self, request: Request) -> Response:
        job_id = parse_job_id(request.path_params["job_id"])
        file = _file_param(request)
        listing = file is None and parse_flag("list", request.query_params.get("list"))
        await self._known_status(job_id)
        spec = await self.intake.load_spec(job_id)
        # A payload kept in job.json rather than stored (gateway.dispatch_payload_bytes).
        kept = None if spec is None or spec.payload is None else spec.payload.encode()
        if kept is not None and file in (None, PAYLOAD_INPUT) and not listing:
            return Response(kept, media_type="application/json")
        return await self._file_or_listing(
            request,
            inputs_prefix(job_id),
            PAYLOAD_INPUT,
            file,
            listing=listing,
            kept={} if kept is None else {PAYLOAD_INPUT: len(kept)},
        )

    async def input_file(self, request: Request) -> Response:
        """One route for reading and uploading, so that a 405 allows both methods."""
        return await (self.upload if request.method == "PUT" else self.input)(request)

    async def upload(self, request: Request) -> JSONResponse:
        """Stream the body into ``<job_id>/inputs/<file>``, then queue the job at once if its
        declared inputs are all there, without waiting for the store's notification (which
        then finds the job claimed). An upload over the limit, or cut short, leaves nothing
        behind. A job's inputs are fixed once it is queued: a later upload is a 409 naming
        its state."""
        job_id = parse_job_id(request.path_params["job_id"])
        file = parse_file(request.path_params["file"])
        if await self.intake.queued(job_id):
            status = await self.lookup.status(job_id)
            state = (status.state if status is not None else JobState.QUEUED).value
            raise Problem(
                409,
                f"job {job_id} is {state}: its inputs cannot change once it is queued",
                title="Inputs fixed",
                state=state,
            )
        content_type = (
            request.headers.get("content-type")
            or mimetypes.guess_type(file)[0]
            or "application/octet-stream"
        )
        size = await self.storage.put_stream(
            inputs_prefix(job_id) + file,
            bounded_body(request, self.max_upload_bytes),
            content_type,
        )
        try:
            await self.intake.try_dispatch(job_id, stored=[file])
        except Exception as exc:  # stored all the same: the notification queues the job
            log.warning("queueing job %s after its upload failed: %s", job_id, exc)
        location = f"{job_links(request, job_id)['input']}/{file}"
        return json_answer(
            Uploaded(job_id=job_id, file=file, size=size), 201, {"Location": location}
        )

    async def _file_or_listing(
        self,
        request: Request,
        prefix: str,
        default: str,
        file: str | None,
        *,
        listing: bool = False,
        kept: dict[str, int] | None = None,
    ) -> Response:
        """``/{file}`` streams that file; without one, the default file if present (and no
        ``listing`` asked for), else a listing of the files with their links (and of those
        ``kept`` elsewhere: name to size)."""
        if file is not None:
            return await stored_file(self.storage, prefix + file)
        objects = await self.storage.list(prefix)
        if not listing and any(o.key == prefix + default for o in objects):
            return await stored_file(self.storage, prefix + default)
        base = str(request.url.replace(query="")).rstrip("/")
        listed = [*(kept or {}).items(), *((o.key.removeprefix(prefix), o.size) for o in objects)]
        files = [ListedFile(name=name, size=size, url=f"{base}/{name}") for name, size in listed]
        return json_answer(FileListing(files=files))
