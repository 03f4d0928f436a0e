"""A job's "running" report, sent only if the job runs long enough to need it, and its
progress reports, a few a second at most.

A job that ends within ``broker.report_running_after`` seconds is reported once: its outcome
report says when it started (``StatusReport.started_at``), and the notifier announces
``job.running`` and the outcome from it, in that order. A longer job, or one that reports
progress, is reported running at that point, stamped with the moment the runner took it.

    running = RunningReport(attempt.report(JobState.RUNNING), publish, delay=0.2)
    try:
        ...                                   # the job runs; progress: await running.progress(u)
        report = await running.outcome(report)
    finally:
        running.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from schemas.events import StatusReport, utcnow
from schemas.runner import ProgressUpdate
from schemas.status import Progress

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress reports of one job; the ones in between are dropped."""


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
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(delay, self.send)
        self._last_progress = -PROGRESS_INTERVAL

    def send(self) -> asyncio.Task[None]:
        """Publish the report now, once; the task confirms it."""
        self._timer.cancel()
        if self._sending is None:
            self._sending = asyncio.create_task(self._publish(self._report))
        return self._sending

    async def progress(self, update: ProgressUpdate) -> None:
        """Report the job's progress, after its running report, unless the last progress
        report went out less than ``PROGRESS_INTERVAL`` ago (the last update always goes)."""
        now = self._loop.time()
        if now - self._last_progress < PROGRESS_INTERVAL and update.fraction < 1.0:
            return
        self._last_progress = now
        progress = Progress(fraction=update.fraction, message=update.message)
        report = self._report.model_copy(
            update={"state": None, "progress": progress, "inputs": None}
        )
        try:
            await self.send()
            await self._publish(report.model_copy(update={"time": utcnow()}))
        except Exception as exc:  # progress is a courtesy: never fail a job over it
            log.warning("progress of job %s lost: %s", update.job_id, exc)

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
