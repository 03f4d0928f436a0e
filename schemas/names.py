"""Identifiers that end up in object keys, file paths and queue names.

Each one is validated once, here, so that nothing downstream can be tricked into escaping
its prefix in the bucket, its directory under ``data_root`` or its queue namespace.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_SEGMENT_RE = re.compile(SEGMENT)


def _check_segment(value: str) -> str:
    # The pattern already forbids "." and ".." (they cannot start with a letter or digit);
    # this check keeps that promise explicit should the pattern ever be relaxed.
    if value in {".", ".."}:
        raise ValueError(f"{value!r} is a relative path segment, not a name")
    return value


JobId = Annotated[
    str,
    StringConstraints(pattern=f"^{SEGMENT}$"),
    AfterValidator(_check_segment),
]
"""1-128 characters of ``[A-Za-z0-9._-]``, starting with a letter or digit."""

PathSegment = Annotated[
    str,
    StringConstraints(pattern=f"^{SEGMENT}$"),
    AfterValidator(_check_segment),
]
"""A single safe path segment: model names, versions and sheep ids."""


def _check_relative_path(value: str) -> str:
    parts = value.split("/")
    bad = [p for p in parts if not _SEGMENT_RE.fullmatch(p)]
    if bad:
        raise ValueError(
            f"{value!r} is not a relative path of safe segments "
            f"([A-Za-z0-9._-], starting with a letter or digit): bad segment {bad[0]!r}"
        )
    return value


MAX_RELATIVE_PATH = 1024 - 128 - len("/outputs/")
"""S3 keys are at most 1024 bytes, and a path lies below ``<job_id>/outputs/`` at the longest."""

RelativePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_RELATIVE_PATH),
    AfterValidator(_check_relative_path),
    # The validator's rule, for JSON Schema readers (its own message names the bad segment).
    Field(json_schema_extra={"pattern": f"^{SEGMENT}(/{SEGMENT})*$"}),
]
"""A relative file path inside a job's ``inputs/`` or ``outputs/``, e.g. ``images/cat.png``."""


def is_job_id(value: str) -> bool:
    """Cheap check for code paths that must not raise (S3 event keys, log lines)."""
    return bool(_SEGMENT_RE.fullmatch(value))
