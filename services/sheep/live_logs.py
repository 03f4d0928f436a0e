"""What a running job prints, published as it is printed, for ``GET /jobs/{id}/logs?follow=
true``: the sheep watches its runner's two log files (inotify, through ``watchfiles``) and
publishes each new piece to ``<ns>.events`` under ``log.stdout`` or ``log.stderr``, with the
job and its attempt in headers; ``<ns>.job-logs`` keeps them for an hour.

    live = LiveLogs(broker, backend.log_files)
    live.start()
    live.begin(attempt, marks)   # the job is handed to the runner: its part starts at marks
    ...                          # pieces are published as the runner writes them
    await live.end(ends)         # it ended: the rest up to ends, before its outcome is reported
    await live.stop()

Nothing is published for a job that prints nothing. This is best effort, and never holds a
job up for long: output that cannot be published (RabbitMQ away, or slower than
``END_TIMEOUT`` at a job's end) is skipped, and the job's logs, stored as it ends, stay whole
and exact. At the boundary of two jobs run back to back, the first lines of the next job may
show in the live output of the one before: the runner starts it the moment the other ends,
before the sheep has heard where that one's output ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from watchfiles import awatch

from schemas.broker_names import LOG_ATTEMPT, LOG_JOB, log_routing_key
from services.common.broker import Broker
from services.common.outages import OUTAGES
from services.sheep.admission import Attempt
from services.sheep.job_logs import log_marks

log = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
#: Bytes in one published piece at most.
PIECE = 64 * 1024
#: Milliseconds watchfiles gathers changes before it reports them.
DEBOUNCE_MS = 50
#: Seconds a job's end may spend publishing the rest of its output.
END_TIMEOUT = 5.0


class LiveLogs:
    def __init__(self, broker: Broker, log_files: tuple[Path, Path]) -> None:
        self._broker = broker
        self._files = log_files
        self._job: Attempt | None = None
        self._positions = [0, 0]
        self._last_end: Sequence[int] | None = None
        """Where the previous job's part ended: the next one's starts there at the latest."""
        self._lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        for path in self._files:  # the runner appends to them; watching needs them there
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        self._watcher = asyncio.create_task(self._watch(), name="live-logs")

    async def stop(self) -> None:
        self._stopped.set()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None

    def begin(self, attempt: Attempt, marks: Sequence[int]) -> None:
        """The job's part of the files starts at ``marks``, or where the previous job's ended
        if that is earlier (the runner started it before the sheep took these marks)."""
        self._job = attempt
        last = self._last_end or marks
        self._positions = [min(mark, end) for mark, end in zip(marks, last, strict=True)]

    async def end(self, ends: Sequence[int]) -> None:
        """Publish the job's part up to ``ends``; nothing more is published for it."""
        try:
            async with asyncio.timeout(END_TIMEOUT):
                await self._publish_new(ends)
        except Exception as exc:  # best effort: the job's outcome must not wait on it
            log.warning("live output of the job's end skipped: %r", exc)
        self._last_end = list(ends)
        self.forget()

    def forget(self) -> None:
        """Follow no job: what the runner prints now belongs to none yet."""
        self._job = None

    async def _watch(self) -> None:
        try:
            async for _ in awatch(*self._files, stop_event=self._stopped, debounce=DEBOUNCE_MS):
                await self._publish_new()
        except Exception:
            log.exception("following the runner's output stopped; logs are still stored")

    async def _publish_new(self, ends: Sequence[int] | None = None) -> None:
        async with self._lock:
            # The job's own positions: another job may begin while this one's output is read.
            job, positions = self._job, self._positions
            if job is None:
                return
            sizes = log_marks(self._files)
            for index, (stream, path) in enumerate(zip(STREAMS, self._files, strict=True)):
                size = sizes[index]
                if size < positions[index]:  # the file was replaced: it starts again
                    positions[index] = 0
                end = size if ends is None else min(ends[index], size)
                while positions[index] < end:
                    start = positions[index]
                    data = await asyncio.to_thread(_read, path, start, min(end, start + PIECE))
                    if not data or not await self._publish(job, stream, data):
                        positions[index] = end  # skipped: on to what comes next
                        break
                    positions[index] = start + len(data)

    async def _publish(self, job: Attempt, stream: str, data: bytes) -> bool:
        """Publish one piece; False if RabbitMQ could not take it."""
        try:
            await self._broker.publish(
                self._broker.names.events_exchange,
                log_routing_key(stream),
                data,
                content_type="application/octet-stream",
                headers={LOG_JOB: job.job_id, LOG_ATTEMPT: job.number},
                mandatory=False,  # followed or not, it is in the stream
            )
        except OUTAGES as exc:
            log.debug("live output of job %s skipped: %r", job.job_id, exc)
            return False
        return True


def _read(path: Path, start: int, end: int) -> bytes:
    with contextlib.suppress(FileNotFoundError), path.open("rb") as reader:
        reader.seek(start)
        return reader.read(end - start)
    return b""
