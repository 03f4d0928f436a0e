"""A runner around a plain function, for models that need no loading step."""

from __future__ import annotations

from typing import Any

from runner.imports import import_object
from runner.json_runner import JsonRunner


class FunctionRunner(JsonRunner):
    """Calls ``function(payload) -> result``; ``function`` is a ``"module:attr"`` option,
    imported from the model directory. With ``spread: true`` the payload is the arguments:
    a list is spread as positional ones, an object as keyword ones (Sheepdog's
    ``map_sync(f, args)``: ``client.map(model, [(1, 2), (3, 4)])`` calls ``f(1, 2)``, ``f(3, 4)``).

    ``shepherd-runner.yaml``::

        runner: runner:FunctionRunner
        options:
          function: model:predict
          spread: true
    """

    def __init__(self, *, function: str, spread: bool = False, **options: Any) -> None:
        super().__init__(function=function, spread=spread, **options)
        if not isinstance(function, str):  # it comes straight from YAML
            raise TypeError(f"options.function: expected 'module:function', got {function!r}")
        if not isinstance(spread, bool):
            raise TypeError(f"options.spread: expected true or false, got {spread!r}")
        target = import_object(function, origin="options.function")
        if not callable(target):
            raise TypeError(f"options.function: {function!r} is not callable")
        self._function = target
        self._spread = spread

    def predict(self, payload: Any) -> Any:
        if self._spread and isinstance(payload, list):
            return self._function(*payload)
        if self._spread and isinstance(payload, dict):
            return self._function(**payload)
        return self._function(payload)
