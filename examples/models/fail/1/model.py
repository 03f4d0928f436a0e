"""Fail: every job fails, to show how user errors reach the client."""

from __future__ import annotations

from typing import Any


def predict(payload: Any) -> Any:
    raise ValueError("requested failure")
