"""A job's "running" report, sent only if the job runs long enough to need it.

A job that ends within ``broker.report_running_after`` seconds is reported once: its outcome
report says when it started (``StatusReport.started_at``), and the notifier announces
``job.running`` and the outcome from it, in that order. A longer job, or one that reports
progress, is reported running at that point, stamped with the moment the runner took it.

    running = RunningReport(attempt.report(JobState.RUNNING), publish, delay=0.2)
    try:
        ...                                   # the job runs; progress: await running.send()
        report = await running.outcome(report)
    finally:
        running.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from schemas.events import StatusReport


class RunningReport:
    def __init__(
        self,
        report: StatusReport,
        publish: Callable[[StatusReport], Awaitable[None]],
        delay: float,
    ) -> None:
        self._report = report
        self._publish = publish
        self._sending: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay, self.send)

    def send(self) -> asyncio.Task[None]:
        """Publish the report now, once; the task confirms it."""
        self._timer.cancel()
        if self._sending is None:
            self._sending = asyncio.create_task(self._publish(self._report))
        return self._sending

    async def outcome(self, report: StatusReport) -> StatusReport:
        """The outcome ``report``, saying when the job started unless the running report went
        out (then confirmed first, so that the notifier gets the two in order)."""
        self._timer.cancel()
        if self._sending is None:
            return report.model_copy(update={"started_at": self._report.time})
        await self._sending
        return report

    def close(self) -> None:
        self._timer.cancel()
        if self._sending is None:
            return
        if not self._sending.done():
            self._sending.cancel()
        elif not self._sending.cancelled():
            self._sending.exception()  # retrieved: the job's own path has dealt with it
