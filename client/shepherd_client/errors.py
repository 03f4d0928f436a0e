"""What the client raises: the server's RFC 9457 problem, typed by its status, and a job's own
failure.

    try:
        job.result()
    except JobFailed as failed:          # the job ran and failed, or was cancelled
        print(failed.error_type, failed.message, failed.traceback)
    except ShepherdError as error:       # the server refused or could not answer
        print(error.status, error.problem["detail"])
"""

from __future__ import annotations

from typing import Any


class ShepherdError(Exception):
    """The server answered with an error (``status``, the problem body in ``problem``), or
    could not be reached (``status`` 0)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem


class InvalidRequest(ShepherdError):
    """400, 413, 415 or 422: the request is wrong; ``problem["errors"]`` names the fields."""


class Unauthorized(ShepherdError):
    """401 or 403: no token, an unknown one, or one without the scope needed."""


class NotFound(ShepherdError):
    """404: no such job (or file)."""


class Conflict(ShepherdError):
    """409: another request under this job id, or a job whose state forbids it."""


class Unavailable(ShepherdError):
    """503 after every retry, or the server unreachable (``status`` 0)."""


class JobFailed(Exception):
    """The job ended without a result: failed (its error type, message and traceback), or
    cancelled."""

    def __init__(self, job_id: str, state: str, error: dict[str, Any] | None) -> None:
        error = error or {}
        self.job_id = job_id
        self.state = state
        self.error_type: str = error.get("type", state)
        self.message: str = error.get("message", f"job {state}")
        self.traceback: str | None = error.get("traceback")
        super().__init__(f"job {job_id} {state}: {self.error_type}: {self.message}")


class MapItemFailed(Exception):
    """An item of ``map`` failed: its index in the input, and the job's failure as cause."""

    def __init__(self, index: int, failure: BaseException) -> None:
        super().__init__(f"item {index} failed: {failure}")
        self.index = index
        self.failure = failure


_BY_STATUS: dict[int, type[ShepherdError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
}


def error_for(status: int, problem: dict[str, Any]) -> ShepherdError:
    """The typed exception of an error answer."""
    return _BY_STATUS.get(status, ShepherdError)(status, problem)
