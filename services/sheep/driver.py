"""Driving a sheep's runner over ZeroMQ: one job at a time, on a runner holding its model,
(re)started by the backend as needed, and stopped whenever a job leaves it in doubt.

    driver = RunnerDriver("gpu0", backend, sheep_config, on_change=announcer.changed)
    ran = await driver.run(request, model, timeout, progress, cancelled)  # ran.error None: done
    await driver.hand_over(next_request, model, next_cancelled)  # while a job runs: next up
    await driver.take_back(job_id)  # a job handed over that will not run after all
    await driver.discard()      # stop the runner (SIGTERM, then SIGKILL after a grace)

A runner that died, hung or overran the job's timeout is stopped, so the next job gets a
fresh one; a cancelled job's runner gets ``CANCEL_GRACE`` seconds to exit. A job handed over
ahead of its turn starts on the runner the moment the one before it ends; if it is cancelled
first, it is withdrawn without disturbing the runner, and if its runner goes, it is handed to
the next runner when its turn comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import zmq
import zmq.asyncio

from schemas.config import SheepConfig
from schemas.job import ModelRef
from schemas.runner import Accounting, Failed, LogOffsets, Run, Withdrawn
from schemas.status import ErrorInfo
from services.common.job_metrics import (
    RUNNER_LOAD_SECONDS,
    RUNNER_RESTARTS,
    RestartCause,
    model_labels,
)
from services.common.metrics import child
from services.sheep.backend import ModelNotFound, RunnerBackend
from services.sheep.runner_client import (
    RUNNER_EXITED,
    ProgressCallback,
    RunnerClient,
    RunnerLost,
)

log = logging.getLogger(__name__)

CANCEL_GRACE = 1.0
"""Seconds a cancelled job's runner gets to exit on SIGTERM before it is killed."""

T = TypeVar("T")

_LOST_CAUSES: dict[str, RestartCause] = {RUNNER_EXITED: "crash", "Timeout": "timeout"}
"""Why a runner lost under a job was stopped, by the error it left; otherwise it fell silent."""


class JobCancelled(Exception):
    """The job was cancelled while it ran."""


@dataclass(frozen=True)
class Ran:
    """How a job went: ``error`` None if it was done."""

    error: ErrorInfo | None
    logs: tuple[LogOffsets, LogOffsets] | None = None
    """Where its part of the runner's log files starts and ends, if the runner said."""
    accounting: Accounting | None = None
    """What the runner used for it, if the runner said (not when it died or was stopped)."""


