"""A sheep: takes jobs from its own queue (and the pool while idle), runs them one at a time on
its runner, uploads what they wrote, reports the outcome, and only then lets go of the job.

    sheep = Sheep("gpu0", config, broker, storage)
    await sheep.start()
    ...
    await sheep.stop()

Why the job is let go last: a sheep (or its machine) may die at any moment. Until its outcome
is published, the job is held (``services.sheep.lease``: by its unacknowledged delivery, by a
lease once it runs long) so that it goes back to its queue if the sheep dies: a job is never
lost, and its outcome is visible once. Every delivery counts as an attempt; a job out of
attempts is failed, not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import zmq.asyncio
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError

from schemas.config import BareSheepConfig, Config
from schemas.errors import format_validation_error
from schemas.events import SheepState, StatusReport
from schemas.job import PAYLOAD_INPUT, JobDispatch, ModelRef
from schemas.layout import inputs_prefix, job_prefix, logs_prefix, outputs_prefix, status_key
from schemas.runner import Failed, ProgressUpdate, Run
from schemas.status import ErrorInfo, JobState, JobStatus, Progress
from schemas.topology import REDISPATCHED, build_topology
from services.common.broker import Broker, BrokerUnavailable
from services.common.metrics import invalid_reason, reject
from services.common.storage import ObjectMissing, Storage, StoredObject
from services.sheep.backend import ModelNotFound, RunnerBackend
from services.sheep.bare import BareBackend
from services.sheep.cancellations import Cancellations
from services.sheep.containers import DockerBackend
from services.sheep.lease import Hold, Leases, attempt_number
from services.sheep.runner_client import ProgressCallback, RunnerClient, RunnerLost

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress reports of one job; the ones in between are dropped."""
BROKER_TRIES = 3
BROKER_STEP_TIMEOUT = 5.0
CANCEL_GRACE = 1.0
"""Seconds a cancelled job's runner gets to exit on SIGTERM before it is killed."""
MAX_RETRY_DELAY = 30.0
ANNOUNCE_GAP = 1.0
"""Seconds at least between two announcements of a sheep's state: the fleet's view is a
sample, not a log of every job (announcing each would cost two publishes a job)."""

Settlement = Literal["ack", "requeue", "dead-letter"]


T = TypeVar("T")


class JobCancelled(Exception):
    """The job was cancelled while it ran."""


@dataclass(frozen=True)
class _Delivery:
    message: AbstractIncomingMessage
    from_pool: bool


@dataclass(frozen=True)
class _Attempt:
    """One delivery of one job on this sheep, and where its files live meanwhile."""

    dispatch: JobDispatch
    number: int
    sheep_id: str
    directory: Path

    @property
    def job_id(self) -> str:
        return self.dispatch.job.job_id

    def report(self, state: JobState | None = None, **fields: object) -> StatusReport:
        return StatusReport(
            job_id=self.job_id,
            model=self.dispatch.job.model,
            attempt=self.number,
            sheep_id=self.sheep_id,
            state=state,
            **fields,
        )


