"""RFC 9457 problem details: every error the HTTP API returns names what is wrong.

raise Problem(409, "Job exists", f"job {job_id} was declared with a different request")
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from schemas.api import Problem as ProblemBody

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or _TITLES.get(status, "Error")
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self, instance: str | None = None) -> JSONResponse:
        """The answer, as ``schemas.api.Problem`` documents it."""
        body = ProblemBody(
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance or None,
            **self.extra,
        )
        return JSONResponse(
            body.model_dump(mode="json"),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_JSON,
        )


async def problem_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette exception handler for :class:`Problem`."""
    assert isinstance(exc, Problem)
    return exc.response(instance=request.url.path)
