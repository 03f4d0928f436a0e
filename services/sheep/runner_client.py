"""The sheep's end of the runner protocol (``schemas.runner``): one DEALER socket per runner
process, a hello/ready handshake, then one ``run`` at a time until ``done`` or ``failed``.

Every wait races the socket against the runner process's exit, so a dead runner is noticed
at once, and is bounded by the heartbeat timeout, so a hung one is noticed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio
from pydantic import ValidationError

from schemas.errors import format_validation_error
from schemas.runner import (
    Done,
    Failed,
    Hello,
    ProgressUpdate,
    Ready,
    Run,
    RunnerMessage,
    SheepMessage,
    runner_message,
)
from schemas.status import ErrorInfo
from services.common.metrics import invalid_reason, reject

log = logging.getLogger(__name__)

ROUTING_ID = b"sheep"

ProgressCallback = Callable[[ProgressUpdate], Awaitable[None]]


class RunnerLost(Exception):
    """The runner died, hung or never became ready: the job it held failed, restart it."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error

    @classmethod
    def of(cls, error_type: str, message: str) -> RunnerLost:
        return cls(ErrorInfo(type=error_type, message=message))


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

    async def run(self, request: Run, on_progress: ProgressCallback) -> Done | Failed:
        """Run one job: :meth:`start`, then :meth:`verdict`."""
        await self.start(request)
        return await self.verdict(request, on_progress)

    async def start(self, request: Run) -> None:
        """Hand the runner a job: no wait on the event loop while the socket takes it."""
        await self._drain()
        await self._send(request)

    async def verdict(self, request: Run, on_progress: ProgressCallback) -> Done | Failed:
        """The runner's verdict on the job it was handed, or :class:`RunnerLost`."""
        while True:
            message = await self._receive(self._heartbeat_timeout)
            if message is None:
                raise RunnerLost.of(
                    "RunnerUnresponsive",
                    f"runner stopped answering (no heartbeat for {self._heartbeat_timeout:g} s)",
                )
            if isinstance(message, Done) and message.job_id == request.job_id:
                return message
            # A failure without job id: the runner could not even read our request.
            if isinstance(message, Failed) and message.job_id in (None, request.job_id):
                return message
            if isinstance(message, ProgressUpdate) and message.job_id == request.job_id:
                await on_progress(message)

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
                    "RunnerExited", f"runner exited with code {self._exited.result()}"
                )
            return None