class Sheep:
    """One compute slot: a consumer of its queue and the pool, and the owner of a runner."""

    def __init__(
        self,
        sheep_id: str,
        config: Config,
        broker: Broker,
        storage: Storage,
        *,
        state_interval: float = 5.0,
        stop_grace: float | None = None,
    ) -> None:
        if sheep_id not in config.sheep:
            raise ValueError(
                f"sheep {sheep_id!r} is not configured (known: {sorted(config.sheep)})"
            )
        sheep_config = config.sheep[sheep_id]
        self.sheep_id = sheep_id
        self._config = config
        self._sheep_config = sheep_config
        self._broker = broker
        self._storage = storage
        self._names = broker.names
        self._state_interval = state_interval
        self._stop_grace = sheep_config.stop_grace if stop_grace is None else stop_grace
        self._jobs_root = (config.data_root / sheep_id).absolute()
        self.backend: RunnerBackend = (
            BareBackend(
                sheep_id, sheep_config, config.data_root, reveals_secret=config.reveals_secret
            )
            if isinstance(sheep_config, BareSheepConfig)
            else DockerBackend(
                sheep_id,
                sheep_config,
                config.registry,
                config.data_root,
                broker.names.namespace,
                reveals_secret=config.reveals_secret,
            )
        )
        self._leases = Leases(broker, sheep_id, config.broker.lease_time)
        self._cancellations = Cancellations(broker)
        self._zmq = zmq.asyncio.Context()
        self._client: RunnerClient | None = None
        self._inbox: asyncio.Queue[_Delivery | None] = asyncio.Queue()
        self._channels: list[AbstractRobustChannel] = []
        self._own_queue: AbstractQueue | None = None
        self._own_tag: str | None = None
        self._pool_queue: AbstractQueue | None = None
        self._pool_tag: str | None = None
        self._pool_open = False
        self._stopping = False
        self._current_job: str | None = None
        self._changed = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Declare the topology, start announcing and consuming."""
        names = self._names
        await self._broker.declare(
            build_topology(
                names,
                self._config.broker.delivery_limit,
                [self.sheep_id],
                self._config.notifier.webhook_retry_schedule,
            )
        )
        await self.backend.recover()
        await self._cancellations.start()
        await self._leases.open()
        self._own_queue = await self._open_queue(names.sheep_queue(self.sheep_id))
        self._pool_queue = await self._open_queue(names.pool_queue)
        self._worker = asyncio.create_task(self._work(), name=f"sheep-{self.sheep_id}-work")
        self._announcer = asyncio.create_task(
            self._announce(), name=f"sheep-{self.sheep_id}-announce"
        )
        self._changed.set()  # announce the sheep at once
        self._own_tag = await self._own_queue.consume(partial(self._receive, from_pool=False))
        log.info("sheep %s consuming %s", self.sheep_id, names.sheep_queue(self.sheep_id))

    async def stop(self) -> None:
        """Stop consuming, give the current job ``stop_grace`` seconds to finish (else it is
        queued again), stop the runner and every task. A stopped sheep cannot be started
        again."""
        self._stopping = True
        await self._cancel_consumer(self._own_queue, self._own_tag)
        self._own_tag = None
        await self._close_pool()
        if self._worker is not None:
            self._inbox.put_nowait(None)  # the worker finishes its job, then sees this and ends
            await asyncio.wait({self._worker}, timeout=self._stop_grace)
        for task in (self._worker, self._announcer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._worker = self._announcer = None
        while not self._inbox.empty():  # delivered but never started
            delivery = self._inbox.get_nowait()
            if delivery is not None:
                await _settle(delivery.message, "requeue")
        await self._discard_runner()
        self._zmq.destroy(linger=0)
        await _briefly("stopping the cancellation listener", self._cancellations.stop())
        await _briefly("closing the lease channel", self._leases.close())
        for channel in self._channels:
            await _briefly("closing a channel", channel.close())
        self._channels = []
        log.info("sheep %s stopped", self.sheep_id)

    # -- consuming ----------------------------------------------------------------------------

    async def _open_queue(self, name: str) -> AbstractQueue:
        channel = await self._broker.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=1)
        self._channels.append(channel)
        # Passive declare, not get_queue: only declared queues get their consumers back when
        # the robust channel reconnects.
        return await channel.declare_queue(name, passive=True)

    async def _receive(self, message: AbstractIncomingMessage, *, from_pool: bool) -> None:
        if self._stopping or (from_pool and not self._pool_open):  # let another sheep have it
            await _settle(message, "requeue")
            return
        self._inbox.put_nowait(_Delivery(message, from_pool))

    async def _open_pool(self) -> None:
        """Take pool work: only while idle, so nothing waits behind a busy sheep."""
        delay = self._config.broker.reconnect_interval
        while not (self._pool_open or self._stopping or self._pool_queue is None):
            self._pool_open = True
            try:
                tag = await self._pool_queue.consume(partial(self._receive, from_pool=True))
            except Exception as exc:  # a channel still being restored after a reconnection
                self._pool_open = False
                log.warning("sheep %s cannot consume the pool yet: %s", self.sheep_id, exc)
                await self._broker.wait_connected()
                if not self._inbox.empty():  # its own queue has work meanwhile
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            if self._pool_open:
                self._pool_tag = tag
            else:  # stop() closed the pool while we subscribed
                await self._cancel_consumer(self._pool_queue, tag)

    async def _close_pool(self) -> None:
        """Stop taking pool work and hand back pool jobs that arrived but were not started.
        A job runs meanwhile: pool jobs delivered before the consumer is gone are handed
        back as they come (``_receive``)."""
        if not self._pool_open:
            return
        self._pool_open = False
        tag, self._pool_tag = self._pool_tag, None
        await self._cancel_consumer(self._pool_queue, tag)
        kept = []
        while not self._inbox.empty():
            delivery = self._inbox.get_nowait()
            if delivery is not None and delivery.from_pool:
                await _settle(delivery.message, "requeue")
            else:
                kept.append(delivery)
        for delivery in kept:
            self._inbox.put_nowait(delivery)

    async def _cancel_consumer(self, queue: AbstractQueue | None, tag: str | None) -> None:
        if queue is None or tag is None:
            return
        await _briefly(f"cancelling the consumer of {queue.name}", queue.cancel(tag))

    async def _work(self) -> None:
        """Handle deliveries one at a time, in the order they arrived.

        The pool stays open while a pool job runs on its unacknowledged delivery: with a
        prefetch of one, nothing more comes from the pool meanwhile. A job of the sheep's own
        queue, or a pool job once leased (its delivery acked), closes it, so that no pool job
        waits behind a busy sheep."""
        while True:
            if self._inbox.empty():
                await self._open_pool()
            delivery = await self._inbox.get()
            if delivery is None:
                return
            closing = (
                None
                if delivery.from_pool
                else asyncio.create_task(self._close_pool(), name=f"sheep-{self.sheep_id}-pool")
            )
            try:
                await self._handle(delivery.message)
            finally:
                if closing is not None:
                    await closing

    # -- one job ------------------------------------------------------------------------------

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            dispatch = JobDispatch.model_validate_json(message.body)
        except ValidationError as exc:
            log.error(
                "sheep %s: dead-lettering an invalid job message from %s: %s",
                self.sheep_id,
                message.routing_key,
                format_validation_error(exc),
            )
            reject("jobs", invalid_reason(exc))
            await _settle(message, "dead-letter")
            return
        job_id = dispatch.job.job_id
        attempt = _Attempt(
            dispatch, attempt_number(message), self.sheep_id, self._jobs_root / job_id
        )
        try:
            ended, stored = await asyncio.gather(
                self._ended(job_id) if _maybe_repeated(message, attempt) else _false(),
                self._storage.list(job_prefix(job_id)),
            )
            if ended:  # a duplicate delivery of a job that is over
                log.info("sheep %s: job %s has ended already; dropping it", self.sheep_id, job_id)
                await _settle(message, "ack")
                return
            ending = self._ending(attempt, {o.key for o in stored})
            if ending is not None:  # out of attempts, or cancelled before it started
                await self._publish(ending)
                await _settle(message, "ack")
                log.info("sheep %s: job %s %s", self.sheep_id, job_id, ending.state)
                return
        except Exception:
            log.exception("sheep %s: cannot take job %s; requeueing it", self.sheep_id, job_id)
            # Every requeue counts as a delivery: not in a tight loop while a server is away.
            await self._wait_for_storage()
            await self._broker.wait_connected()
            await _settle(message, "requeue")
            return
        inputs = [o for o in stored if o.key.startswith(inputs_prefix(job_id))]
        hold = Hold(
            self._leases,
            message,
            attempt.number,
            self._config.broker.lease_after,
            on_leased=self._close_pool,
        )
        await self._hold(hold, attempt, inputs)

    async def _when_connected(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """``action``, tried again once RabbitMQ is back if it is away. A reconnecting broker
        delivers before it takes publishes, and a job given back for want of a broker runs
        again (another attempt), so waiting a little is better than giving up at once."""
        for _ in range(BROKER_TRIES - 1):
            try:
                return await action()
            except BrokerUnavailable as exc:
                log.warning("sheep %s: waiting for RabbitMQ to %s: %s", self.sheep_id, what, exc)
                async with asyncio.timeout(MAX_RETRY_DELAY):
                    await self._broker.wait_connected()
        return await action()

    async def _ended(self, job_id: str) -> bool:
        """Whether the job's status is terminal. A job may be queued twice (its gateway died
        between queueing it and saying so, and queued it again); it must not run twice."""
        try:
            status = JobStatus.model_validate_json(
                await self._storage.get_bytes(status_key(job_id))
            )
        except ObjectMissing:
            return False
        except ValidationError as exc:
            log.warning("sheep %s: unreadable status of %s: %s", self.sheep_id, job_id, exc)
            return False
        return status.state.terminal

    def _ending(self, attempt: _Attempt, stored: set[str]) -> StatusReport | None:
        """The terminal report of a job that must not run (again); None if it may run.
        ``stored``: the keys under the job's prefix."""
        limit = self._config.broker.delivery_limit
        if attempt.number > limit:
            error = ErrorInfo(type="GaveUp", message=f"gave up after {limit} deliveries")
            return attempt.report(JobState.FAILED, error=error)
        if self._cancellations.requested(attempt.job_id, stored):
            error = ErrorInfo(type="Cancelled", message="cancelled before it started")
            return attempt.report(JobState.CANCELLED, error=error)
        return None

    async def _hold(self, hold: Hold, attempt: _Attempt, inputs: list[StoredObject]) -> None:
        """Run a held job; release it once its outcome is out, else give it back."""
        job_id = attempt.job_id
        self._set_current_job(job_id)
        hold.start()
        done = False
        try:
            report = await self._execute(attempt, inputs)
            await self._when_connected("report an outcome", partial(self._publish, report))
            done = True
            why = f" ({report.error.type}: {report.error.message})" if report.error else ""
            log.info("sheep %s: job %s %s%s", self.sheep_id, job_id, report.state, why)
        except asyncio.CancelledError:
            log.warning("sheep %s: job %s interrupted; requeueing it", self.sheep_id, job_id)
            raise
        except Exception:
            log.exception(
                "sheep %s: job %s could not be completed; requeueing it", self.sheep_id, job_id
            )
            await self._wait_for_storage()
            await self._broker.wait_connected()  # to give the job back at once
        finally:
            self._set_current_job(None)
            try:
                await (hold.release() if done else hold.give_back())
            except Exception as exc:  # a lost channel or an expiring copy requeues the job
                log.warning("sheep %s: settling job %s: %s", self.sheep_id, job_id, exc)
            await asyncio.to_thread(shutil.rmtree, attempt.directory, ignore_errors=True)

    async def _execute(self, attempt: _Attempt, stored_inputs: list[StoredObject]) -> StatusReport:
        """Fetch inputs, run, upload outputs and logs; the terminal report to publish."""
        job_id = attempt.job_id
        inputs, outputs, logs = (attempt.directory / d for d in ("inputs", "outputs", "logs"))
        await asyncio.to_thread(_fresh_directories, attempt.directory, inputs, outputs, logs)
        payload = attempt.dispatch.payload
        if payload is not None:  # it came with the job: no need to fetch it
            payload_key = inputs_prefix(job_id) + PAYLOAD_INPUT
            stored_inputs = [o for o in stored_inputs if o.key != payload_key]
            await asyncio.to_thread((inputs / PAYLOAD_INPUT).write_text, payload, "utf-8")
        await asyncio.gather(
            self._publish(attempt.report(JobState.RUNNING)),
            self._storage.download(stored_inputs, inputs_prefix(job_id), inputs),
        )
        log_marks = [_size(path) for path in self.backend.log_files]
        try:
            error = await self._run(attempt, inputs, outputs)
        except JobCancelled:
            await self._upload_logs(attempt, log_marks)
            error = ErrorInfo(type="Cancelled", message=f"cancelled on sheep {self.sheep_id}")
            return attempt.report(JobState.CANCELLED, error=error)
        await asyncio.gather(
            self._storage.upload_tree(outputs, outputs_prefix(job_id)),
            self._upload_logs(attempt, log_marks),
        )
        if error is None:
            return attempt.report(JobState.DONE)
        return attempt.report(JobState.FAILED, error=error)

    async def _upload_logs(self, attempt: _Attempt, log_marks: list[int]) -> None:
        """Store what the runner printed since the job started (a stream it printed nothing
        to is not stored)."""
        logs = attempt.directory / "logs"
        for source, start, name in zip(
            self.backend.log_files, log_marks, ("stdout.txt", "stderr.txt"), strict=True
        ):
            await asyncio.to_thread(_copy_tail, source, start, logs / name)
        await self._storage.upload_tree(logs, logs_prefix(attempt.job_id))

    async def _run(self, attempt: _Attempt, inputs: Path, outputs: Path) -> ErrorInfo | None:
        """Run the job on a runner holding its model; the error if it failed.

        A runner that died, hung or overran the job's timeout is stopped, so the next job
        gets a fresh one.
        """
        dispatch = attempt.dispatch
        model = dispatch.job.model
        timeout = dispatch.timeout or self._config.model_defaults(model.name, model.version).timeout
        request = Run(job_id=attempt.job_id, inputs_dir=str(inputs), outputs_dir=str(outputs))
        try:
            with self._cancellations.watch(attempt.job_id) as cancelled:
                client = await _unless(cancelled, self._runner_for(model))
                try:
                    async with asyncio.timeout(timeout):
                        verdict = await _unless(
                            cancelled, client.run(request, self._progress_forwarder(attempt))
                        )
                except TimeoutError:
                    raise RunnerLost.of("Timeout", f"timed out after {timeout:g} s") from None
        except JobCancelled:
            log.info("sheep %s: job %s cancelled; stopping it", self.sheep_id, request.job_id)
            await self._discard_runner(grace=CANCEL_GRACE)
            raise
        except ModelNotFound as exc:
            return ErrorInfo(type="ModelNotFound", message=str(exc))
        except RunnerLost as exc:
            log.warning("sheep %s: %s", self.sheep_id, exc)
            await self._discard_runner()
            if exc.error.type != "RunnerExited":
                return exc.error
            last_words = await asyncio.to_thread(_tail, self.backend.log_files[1])
            return exc.error.model_copy(
                update={"message": f"{exc.error.message}; its last output:\n{last_words}"}
            )
        except BaseException:
            await self._discard_runner()
            raise
        if isinstance(verdict, Failed):
            return verdict.error
        log.info(
            "sheep %s: job %s took %.2f s wall, %.2f s CPU, %d bytes max RSS",
            self.sheep_id,
            request.job_id,
            verdict.accounting.wall_seconds,
            verdict.accounting.cpu_seconds,
            verdict.accounting.max_rss_bytes,
        )
        return None

    def _progress_forwarder(self, attempt: _Attempt) -> ProgressCallback:
        """A progress callback publishing at most one report per ``PROGRESS_INTERVAL``."""
        loop = asyncio.get_running_loop()
        last = -PROGRESS_INTERVAL

        async def forward(update: ProgressUpdate) -> None:
            nonlocal last
            if loop.time() - last < PROGRESS_INTERVAL and update.fraction < 1.0:
                return
            last = loop.time()
            progress = Progress(fraction=update.fraction, message=update.message)
            try:
                await self._publish(attempt.report(progress=progress))
            except Exception as exc:  # progress is a courtesy: never fail a job over it
                log.warning(
                    "sheep %s: progress of job %s lost: %s", self.sheep_id, attempt.job_id, exc
                )

        return forward

    async def _publish(self, report: StatusReport) -> None:
        await self._broker.publish(self._names.events_exchange, report.routing_key, report)

    async def _wait_for_storage(self) -> None:
        """Hold a job that failed for want of the store until the store answers, so that an
        outage does not use up the job's bounded deliveries in a tight loop."""
        delay = self._config.broker.reconnect_interval
        while True:
            try:
                await self._storage.ping()
                return
            except Exception as exc:
                log.warning("sheep %s: storage unreachable (%s); retrying", self.sheep_id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    # -- runner -------------------------------------------------------------------------------

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
        exited.add_done_callback(lambda _: self._changed.set())
        self._changed.set()
        self._client, ready = await RunnerClient.connect(
            self._zmq,
            self.backend.address,
            exited,
            sheep_id=self.sheep_id,
            heartbeat_timeout=self._sheep_config.heartbeat_timeout,
            load_timeout=self._sheep_config.load_timeout,
        )
        log.info(
            "sheep %s: runner (pid %d) loaded %s in %.2f s",
            self.sheep_id,
            ready.pid,
            ready.model,
            ready.load_seconds,
        )
        self._changed.set()
        return self._client

    async def _discard_runner(self, grace: float | None = None) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        await self.backend.stop(grace)
        self._changed.set()

    # -- announcements ------------------------------------------------------------------------

    def _set_current_job(self, job_id: str | None) -> None:
        self._current_job = job_id
        self._changed.set()

    def state(self) -> SheepState:
        model = self.backend.model
        return SheepState(
            sheep_id=self.sheep_id,
            kind=self._sheep_config.type,
            model=model,
            runner_alive=model is not None,
            current_job=self._current_job,
            interval=self._state_interval,
        )

    async def _announce(self) -> None:
        """Publish :class:`SheepState` on a change (at most every ``ANNOUNCE_GAP`` s), and at
        least every interval."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._state_interval)
            self._changed.clear()
            state = self.state()
            try:
                await self._broker.publish(
                    self._names.events_exchange, state.routing_key, state, mandatory=False
                )
            except Exception as exc:
                log.warning("sheep %s: cannot announce its state: %s", self.sheep_id, exc)
            await asyncio.sleep(ANNOUNCE_GAP)  # changes meanwhile go out together, next


def _maybe_repeated(message: AbstractIncomingMessage, attempt: _Attempt) -> bool:
    """Whether this delivery may repeat a job that has ended meanwhile: redelivered, a later
    attempt, or published again by a gateway recovering its pending jobs. Only those are
    checked against the job's status; a first delivery cannot have ended."""
    headers = message.headers or {}
    return message.redelivered or attempt.number > 1 or bool(headers.get(REDISPATCHED))


async def _false() -> bool:
    return False


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


async def _briefly(what: str, action: Awaitable[object]) -> None:
    """A clean-up step with the broker, given ``BROKER_STEP_TIMEOUT`` seconds: RabbitMQ may
    be unreachable, and whatever a dead channel held goes back to its queue anyway."""
    try:
        async with asyncio.timeout(BROKER_STEP_TIMEOUT):
            await action
    except Exception as exc:
        log.warning("%s failed: %s", what, exc or type(exc).__name__)


async def _settle(message: AbstractIncomingMessage, settlement: Settlement) -> None:
    """Ack, requeue or dead-letter a delivery. Failing to do so is only logged: the channel
    died meanwhile and RabbitMQ has already put the message back in its queue."""
    try:
        if settlement == "ack":
            await message.ack()
        else:
            await message.nack(requeue=settlement == "requeue")
    except Exception as exc:
        log.warning("cannot %s delivery %s: %s", settlement, message.delivery_tag, exc)


def _fresh_directories(root: Path, *directories: Path) -> None:
    """Start from empty directories: an earlier attempt may have left files behind."""
    shutil.rmtree(root, ignore_errors=True)
    for directory in directories:
        directory.mkdir(parents=True)


def _tail(path: Path, lines: int = 20, limit: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file (read from its last ``limit`` bytes)."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(max(0, log_file.seek(0, 2) - limit))
            data = log_file.read()
    except FileNotFoundError:
        return "(none)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:]) or "(none)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _copy_tail(source: Path, start: int, target: Path) -> None:
    """Copy what was appended to ``source`` since it was ``start`` bytes long."""
    try:
        with source.open("rb") as reader, target.open("wb") as writer:
            if reader.seek(0, 2) >= start:  # smaller: rotated meanwhile, take it all
                reader.seek(start)
            else:
                reader.seek(0)
            shutil.copyfileobj(reader, writer)
    except FileNotFoundError:
        pass
    if target.exists() and target.stat().st_size == 0:
        target.unlink()
