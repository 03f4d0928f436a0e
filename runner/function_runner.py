"""A runner around a plain function, for models that need no loading step."""

from __future__ import annotations

from typing import Any

from runner.imports import import_object
from runner.json_runner import JsonRunner


class FunctionRunner(JsonRunner):
    """Calls ``function(payload) -> result``; ``function`` is a ``"module:attr"`` option,
    imported from the model directory.

    ``shepherd-runner.yaml``::

        runner: runner:FunctionRunner
        options:
          function: model:predict
    """

    def __init__(self, *, function: str, **options: Any) -> None:
        super().__init__(function=function, **options)
        if not isinstance(function, str):  # it comes straight from YAML
            raise TypeError(f"options.function: expected 'module:function', got {function!r}")
        target = import_object(function, origin="options.function")
        if not callable(target):
            raise TypeError(f"options.function: {function!r} is not callable")
        self._function = target

    def predict(self, payload: Any) -> Any:
        return self._function(payload)
