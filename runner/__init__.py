"""Write a model for Shepherd: subclass :class:`Runner` (files in, files out),
:class:`JsonRunner` (JSON in, JSON out) or point :class:`FunctionRunner` at a function."""

from runner.base import JobContext, Runner
from runner.function_runner import FunctionRunner
from runner.json_runner import JsonRunner

__all__ = ["FunctionRunner", "JobContext", "JsonRunner", "Runner"]
