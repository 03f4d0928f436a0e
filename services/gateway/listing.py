"""The job listing: ``GET /jobs``, newest first, under the ``read`` scope.

    GET /jobs?state=failed&model=echo&since=2026-12-01T00:00:00Z&limit=50
    GET /jobs?state=failed&model=echo&since=2026-12-01T00:00:00Z&limit=50&cursor=<next_cursor>
    GET /job-counts?model=echo              {"counts": {"done": 12, "failed": 1, ...}, ...}

It reads the gateway's job index (:mod:`services.gateway.job_index`), which follows the job
events: a job is listed, in its latest state, within moments of its event.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.errors import field_errors
from schemas.listing import JobCounts, JobFilter, JobListQuery, JobPage
from schemas.status import JobState
from services.common.problems import Problem
from services.gateway.api_docs import PROBLEM, Answer, Doc, Docs, json_answer
from services.gateway.job_index import BadCursor, JobIndex, JobQuery

Q = TypeVar("Q", bound=JobFilter)


def _parameters(query: type[JobFilter]) -> list[dict[str, object]]:
    schema = query.model_json_schema()["properties"]
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": field.description,
            "schema": schema[name],
        }
        for name, field in query.model_fields.items()
    ]


DOCS: Docs = {
    ("GET", "/jobs"): Doc(
        "The jobs, newest first, a page at a time",
        {200: Answer("A page, and the cursor of the next", JobPage), 400: PROBLEM},
        _parameters(JobListQuery),
        description="Filters combine (all must hold). Pass the answer's next_cursor, with the "
        "same filters, for the next page.",
    ),
    ("GET", "/job-counts"): Doc(
        "How many jobs are in each state",
        {200: Answer("A count per state", JobCounts), 400: PROBLEM},
        _parameters(JobFilter),
        description="Of the jobs GET /jobs lists with the same filters.",
    ),
}


class ListingRoutes:
    def __init__(self, index: JobIndex) -> None:
        self.index = index

    def routes(self) -> list[Route]:
        return [
            Route("/jobs", self.jobs, methods=["GET"]),
            Route("/job-counts", self.counts, methods=["GET"]),
        ]

    async def jobs(self, request: Request) -> Response:
        query = _query(request, JobListQuery)
        filters = _filters(query, states=tuple(query.state))
        try:
            page = await self.index.page(filters, query.limit, query.cursor)
        except BadCursor as exc:
            raise Problem(
                400, f"cursor: {exc}", errors=[{"field": "cursor", "message": str(exc)}]
            ) from None
        return Response(page.json(), media_type="application/json")

    async def counts(self, request: Request) -> Response:
        found = await self.index.counts(_filters(_query(request, JobFilter)))
        counts = {state: found.get(state.value, 0) for state in JobState}
        return json_answer(JobCounts(counts=counts, total=sum(counts.values())))


def _filters(query: JobFilter, states: tuple[str, ...] = ()) -> JobQuery:
    model_name, _, model_version = (query.model or "").partition(":")
    return JobQuery(
        states=states,
        model_name=model_name or None,
        model_version=model_version or None,
        sheep_id=query.sheep,
        since=query.since,
    )


def _query(request: Request, kind: type[Q]) -> Q:
    params = request.query_params
    raw: dict[str, object] = {key: params[key] for key in params if key != "state"}
    if "state" in params:
        raw["state"] = [s for value in params.getlist("state") for s in value.split(",") if s]
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise Problem(400, f"invalid listing query: {detail}", errors=errors) from None
