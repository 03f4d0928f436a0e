"""The runner's ZMQ loop: one ROUTER socket facing the sheep, one job at a time, and the next
one held, to start the moment the current one ends.

Every message is a single JSON frame (``schemas.runner``); the ROUTER sees
``[sheep identity, frame]``. The main thread owns the ROUTER and the PULL end of an inproc
pipe fed by the job thread, polls both with the heartbeat interval as timeout, and is the
only thread that ever writes to the sheep.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType

import pydantic_core
import zmq
from pydantic import ValidationError

from runner.base import Runner
from runner.jobs import JobQueue
from runner.worker import Outbox, error_info, start_worker
from schemas.errors import format_validation_error
from schemas.names import is_job_id
from schemas.runner import (
    Done,
    Failed,
    Heartbeat,
    Hello,
    ProgressUpdate,
    Ready,
    Run,
    RunnerMessage,
    Started,
    Withdraw,
    Withdrawn,
    runner_message,
    sheep_message,
)
from schemas.status import ErrorInfo

log = logging.getLogger(__name__)

EVENTS_ADDRESS = "inproc://job-events"
HELLO_GRACE_SECONDS = 1.0
"""How long a runner that failed to start waits for a ``hello`` to answer with the error."""
FAREWELL_LINGER_MS = 1000
"""How long closing may wait to deliver that last ``failed`` frame."""
OUTCOME_SEND_TIMEOUT_MS = 1000
HELD_JOBS = 1
"""Jobs the runner holds besides the one it runs: the sheep hands the next one over while the
current one runs, so that the model never waits for a round trip to the sheep."""


def _startup_failure(model: str, reason: str) -> StartupError:
    """Say why on stderr at once (one line), then let the caller raise."""
    print(f"shepherd-runner: cannot start {model}: {reason}", file=sys.stderr, flush=True)
    return StartupError(reason)


class StartupError(Exception):
    """The runner could not bind, be built or load its model."""


class RunnerServer:
    """Serves one runner to one sheep: ``load()`` once, then ``serve()`` until interrupted."""

    def __init__(
        self, bind: str, model: str, heartbeat_interval: float, sheep_pid: int | None = None
    ) -> None:
        self._model = model
        self._heartbeat_interval = heartbeat_interval
        self._sheep_pid = sheep_pid
        """The sheep that started it, its parent (bare runners): a runner whose sheep died
        quits. Given by the sheep, since it may die before the runner could ask; None (a
        runner in a container, or started by hand): no such check."""
        self._context = zmq.Context()
        self._router = self._context.socket(zmq.ROUTER)
        self._router.linger = 0
        # A restarted sheep reconnects under the same routing id; without handover the
        # ROUTER would ignore it until it noticed that the old connection is gone.
        self._router.router_handover = 1
        self._events = self._context.socket(zmq.PULL)
        self._events.linger = 0
        self._events.bind(EVENTS_ADDRESS)
        push = self._context.socket(zmq.PUSH)
        push.linger = 0
        push.sndtimeo = OUTCOME_SEND_TIMEOUT_MS
        push.connect(EVENTS_ADDRESS)
        self._outbox = Outbox(push)
        self._runner: Runner | None = None
        self._load_seconds = 0.0
        self._peer: bytes | None = None
        """Routing id of the sheep: whoever last said hello or sent a job."""
        self._jobs = JobQueue(HELD_JOBS)
        self._job_id: str | None = None
        """The job whose start was forwarded last, until its outcome is."""
        try:
            self._router.bind(bind)
        except zmq.ZMQError as exc:
            self.close()
            raise _startup_failure(model, f"cannot bind {bind}: {exc}") from exc

    def __enter__(self) -> RunnerServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._jobs.close()
        self._outbox.close()
        self._events.close()
        self._router.close()
        self._context.term()

    def load(self, build: Callable[[], Runner]) -> None:
        """Build the runner and load its model. On failure, answer the sheep's ``hello`` (if
        it arrives soon) with ``failed`` and raise :class:`StartupError`."""
        started = time.monotonic()
        try:
            runner = build()
            runner.load()
        except Exception as exc:
            # Logged before the sheep hears of it: the sheep stops us on the news, and the
            # job's stderr log must already hold the reason.
            failure = _startup_failure(self._model, f"{type(exc).__name__}: {exc}")
            self._refuse_hello(exc)
            raise failure from exc
        self._runner = runner
        self._load_seconds = time.monotonic() - started
        start_worker(runner, self._jobs, self._outbox)
        log.info("model %s loaded in %.2fs", self._model, self._load_seconds)

    def serve(self) -> None:
        """Answer the sheep and send heartbeats until the sheep that started the runner is
        gone, if it said which (a sheep killed outright: the runner would hold its port and
        devices for nothing); signals end it by raising."""
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        next_heartbeat = time.monotonic() + self._heartbeat_interval
        while True:
            timeout_ms = max(0.0, next_heartbeat - time.monotonic()) * 1000
            ready = dict(poller.poll(timeout_ms))
            # Outcomes first, so that a run arriving right after the last job ended is taken.
            if self._events in ready:
                self._forward(self._events.recv())
            if self._router in ready:
                self._handle(self._router.recv_multipart())
            now = time.monotonic()
            if now >= next_heartbeat:
                if self._sheep_pid is not None and os.getppid() != self._sheep_pid:
                    log.warning("its sheep (pid %d) is gone: stopping", self._sheep_pid)
                    return
                self._to_peer(Heartbeat(job_id=self._job_id))
                next_heartbeat = now + self._heartbeat_interval

    def _handle(self, frames: list[bytes]) -> None:
        identity, payload = frames[0], frames[1:]
        if len(payload) != 1:
            self._protocol_error(identity, None, f"expected 1 frame, got {len(payload)}")
            return
        try:
            message = sheep_message.validate_json(payload[0])
        except ValidationError as exc:
            job_id = _job_id_of(payload[0])
            self._protocol_error(identity, job_id, format_validation_error(exc))
            return
        if isinstance(message, Hello):
            self._hello(identity, message)
        elif isinstance(message, Withdraw):
            self._withdraw(identity, message)
        else:
            self._run(identity, message)

    def _hello(self, identity: bytes, hello: Hello) -> None:
        log.info("sheep %s said hello", hello.sheep_id)
        self._peer = identity
        ready = Ready(model=self._model, load_seconds=self._load_seconds, pid=os.getpid())
        self._send(identity, ready)

    def _run(self, identity: bytes, run: Run) -> None:
        self._peer = identity
        if not self._jobs.offer(run):
            busy = ErrorInfo(type="RunnerBusy", message=f"busy with job {self._jobs.running}")
            self._send(identity, Failed(job_id=run.job_id, error=busy))

    def _withdraw(self, identity: bytes, withdraw: Withdraw) -> None:
        """Drop a held job; a job that has started already is left alone (its ``started`` is
        on its way to the sheep, which stops the runner if it must)."""
        if self._jobs.withdraw(withdraw.job_id):
            self._send(identity, Withdrawn(job_id=withdraw.job_id))

    def _forward(self, frame: bytes) -> None:
        """Pass a job event on to the sheep, dropping progress of a job that already ended."""
        message = runner_message.validate_json(frame)
        if isinstance(message, ProgressUpdate) and message.job_id != self._job_id:
            return
        if isinstance(message, Started):
            self._job_id = message.job_id
        if isinstance(message, Failed):
            log.warning("job %s failed: %s", message.job_id, message.error.type)
        if isinstance(message, Done | Failed):
            self._job_id = None
        if self._peer is not None:  # as the worker wrote it: no need to write it again
            self._router.send_multipart([self._peer, frame])

    def _protocol_error(self, identity: bytes, job_id: str | None, problem: str) -> None:
        log.warning("refusing a malformed message: %s", problem)
        error = ErrorInfo(type="ProtocolError", message=f"malformed message: {problem}")
        self._send(identity, Failed(job_id=job_id, error=error))

    def _refuse_hello(self, exc: Exception) -> None:
        if self._router.poll(HELLO_GRACE_SECONDS * 1000) == 0:
            return
        identity = self._router.recv_multipart()[0]
        self._send(identity, Failed(job_id=None, error=error_info(exc)))
        self._router.linger = FAREWELL_LINGER_MS

    def _to_peer(self, message: RunnerMessage) -> None:
        if self._peer is not None:
            self._send(self._peer, message)

    def _send(self, identity: bytes, message: RunnerMessage) -> None:
        """Never blocks: the ROUTER drops frames for unknown or congested peers."""
        self._router.send_multipart([identity, message.model_dump_json().encode()])


def _job_id_of(payload: bytes) -> str | None:
    """The ``job_id`` of a message that failed validation, if it carries a usable one.

    Parsed by pydantic-core like the message itself: the standard library's parser raises
    RecursionError, not ValueError, on deeply nested garbage.
    """
    try:
        data = pydantic_core.from_json(payload)
    except ValueError:
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) and is_job_id(job_id) else None
