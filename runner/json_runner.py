"""Runners whose job is one JSON value in (``input.json``) and one JSON value out."""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any

from runner.base import Runner

INPUT_FILE = "input.json"
"""Where an inline job payload lands in ``inputs/`` (see ``schemas.job.PAYLOAD_INPUT``)."""
OUTPUT_FILE = "output.json"


class InputError(ValueError):
    """The job's ``input.json`` is missing or is not JSON."""


class JsonRunner(Runner):
    """Override :meth:`predict`; reading ``inputs/input.json`` and writing
    ``outputs/output.json`` is done for you."""

    @abstractmethod
    def predict(self, payload: Any) -> Any:
        """Turn the job's payload into its JSON-serialisable result."""

    def process(self, inputs_dir: Path, outputs_dir: Path) -> None:
        result = self.predict(read_payload(inputs_dir / INPUT_FILE))
        try:
            text = json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"predict() returned a value that is not JSON: {exc}") from exc
        (outputs_dir / OUTPUT_FILE).write_text(text, encoding="utf-8")


def read_payload(path: Path) -> Any:
    """The parsed JSON of ``path``, or an :class:`InputError` saying what is wrong with it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"inputs/{path.name} is missing: this model takes a JSON payload"
        ) from None
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8/16/32
        raise InputError(f"inputs/{path.name} is not valid JSON: {exc}") from None
