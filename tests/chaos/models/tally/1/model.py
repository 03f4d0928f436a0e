"""Tally: sleeps ``{"seconds": s}`` and returns ``{"value": v}``, like the sleep model, and
writes every run it makes into a ledger file: an account of executions that owes nothing to
Shepherd's own answers (the chaos test counts runs from it).

Each line is one JSON record, ``start`` before the sleep and ``end`` after it, appended with
``O_APPEND`` in one ``write``, so lines of concurrent runners never interleave, and a runner
killed mid-run leaves a ``start`` without an ``end``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from runner import JsonRunner


class TallyRunner(JsonRunner):
    def __init__(self, *, ledger: str, **options: Any) -> None:
        super().__init__(ledger=ledger, **options)
        self.ledger = ledger

    def predict(self, payload: Any) -> Any:
        assert self.job is not None
        self._record("start")
        time.sleep(max(0.0, float(payload["seconds"])))
        self._record("end")
        return {"value": payload.get("value")}

    def _record(self, event: str) -> None:
        assert self.job is not None
        line = {"event": event, "job_id": self.job.job_id, "pid": os.getpid(), "at": time.time()}
        fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
