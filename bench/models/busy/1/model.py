"""Busy: takes ``{"seconds": s, "value": v}``, works ``s`` seconds without the CPU (as a model
waits on its accelerator), returns ``{"value": v, "started": t0, "ended": t1}``.

``started`` and ``ended`` (the machine's wall clock) are when the model itself worked: the
benchmark's duty-cycle phase adds them up, a source independent of the sheep's own view.
"""

from __future__ import annotations

import time
from typing import Any

from runner import JsonRunner


class BusyRunner(JsonRunner):
    def predict(self, payload: Any) -> Any:
        started = time.time()
        time.sleep(float(payload["seconds"]))
        return {"value": payload.get("value"), "started": started, "ended": time.time()}
