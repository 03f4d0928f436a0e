"""Sleep: takes ``{"seconds": s, "value": v}``, waits ``s`` seconds, returns ``{"value": v}``.

Handy for exercising timeouts, heartbeats, progress and busy runners.
"""

from __future__ import annotations

import math
import time
from typing import Any

from runner import JsonRunner


class SleepRunner(JsonRunner):
    def __init__(self, *, tick: float = 1.0, **options: Any) -> None:
        """``tick``: seconds between progress reports."""
        super().__init__(tick=tick, **options)
        self.tick = tick

    def predict(self, payload: Any) -> Any:
        if not isinstance(payload, dict) or not isinstance(payload.get("seconds"), int | float):
            raise ValueError('expected {"seconds": <number>, "value": <anything>}')
        seconds = max(0.0, float(payload["seconds"]))
        ticks = max(1, math.ceil(seconds / self.tick))
        for done in range(ticks):
            self.report_progress(done / ticks, f"slept {done * seconds / ticks:.1f}s")
            time.sleep(seconds / ticks)
        self.report_progress(1.0, "awake")
        return {"value": payload.get("value")}
