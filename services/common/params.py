"""Parsing path and query parameters of the HTTP API into validated values, or a 400 problem."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from schemas.errors import field_errors
from schemas.names import JobId, RelativePath
from services.common.problems import Problem

_job_id = TypeAdapter(JobId)
_relative_path = TypeAdapter(RelativePath)


def parse_job_id(value: str) -> str:
    try:
        return _job_id.validate_python(value)
    except ValidationError as exc:
        raise Problem(
            400,
            f"invalid job id {value!r}: 1-128 characters of [A-Za-z0-9._-], "
            "starting with a letter or digit",
            errors=[{"field": "job_id", "message": e["message"]} for e in field_errors(exc)],
        ) from exc


def parse_file(value: str) -> str:
    try:
        return _relative_path.validate_python(value)
    except ValidationError as exc:
        raise Problem(
            400,
            f"invalid file name {value!r}",
            errors=[{"field": "file", "message": e["message"]} for e in field_errors(exc)],
        ) from exc


def parse_flag(name: str, raw: str | None) -> bool:
    """A boolean query parameter: absent or ``false``, ``true``; anything else is a 400."""
    if raw is None or raw == "false":
        return False
    if raw != "true":
        message = f"must be true or false, got {raw!r}"
        raise Problem(400, f"{name}: {message}", errors=[{"field": name, "message": message}])
    return True
