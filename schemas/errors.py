"""Turning pydantic validation errors into messages that name the offending field."""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "model.name", "message": "..."}]``, for problem+json bodies and logs."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(root)",
            "message": error["msg"],
        }
        for error in exc.errors()
    ]


def format_validation_error(exc: ValidationError) -> str:
    """One line listing every problem, each prefixed by its dotted field path."""
    return "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))
