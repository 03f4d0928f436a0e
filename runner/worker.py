"""Running jobs in a worker thread, so that the main thread keeps talking to the sheep.

The worker takes one job after the other from the :class:`~runner.jobs.JobQueue`. It never
touches the ROUTER socket: it reports a job's start, progress and outcome through an
:class:`Outbox` (an inproc PUSH socket) that the main thread drains and forwards.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import stat
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import zmq

from runner.base import JobContext, Runner
from runner.jobs import JobQueue
from schemas.runner import Accounting, Done, Failed, LogOffsets, ProgressUpdate, Run, Started
from schemas.status import ErrorInfo

log = logging.getLogger(__name__)


class Outbox:
    """The PUSH end of the job-events pipe, shared by the worker and any thread of model code.

    zmq sockets are not thread safe; the lock serialises senders (and is the memory barrier
    zmq asks for when a socket changes threads). Progress is sent without blocking and
    dropped when the pipe is full (the next update supersedes it); outcomes block, bounded by
    the socket's send timeout, so that closing at shutdown can never wait forever.
    """

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self._socket = socket
        self._lock = threading.Lock()

    def progress(self, update: ProgressUpdate) -> None:
        self._send(update, zmq.NOBLOCK)

    def outcome(self, message: Started | Done | Failed) -> None:
        self._send(message, 0)

    def _send(self, message: Started | ProgressUpdate | Done | Failed, flags: int) -> None:
        frame = message.model_dump_json().encode()
        with self._lock:
            if self._socket.closed:
                return
            try:
                self._socket.send(frame, flags)
            except zmq.Again:
                if message.type != "progress":
                    log.error("could not hand %s of job %s over", message.type, message.job_id)

    def close(self) -> None:
        with self._lock:
            self._socket.close(linger=0)


def error_info(exc: BaseException) -> ErrorInfo:
    """What the sheep learns of an exception: its class, message and full traceback."""
    return ErrorInfo(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def start_worker(runner: Runner, jobs: JobQueue, outbox: Outbox) -> None:
    """Run the jobs ``jobs`` is given, one after the other, in a daemon thread (daemon: a stuck
    job must not block exit)."""
    threading.Thread(target=_serve, args=(runner, jobs, outbox), name="jobs", daemon=True).start()


def _serve(runner: Runner, jobs: JobQueue, outbox: Outbox) -> None:
    while (run := jobs.take()) is not None:
        log.debug("job %s started", run.job_id)  # a job's log holds what its model printed
        outbox.outcome(Started(job_id=run.job_id, logs=log_offsets()))
        _work(runner, run, outbox)


def _work(runner: Runner, run: Run, outbox: Outbox) -> None:
    job = JobContext(job_id=run.job_id, parameters=run.parameters)
    meter = _Meter.start()
    try:
        outputs_dir = Path(run.outputs_dir)
        outputs_dir.mkdir(parents=True, exist_ok=True)
        runner.run_job(job, Path(run.inputs_dir), outputs_dir, outbox.progress)
    except BaseException as exc:  # even sys.exit() in model code only fails the job
        failed = Failed(
            job_id=run.job_id, error=error_info(exc), accounting=meter.read(), logs=log_offsets()
        )
        outbox.outcome(failed)
        return
    outbox.outcome(Done(job_id=run.job_id, accounting=meter.read(), logs=log_offsets()))


def log_offsets() -> LogOffsets | None:
    """How long the files behind stdout and stderr are, once flushed; None unless both are
    regular files. The sheep cuts a job's logs from them at these offsets."""
    sizes = []
    for stream, descriptor in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            stream.flush()
            status = os.fstat(descriptor)
        except (OSError, ValueError, AttributeError):  # closed, or replaced by the model
            return None
        if not stat.S_ISREG(status.st_mode):
            return None
        sizes.append(status.st_size)
    return sizes[0], sizes[1]


@dataclass(frozen=True)
class _Meter:
    """What this process has used since a job started: wall time, CPU (its own and that of the
    children it waited for) and, on Linux, its peak memory during the job alone."""

    wall: float
    user: float
    system: float
    peak_reset: bool

    @classmethod
    def start(cls) -> _Meter:
        user, system = _cpu_seconds()
        return cls(time.monotonic(), user, system, _peak_rss().reset())

    def read(self) -> Accounting:
        user, system = _cpu_seconds()
        return Accounting(
            wall_seconds=time.monotonic() - self.wall,
            cpu_user_seconds=max(0.0, user - self.user),
            cpu_system_seconds=max(0.0, system - self.system),
            max_rss_bytes=_peak_rss().read() if self.peak_reset else None,
        )


def _cpu_seconds() -> tuple[float, float]:
    """User and system CPU of this process and of its reaped children (models may shell out)."""
    user = system = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        user += usage.ru_utime
        system += usage.ru_stime
    return user, system


class _PeakRss:
    """This process's resident-memory high-water mark (``VmHWM``), reset as each job starts
    (Linux >= 4.0: ``clear_refs`` value 5) so that a reading is the peak of that job. Both
    files stay open: a job costs one write and one read, not two opens (a tenth of the time)."""

    def __init__(self) -> None:
        self._clear: int | None = None
        self._status: int | None = None
        try:
            self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
            self._status = os.open("/proc/self/status", os.O_RDONLY)
        except OSError:  # not Linux, or a procfs that does not allow it
            self._clear = None

    def reset(self) -> bool:
        """Whether the mark was reset (else a reading would be the process's lifetime peak)."""
        if self._clear is None:
            return False
        try:
            os.write(self._clear, b"5")
        except OSError:
            return False
        return True

    def read(self) -> int | None:
        if self._status is None:
            return None
        try:
            status = os.pread(self._status, 16384, 0)
            start = status.index(b"VmHWM:") + len(b"VmHWM:")
            return int(status[start : status.index(b"kB", start)]) * 1024
        except (OSError, ValueError):
            return None


_peak_rss = functools.cache(_PeakRss)
"""The process's one reader, opened by the first job."""
