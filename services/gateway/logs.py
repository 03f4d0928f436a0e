"""A job's logs through the API: ``GET /jobs/{job_id}/logs``, under the ``read`` scope.

    GET /jobs/job-1/logs                      {"stdout": "...", "stderr": "...", ...}
    GET /jobs/job-1/logs?stream=stderr        the whole of stderr, as text/plain
    GET /jobs/job-1/logs?tail=20              the last 20 lines of each
    GET /jobs/job-1/logs?follow=true          live, as server-sent events (``log_follow``)

The sheep stores what the runner printed during the job under ``<job_id>/logs/`` as the job
ends (``services.sheep.job_logs``), with the runner's secrets already kept out of it; before
then the answer is 202 with the job's status.
"""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.api import JobLogs
from schemas.layout import logs_prefix
from schemas.status import JobStatus
from services.common.lookup import StatusLookup
from services.common.params import parse_flag, parse_job_id
from services.common.problems import Problem
from services.common.storage import ObjectMissing, Storage
from services.gateway.api_docs import ERRORS, JOB, PROBLEM, Answer, Doc, Docs, json_answer
from services.gateway.log_follow import LogFollower
from services.gateway.sse import last_event_id
from services.gateway.stored_files import stored_file

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
#: Where each stream is stored, below ``<job_id>/logs/``.
FILES: dict[Stream, str] = {"stdout": "stdout.txt", "stderr": "stderr.txt"}
#: Bytes of each stream a JSON answer holds at most (its end).
JSON_LIMIT = 1024 * 1024
#: Bytes read from the end at a time, looking for the start of the last lines.
TAIL_CHUNK = 64 * 1024
#: The most lines ``tail`` may ask for.
MAX_TAIL = 100_000

DOCS: Docs = {
    ("GET", "/jobs/{job_id}/logs"): Doc(
        "What the job's runner printed to stdout and stderr",
        {
            200: Answer(
                "Both streams (JSON), the one asked for (text/plain), or with follow=true "
                "server-sent events",
                JobLogs,
                or_text=True,
                or_events=True,
            ),
            202: Answer("Not ended yet: the logs are stored as it ends", JobStatus),
            **ERRORS,
            400: PROBLEM,
        },
        [
            *JOB,
            {
                "name": "stream",
                "in": "query",
                "required": False,
                "description": "One stream only, whole, as text/plain.",
                "schema": {"type": "string", "enum": list(STREAMS)},
            },
            {
                "name": "tail",
                "in": "query",
                "required": False,
                "description": "Only the last N lines.",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TAIL},
            },
            {
                "name": "follow",
                "in": "query",
                "required": False,
                "description": "Live, as server-sent events (log, then end with the final "
                "status), from the job's start, or from its last lines with tail.",
                "schema": {"type": "boolean"},
            },
        ],
    ),
}


class LogRoutes:
    def __init__(self, lookup: StatusLookup, storage: Storage, follower: LogFollower) -> None:
        self.lookup = lookup
        self.storage = storage
        self.follower = follower

    def routes(self) -> list[Route]:
        return [Route("/jobs/{job_id}/logs", self.logs, methods=["GET"])]

    async def logs(self, request: Request) -> Response:
        job_id = parse_job_id(request.path_params["job_id"])
        streams = _streams(request.query_params.get("stream"))
        tail = _tail(request.query_params.get("tail"))
        follow = parse_flag("follow", request.query_params.get("follow"))
        status = await self.lookup.status(job_id)
        if status is None:
            raise Problem(404, f"no job {job_id}")
        keys = {stream: logs_prefix(job_id) + FILES[stream] for stream in streams}
        if follow and not status.state.terminal:
            return await self.follower.follow(status, streams, last_event_id(request), tail)
        if follow:  # it has ended: what it printed (its end, JSON_LIMIT at most), then its end
            ends = {s: (await self._end(k, tail, JSON_LIMIT))[0] for s, k in keys.items()}
            return self.follower.replay(
                status, {s: e.decode(errors="replace") for s, e in ends.items()}
            )
        if not status.state.terminal:
            return json_answer(status, 202)
        if len(streams) == 1 and tail is None:
            return await self._whole(keys[streams[0]])
        texts, truncated = {}, []
        for stream, key in keys.items():
            data, cut = await self._end(key, tail, JSON_LIMIT)
            texts[stream] = data.decode(errors="replace")
            if cut:
                truncated.append(stream)
        if len(streams) == 1:
            return Response(texts[streams[0]], media_type="text/plain; charset=utf-8")
        logs = JobLogs(job_id=job_id, state=status.state, truncated=truncated, **texts)
        return json_answer(logs)

    async def _whole(self, key: str) -> Response:
        try:
            return await stored_file(self.storage, key, "text/plain; charset=utf-8")
        except Problem:  # the runner printed nothing to it
            return Response(b"", media_type="text/plain; charset=utf-8")

    async def _end(self, key: str, lines: int | None, limit: int) -> tuple[bytes, bool]:
        """The end of the stored stream: its last ``lines`` lines (all of it when None), at
        most ``limit`` bytes of them, cut at a line's start; whether it was cut short. Read
        backwards, a chunk at a time, until it has them."""
        try:
            start = (await self.storage.stat(key)).size
        except ObjectMissing:
            return b"", False
        data = b""
        while start > 0 and len(data) <= limit and not _has_lines(data, lines):
            step = min(TAIL_CHUNK, start)
            start -= step
            data = await self.storage.get_bytes(key, start, step) + data
        return _cut(data, start == 0, lines, limit)


def _has_lines(data: bytes, lines: int | None) -> bool:
    """Whether ``data`` (the end of a stream) holds its last ``lines`` lines whole."""
    return lines is not None and data.rstrip(b"\n").count(b"\n") >= lines


def _cut(data: bytes, whole: bool, lines: int | None, limit: int) -> tuple[bytes, bool]:
    """The last ``lines`` lines of ``data`` (the end of a stream, ``whole`` if from its
    start), within ``limit`` bytes; whether that is less than asked for."""
    complete = whole
    if lines is not None and (whole or _has_lines(data, lines)):
        kept = data.rstrip(b"\n").split(b"\n")[-lines:]
        data = b"\n".join(kept) + (b"\n" if data.endswith(b"\n") else b"")
        complete = True
    if len(data) > limit:
        data = data[-limit:]
        data = data[data.find(b"\n") + 1 :] if b"\n" in data[:-1] else data
        complete = False
    return data, not complete


def _streams(raw: str | None) -> tuple[Stream, ...]:
    if raw is None:
        return STREAMS
    if raw not in STREAMS:
        message = f"must be stdout or stderr, got {raw!r}"
        raise Problem(400, f"stream: {message}", errors=[{"field": "stream", "message": message}])
    return (raw,)  # type: ignore[return-value]  # checked just above


def _tail(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TAIL:
        message = f"must be a number of lines from 1 to {MAX_TAIL}, got {raw!r}"
        raise Problem(400, f"tail: {message}", errors=[{"field": "tail", "message": message}])
    return int(raw)
