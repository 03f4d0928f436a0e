"""Iris: a scikit-learn classifier trained at load time on the bundled iris data set.

Input ``{"rows": [[sepal_length, sepal_width, petal_length, petal_width], ...]}`` (cm),
output ``{"predictions": ["setosa", ...]}``.
"""

from __future__ import annotations

import math
from typing import Any

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from runner import JsonRunner

FEATURES = 4


class IrisRunner(JsonRunner):
    def load(self) -> None:
        iris = load_iris()
        self.classes: list[str] = [str(name) for name in iris.target_names]
        self.classifier = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)

    def predict(self, payload: Any) -> Any:
        rows = _rows(payload)
        labels = self.classifier.predict(rows) if rows else []
        return {"predictions": [self.classes[int(label)] for label in labels]}


def _rows(payload: Any) -> list[list[float]]:
    """The rows of the payload, or a ValueError naming the first one that is unusable."""
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        raise ValueError('expected {"rows": [[4 numbers], ...]}')
    rows = payload["rows"]
    for index, row in enumerate(rows):
        if (
            not isinstance(row, list)
            or len(row) != FEATURES
            or not all(_is_number(value) for value in row)
        ):
            raise ValueError(f"rows[{index}]: expected {FEATURES} finite numbers, got {row!r}")
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
