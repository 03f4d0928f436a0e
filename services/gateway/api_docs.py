"""The OpenAPI text of each route, declared next to the route, and the pieces it is made of.

    DOCS: Docs = {
        ("GET", "/jobs/{job_id}/ready"): Doc(
            "Whether the job is terminal", {200: Answer("Readiness", Readiness), **ERRORS}, JOB
        ),
    }

``services.gateway.openapi`` gathers every module's ``DOCS`` into the document, the
schemas of the models named here included; a test checks that every route served has its
text and every text its route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.responses import JSONResponse

from schemas.api import Problem
from schemas.names import JobId, RelativePath
from services.common.problems import PROBLEM_JSON


@dataclass(frozen=True)
class Answer:
    """One status code's answer: a JSON body of ``body``, or content of ``media_type``."""

    description: str
    body: type[BaseModel] | None = None
    media_type: str | None = None
    """For a body that is no model: ``*/*`` (a stored file), ``text/event-stream``, ..."""
    or_text: bool = False
    """Also answered as ``text/plain``, when the request asks for text."""
    or_events: bool = False
    """Also answered as ``text/event-stream``, when the request asks to follow."""


@dataclass(frozen=True)
class Doc:
    summary: str
    answers: Mapping[int, Answer]
    parameters: Sequence[dict[str, Any]] = ()
    description: str | None = None
    body: type[BaseModel] | None = None
    """The JSON request body's model."""
    raw_body: bool = field(default=False)
    """Any bytes as the request body (an upload); an empty body is an empty file."""


Docs = Mapping[tuple[str, str], Doc]
"""``(method, path)`` to the route's text; the path as the route declares it."""


def _path_parameter(name: str, annotation: object) -> dict[str, Any]:
    schema = TypeAdapter(annotation).json_schema()
    return {"name": name, "in": "path", "required": True, "schema": schema}


JOB = [_path_parameter("job_id", JobId)]
FILE = [*JOB, _path_parameter("file", RelativePath)]
PROBLEM = Answer("Problem details (RFC 9457)", Problem, PROBLEM_JSON)
ERRORS: dict[int, Answer] = {400: PROBLEM, 404: PROBLEM, 503: PROBLEM}
"""What any job route may answer: a malformed id, an unknown job, a server away."""


def json_answer(
    body: BaseModel, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``body`` as its documented JSON."""
    return JSONResponse(body.model_dump(mode="json"), status_code, headers=headers)