class RunnerDriver:
    def __init__(
        self,
        sheep_id: str,
        backend: RunnerBackend,
        sheep_config: SheepConfig,
        *,
        on_change: Callable[[], None],
    ) -> None:
        """``on_change``: called whenever the runner starts, loads its model or goes."""
        self._sheep_id = sheep_id
        self.backend = backend
        self._sheep_config = sheep_config
        self._on_change = on_change
        self._zmq = zmq.asyncio.Context()
        self._client: RunnerClient | None = None
        self._held: dict[str, asyncio.Task[None]] = {}
        """Jobs handed to the current runner ahead of their turn, each with the task that
        withdraws it when it is cancelled."""

    @property
    def held(self) -> Collection[str]:
        """The jobs handed to the runner ahead of their turn."""
        return self._held.keys()

    async def hand_over(self, request: Run, model: ModelRef, cancelled: asyncio.Event) -> None:
        """Give the runner the job after the one it runs, so that it starts it the moment that
        one ends; nothing happens unless the runner is up with the job's model and holds no
        other. :meth:`run` then picks the job up, or :meth:`take_back` takes it back."""
        client = self._client
        if client is None or self.backend.model != model or self._held or cancelled.is_set():
            return
        try:
            await client.start(request)
        except zmq.ZMQError:  # the runner went meanwhile: the job waits for its turn
            return
        if client is self._client:
            self._held[request.job_id] = asyncio.create_task(
                self._withdraw_on(cancelled, client, request.job_id),
                name=f"withdraw-{request.job_id}",
            )

    async def take_back(self, job_id: str) -> None:
        """Make sure a job handed over does not run: withdrawn, or its runner stopped."""
        watcher = self._held.pop(job_id, None)
        if watcher is None:
            return
        watcher.cancel()
        if self._client is None:
            return
        if not await self._withdrawn(self._client, job_id):
            log.info("sheep %s: job %s started before it was withdrawn", self._sheep_id, job_id)
            await self.discard(grace=CANCEL_GRACE, cause="cancel")

    async def ask_withdraw(self, job_id: str) -> None:
        """Ask the runner to drop a job handed over (a job of higher priority came), without
        waiting for its answer: another job's verdict may be being read. :meth:`withdrawn`
        reads the answer once that job has ended."""
        if job_id in self._held and self._client is not None:
            with contextlib.suppress(zmq.ZMQError):
                await self._client.withdraw(job_id)

    async def withdrawn(self, job_id: str) -> bool:
        """After :meth:`ask_withdraw`: whether the runner dropped the job (then it is no longer
        handed over); False if it had started it, and :meth:`run` follows it as usual."""
        if job_id not in self._held or self._client is None:
            return False
        try:
            dropped = await self._client.withdrawn(job_id)
        except (RunnerLost, zmq.ZMQError):
            return False
        if dropped:
            self._held.pop(job_id).cancel()
        return dropped

    async def _withdraw_on(
        self, cancelled: asyncio.Event, client: RunnerClient, job_id: str
    ) -> None:
        await cancelled.wait()
        with contextlib.suppress(zmq.ZMQError):
            await client.withdraw(job_id)

    async def _withdrawn(self, client: RunnerClient, job_id: str) -> bool:
        """Withdraw a held job; whether it never ran, so that its runner may go on."""
        try:
            await client.withdraw(job_id)
            return await client.withdrawn(job_id)
        except (RunnerLost, zmq.ZMQError):
            return False

    async def run(
        self,
        request: Run,
        model: ModelRef,
        time_limit: float | None,
        progress: ProgressCallback,
        cancelled: asyncio.Event,
    ) -> Ran:
        """Run the job (or see through the one handed over). Raises :class:`JobCancelled` once
        ``cancelled`` is set (its runner stopped if the job had started)."""
        watcher = self._held.pop(request.job_id, None)
        held = watcher is not None and self._client is not None
        if watcher is not None:
            watcher.cancel()
        try:
            if held or (self._client is not None and self.backend.model == model):
                client = self._client  # at once: the runner gets the job without a detour
            else:
                client = await _unless(cancelled, self._runner_for(model))
            assert client is not None
            if cancelled.is_set():
                raise JobCancelled
            try:
                async with asyncio.timeout(time_limit):
                    if not held:
                        await client.start(request)
                    verdict = await _unless(cancelled, client.verdict(request, progress))
            except TimeoutError:
                raise RunnerLost.of("Timeout", f"timed out after {time_limit:g} s") from None
        except JobCancelled:
            if not (held and await self._withdrawn(client, request.job_id)):
                log.info("sheep %s: job %s cancelled; stopping it", self._sheep_id, request.job_id)
                await self.discard(grace=CANCEL_GRACE, cause="cancel")
            raise
        except ModelNotFound as exc:
            return Ran(ErrorInfo(type="ModelNotFound", message=str(exc)))
        except RunnerLost as exc:
            log.warning("sheep %s: %s", self._sheep_id, exc)
            await self.discard(cause=_LOST_CAUSES.get(exc.error.type, "lost"))
            if exc.error.type != RUNNER_EXITED:
                return Ran(exc.error)
            last_words = await asyncio.to_thread(_tail, self.backend.log_files[1])
            return Ran(
                exc.error.model_copy(
                    update={"message": f"{exc.error.message}; its last output:\n{last_words}"}
                )
            )
        except BaseException:
            await self.discard()
            raise
        outcome = verdict.outcome
        if isinstance(outcome, Withdrawn):  # cancelled, and withdrawn before it started
            raise JobCancelled
        if isinstance(outcome, Failed):
            return Ran(outcome.error, verdict.logs, outcome.accounting)
        return Ran(None, verdict.logs, outcome.accounting)

    async def discard(self, grace: float | None = None, cause: RestartCause = "stop") -> None:
        """Stop the runner, if any (the backend's default grace when None), counted under
        ``cause``."""
        for watcher in self._held.values():
            watcher.cancel()
        self._held.clear()  # they went with the runner: each is handed over again in its turn
        if self._client is not None:
            child(RUNNER_RESTARTS, self._sheep_id, cause).inc()
            self._client.close()
            self._client = None
        await self.backend.stop(grace)
        self._on_change()

    async def close(self) -> None:
        await self.discard()
        self._zmq.destroy(linger=0)

    async def _runner_for(self, model: ModelRef) -> RunnerClient:
        """A connected client of a ready runner holding ``model``, (re)starting it as needed."""
        started = await self.backend.ensure(model)
        if self._client is not None and not started:
            return self._client
        if self._client is not None:  # the runner of another model was replaced
            child(RUNNER_RESTARTS, self._sheep_id, "model_switch").inc()
            self._client.close()
            self._client = None
        exited = self.backend.exited
        assert exited is not None, "ensure() started no process"
        exited.add_done_callback(lambda _: self._on_change())
        self._on_change()
        self._client, ready = await RunnerClient.connect(
            self._zmq,
            self.backend.address,
            exited,
            sheep_id=self._sheep_id,
            heartbeat_timeout=self._sheep_config.heartbeat_timeout,
            load_timeout=self._sheep_config.load_timeout,
        )
        load = child(RUNNER_LOAD_SECONDS, self._sheep_id, *model_labels(model))
        load.observe(ready.load_seconds)
        log.info(
            "sheep %s: runner (pid %d) loaded %s in %.2f s",
            self._sheep_id,
            ready.pid,
            ready.model,
            ready.load_seconds,
        )
        self._on_change()
        return self._client


async def _unless(cancelled: asyncio.Event, work: Awaitable[T]) -> T:
    """``work``'s result, or :class:`JobCancelled` as soon as ``cancelled`` is set."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(cancelled.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise JobCancelled
    return task.result()


def _tail(path: Path, lines: int = 20, limit: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file (read from its last ``limit`` bytes)."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(max(0, log_file.seek(0, 2) - limit))
            data = log_file.read()
    except FileNotFoundError:
        return "(none)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:]) or "(none)"
