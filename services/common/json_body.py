"""Parsing a JSON body the one way every way in does (``POST /start-job``, AMQP submissions):
pydantic-core, which refuses NaN and Infinity (not JSON) and bounds nesting, with a message a
client can act on.

    value = parse_json(body)        # raises BadJson("is not valid JSON: ...")
"""

from __future__ import annotations

from typing import Any

import pydantic_core

MAX_NESTING = 200
"""Levels of arrays and objects pydantic-core parses before it refuses."""


class BadJson(ValueError):
    """What is wrong with a body, to follow its name: ``f"request body {exc}"``."""


def parse_json(body: bytes) -> Any:
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        if str(exc).startswith("recursion limit exceeded"):
            raise BadJson(
                f"nests arrays and objects deeper than the {MAX_NESTING} levels accepted"
            ) from None
        raise BadJson(f"is not valid JSON: {exc}") from None


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, parameters (``; charset=utf-8``) aside."""
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")
