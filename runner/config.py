"""The runner file, ``shepherd-runner.yaml``, and building the runner it names.

::

    runner: model:EchoRunner      # module:ClassName, importable from the model directory
    options: {}                   # keyword arguments of the class
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.base import Runner
from runner.imports import import_object
from schemas.errors import format_validation_error

RUNNER_FILE = "shepherd-runner.yaml"


class RunnerFileError(ValueError):
    """The runner file is missing, not YAML, or does not describe a usable runner."""


class RunnerFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runner: str = Field(
        pattern=r"^[\w.]+:\w+$",
        description="module:ClassName of a Runner subclass; the model directory is on sys.path.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments given to the class."
    )


def read_runner_file(path: Path) -> RunnerFile:
    """Parse and validate ``path``; every error names the file and, if any, the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunnerFileError(f"{path}: cannot read runner file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunnerFileError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    try:
        return RunnerFile.model_validate(data)
    except ValidationError as exc:
        raise RunnerFileError(f"{path}: {format_validation_error(exc)}") from None


def build_runner(path: Path) -> Runner:
    """Instantiate the runner ``path`` describes, importing it from the file's directory."""
    spec = read_runner_file(path)
    model_dir = str(path.resolve().parent)
    if model_dir not in sys.path:
        sys.path.insert(0, model_dir)
    cls = import_object(spec.runner, origin=f"{path}: runner")
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise RunnerFileError(f"{path}: runner: {spec.runner} is not a Runner subclass")
    try:
        inspect.signature(cls).bind(**spec.options)
    except TypeError as exc:
        raise RunnerFileError(f"{path}: options do not fit {spec.runner}: {exc}") from None
    return cls(**spec.options)


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message, reduced to where and what."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split())
