"""The sheep's end of the runner protocol (``schemas.runner``): one DEALER socket per runner
process, a hello/ready handshake, then jobs: the one that runs and at most one held behind
it, each until ``done``, ``failed`` or (held, then withdrawn) ``withdrawn``.

Every wait races the socket against the runner process's exit, so a dead runner is noticed
at once, and is bounded by the heartbeat timeout, so a hung one is noticed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from pydantic import ValidationError

from schemas.errors import format_validation_error
from schemas.runner import (
    Done,
    Failed,
    Heartbeat,
    Hello,
    LogOffsets,
    ProgressUpdate,
    Ready,
    Run,
    RunnerMessage,
    SheepMessage,
    Started,
    Withdraw,
    Withdrawn,
    runner_message,
)
from schemas.status import ErrorInfo
from services.common.metrics import invalid_reason, reject

log = logging.getLogger(__name__)

ROUTING_ID = b"sheep"
RUNNER_EXITED = "RunnerExited"
"""The error type of a job whose runner died under it."""

ProgressCallback = Callable[[ProgressUpdate], Awaitable[None]]


class RunnerLost(Exception):
    """The runner died, hung or never became ready: the job it held failed, restart it."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error

    @classmethod
    def of(cls, error_type: str, message: str) -> RunnerLost:
        return cls(ErrorInfo(type=error_type, message=message))


@dataclass(frozen=True)
class Verdict:
    outcome: Done | Failed | Withdrawn
    logs: tuple[LogOffsets, LogOffsets] | None
    """Where the job's part of the runner's log files starts and ends, if the runner said."""


class RunnerClient:
    """A connection to one runner process; discard it (:meth:`close`) when the process goes."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        address: str,
        exited: asyncio.Future[int],
        heartbeat_timeout: float,
    ) -> None:
        self._exited = exited
        self._heartbeat_timeout = heartbeat_timeout
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.ROUTING_ID, ROUTING_ID)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(address)
        self._handed: dict[str, Started | None] = {}
        """The jobs handed over and not concluded, with their ``started`` once heard."""
        self._early: list[RunnerMessage] = []
        """What the runner said of a held job while the sheep awaited another job's verdict."""

    @classmethod
    async def connect(
        cls,
        context: zmq.asyncio.Context,
        address: str,
        exited: asyncio.Future[int],
        *,
        sheep_id: str,
        heartbeat_timeout: float,
        load_timeout: float,
    ) -> tuple[RunnerClient, Ready]:
        """Say hello and wait until the runner has loaded its model."""
        client = cls(context, address, exited, heartbeat_timeout)
        try:
            ready = await client._handshake(sheep_id, load_timeout)
        except BaseException:
            client.close()
            raise
        return client, ready

    def close(self) -> None:
        self._socket.close(linger=0)

    async def run(self, request: Run, on_progress: ProgressCallback) -> Verdict:
        """Run one job: :meth:`start`, then :meth:`verdict`."""
        await self.start(request)
        return await self.verdict(request, on_progress)

    async def start(self, request: Run) -> None:
        """Hand the runner a job: it starts it at once, or the moment the job it runs ends."""
        if not self._handed:
            await self._drain()
        self._handed[request.job_id] = None
        await self._send(request)

    async def withdraw(self, job_id: str) -> None:
        """Ask the runner to drop a job handed over ahead of its turn (see :meth:`withdrawn`)."""
        await self._send(Withdraw(job_id=job_id))

    async def verdict(self, request: Run, on_progress: ProgressCallback) -> Verdict:
        """The runner's verdict on a job it was handed, or :class:`RunnerLost`."""
        job_id = request.job_id
        while True:
            message = await self._about(job_id)
            if isinstance(message, Started):
                self._handed[job_id] = message
            elif isinstance(message, ProgressUpdate):
                await on_progress(message)
            elif isinstance(message, Done | Failed | Withdrawn):
                started = self._handed.pop(job_id, None)
                start = started.logs if started is not None else None
                end = None if isinstance(message, Withdrawn) else message.logs
                return Verdict(message, None if start is None or end is None else (start, end))

    async def withdrawn(self, job_id: str) -> bool:
        """After :meth:`withdraw`: whether the job never ran (withdrawn in time, or over
        already); False once it has started, and then it runs until the runner stops."""
        while self._handed.get(job_id, True) is None:
            message = await self._about(job_id)
            if isinstance(message, Started):
                self._handed[job_id] = message
            elif isinstance(message, Withdrawn | Done | Failed):
                del self._handed[job_id]
                return True
        return job_id not in self._handed

    async def _handshake(self, sheep_id: str, load_timeout: float) -> Ready:
        await self._send(Hello(sheep_id=sheep_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + load_timeout
        while True:
            message = await self._receive(deadline - loop.time())
            if message is None:
                raise RunnerLost.of(
                    "RunnerLoadTimeout", f"runner did not become ready within {load_timeout:g} s"
                )
            if isinstance(message, Ready):
                return message
            if isinstance(message, Failed):  # it could not load the model, and exits
                error = message.error
                raise RunnerLost(
                    error.model_copy(update={"message": f"runner failed to start: {error.message}"})
                )

    async def _about(self, job_id: str) -> RunnerMessage:
        """The runner's next word on ``job_id`` (heard early, or next on the socket); words on
        another held job are kept for later, all others dropped."""
        for message in self._early:
            if getattr(message, "job_id", None) == job_id:
                self._early.remove(message)
                return message
        while True:
            message = await self._receive(self._heartbeat_timeout)
            if message is None:
                raise RunnerLost.of(
                    "RunnerUnresponsive",
                    f"runner stopped answering (no heartbeat for {self._heartbeat_timeout:g} s)",
                )
            if isinstance(message, Heartbeat | Ready):
                continue
            if message.job_id == job_id:
                return message
            # A failure without job id: the runner could not even read our request.
            if isinstance(message, Failed) and message.job_id is None:
                return message
            if message.job_id in self._handed:
                self._early.append(message)

    async def _send(self, message: SheepMessage) -> None:
        await self._socket.send(message.model_dump_json().encode())

    async def _drain(self) -> None:
        """Drop frames queued while idle (heartbeats) so a run starts from a clean slate."""
        while self._socket.get(zmq.EVENTS) & zmq.POLLIN:
            await self._socket.recv()

    async def _receive(self, patience: float) -> RunnerMessage | None:
        """The next valid frame; ``None`` after ``patience`` s without one (invalid frames do
        not count: a runner babbling garbage is as lost as a silent one).

        Raises :class:`RunnerLost` as soon as the runner process exits.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            receiving = asyncio.ensure_future(self._socket.recv())
            try:
                done, _ = await asyncio.wait(
                    {receiving, self._exited},
                    timeout=max(deadline - loop.time(), 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if not receiving.done():
                    receiving.cancel()
            if receiving in done:
                frame = receiving.result()
                try:
                    return runner_message.validate_json(frame)
                except ValidationError as exc:
                    log.warning(
                        "ignoring an invalid frame from the runner (%s): %.200r",
                        format_validation_error(exc),
                        frame,
                    )
                    reject("runner", invalid_reason(exc))
                    continue
            if self._exited.done():
                raise RunnerLost.of(
                    RUNNER_EXITED, f"runner exited with code {self._exited.result()}"
                )
            return None
