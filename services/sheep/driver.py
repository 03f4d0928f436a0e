"""Driving a sheep's runner over ZeroMQ: one job at a time, on a runner holding its model,
(re)started by the backend as needed, and stopped whenever a job leaves it in doubt.

    driver = RunnerDriver("gpu0", backend, sheep_config, on_change=announcer.changed)
    error = await driver.run(request, model, timeout, progress, cancelled)  # None: done
    await driver.discard()      # stop the runner (SIGTERM, then SIGKILL after a grace)

A runner that died, hung or overran the job's timeout is stopped, so the next job gets a
fresh one; a cancelled job's runner gets ``CANCEL_GRACE`` seconds to exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import zmq.asyncio

from schemas.config import SheepConfig
from schemas.job import ModelRef
from schemas.runner import Failed, Run
from schemas.status import ErrorInfo
from services.sheep.backend import ModelNotFound, RunnerBackend
from services.sheep.runner_client import ProgressCallback, RunnerClient, RunnerLost

log = logging.getLogger(__name__)

CANCEL_GRACE = 1.0
"""Seconds a cancelled job's runner gets to exit on SIGTERM before it is killed."""

T = TypeVar("T")


class JobCancelled(Exception):
    """The job was cancelled while it ran."""


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

    async def run(
        self,
        request: Run,
        model: ModelRef,
        time_limit: float | None,
        progress: ProgressCallback,
        cancelled: asyncio.Event,
    ) -> ErrorInfo | None:
        """Run the job; the error if it failed. Raises :class:`JobCancelled` once
        ``cancelled`` is set (its runner stopped)."""
        try:
            if self._client is not None and self.backend.model == model:
                client = self._client  # at once: the runner gets the job without a detour
            else:
                client = await _unless(cancelled, self._runner_for(model))
            if cancelled.is_set():
                raise JobCancelled
            try:
                async with asyncio.timeout(time_limit):
                    await client.start(request)
                    verdict = await _unless(cancelled, client.verdict(request, progress))
            except TimeoutError:
                raise RunnerLost.of("Timeout", f"timed out after {time_limit:g} s") from None
        except JobCancelled:
            log.info("sheep %s: job %s cancelled; stopping it", self._sheep_id, request.job_id)
            await self.discard(grace=CANCEL_GRACE)
            raise
        except ModelNotFound as exc:
            return ErrorInfo(type="ModelNotFound", message=str(exc))
        except RunnerLost as exc:
            log.warning("sheep %s: %s", self._sheep_id, exc)
            await self.discard()
            if exc.error.type != "RunnerExited":
                return exc.error
            last_words = await asyncio.to_thread(_tail, self.backend.log_files[1])
            return exc.error.model_copy(
                update={"message": f"{exc.error.message}; its last output:\n{last_words}"}
            )
        except BaseException:
            await self.discard()
            raise
        if isinstance(verdict, Failed):
            return verdict.error
        log.info(
            "sheep %s: job %s took %.2f s wall, %.2f s CPU, %d bytes max RSS",
            self._sheep_id,
            request.job_id,
            verdict.accounting.wall_seconds,
            verdict.accounting.cpu_seconds,
            verdict.accounting.max_rss_bytes,
        )
        return None

    async def discard(self, grace: float | None = None) -> None:
        """Stop the runner, if any (the backend's default grace when None)."""
        if self._client is not None:
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
        if self._client is not None:
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
