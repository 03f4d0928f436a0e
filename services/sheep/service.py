"""A sheep: takes jobs from its own queue (and the pool while idle), runs them one at a time on
its runner, uploads what they wrote, reports the outcome, and only then lets go of the job.

    sheep = Sheep("gpu0", config, broker, storage)      # or Membership.joining(config, "a100")
    await sheep.start()
    ...
    await sheep.stop()

Why the job is let go last: a sheep (or its machine) may die at any moment. Until its outcome
is published, the job is held (``services.sheep.lease``: by its unacknowledged delivery, by a
lease once it runs long) so that it goes back to its queue if the sheep dies: a job is never
lost, and its outcome is visible once. Every delivery counts as an attempt; a job out of
attempts is failed, not run again.

The parts: where jobs come from (``deliveries``), the runner (``driver``), a job's logs
(``job_logs``), the fleet's view of the sheep (``announcer``); this module is one job's way
through them: admit, hold, execute (prepare, run, store), report, let go.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from schemas.config import BareSheepConfig, Config
from schemas.events import SheepState, StatusReport
from schemas.job import PRIORITIES
from schemas.layout import outputs_prefix
from schemas.status import ErrorInfo, JobState
from services.common.broker import Broker, BrokerUnavailable
from services.common.consumer import briefly
from services.common.job_metrics import JOBS_IN_FLIGHT, on_runner, stage
from services.common.metrics import child
from services.common.outages import until_store_answers
from services.common.storage import Storage
from services.sheep.admission import Admission
from services.sheep.announcer import Announcer
from services.sheep.backend import RunnerBackend
from services.sheep.bare import BareBackend
from services.sheep.cancellations import Cancellations
from services.sheep.containers import DockerBackend
from services.sheep.deliveries import Deliveries, Delivery
from services.sheep.driver import JobCancelled, Ran, RunnerDriver
from services.sheep.gpus import SheepGpus, job_gpus
from services.sheep.held_job import HeldJob
from services.sheep.inputs import prepare
from services.sheep.job_logs import job_span, log_marks, store_logs
from services.sheep.lease import Hold, Leases
from services.sheep.live_logs import LiveLogs
from services.sheep.membership import Membership
from services.sheep.running import RunningReport
from services.sheep.tally import Tally
from services.sheep.usage import measured, with_outputs

log = logging.getLogger(__name__)

BROKER_TRIES = 3
"""Tries of a publish that RabbitMQ refuses for being away, waiting for it in between."""
BROKER_WAIT = 30.0
"""Seconds each of those waits gives RabbitMQ to come back (a restart takes about this)."""


T = TypeVar("T")


class Sheep:
    """One compute slot: a consumer of its queue and the pool, and the owner of a runner."""

    def __init__(
        self,
        sheep: str | Membership,
        config: Config,
        broker: Broker,
        storage: Storage,
        *,
        state_interval: float = 5.0,
        stop_grace: float | None = None,
    ) -> None:
        """``sheep``: a named sheep's id, or the membership of a sheep of a class."""
        member = sheep if isinstance(sheep, Membership) else Membership.named(config, sheep)
        sheep_id, sheep_config = member.sheep_id, member.section
        self.sheep_id = sheep_id
        self.member = member
        self._config = config
        self._sheep_config = sheep_config
        self._broker = broker
        self._storage = storage
        self._names = broker.names
        self._state_interval = state_interval
        self._stop_grace = sheep_config.stop_grace if stop_grace is None else stop_grace
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
        self._announcer = Announcer(broker, self.state, state_interval)
        self._driver = RunnerDriver(
            sheep_id, self.backend, sheep_config, on_change=self._announcer.changed
        )
        self._deliveries = Deliveries(broker, member, config.broker.reconnect_interval)
        self._leases = Leases(
            broker, sheep_id, config.broker.lease_time, member.lease_topology(config)
        )
        self._cancellations = Cancellations(broker)
        self._admission = Admission(
            sheep_id, config, storage, self._cancellations, self._publish, self._wait_for_servers
        )
        self._current_job: str | None = None
        self._tally = Tally()
        self._worker: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._gpus: SheepGpus | None = None
        self._live_logs = LiveLogs(broker, self.backend.log_files)
        self._admitting = False
        self._running = False
        """Whether the runner has a job of this sheep's (``_work`` is in ``_run_held``)."""
        self._aside: list[HeldJob] = []
        """Jobs prepared, then passed over for one of higher priority; still held."""

    async def start(self) -> None:
        """Declare the topology, start announcing and consuming."""
        await self._broker.declare(self.member.topology(self._config))
        await self.backend.recover()
        await self._cancellations.start()
        await self._leases.open()
        await self._deliveries.start()
        self._worker = asyncio.create_task(self._work(), name=f"sheep-{self.sheep_id}-work")
        self._announcer.start()
        self._live_logs.start()
        devices = self._sheep_config.devices
        self._gpus = await asyncio.to_thread(SheepGpus.open, self.sheep_id, devices)
        if self._gpus is not None:
            self._gpus.start()

    async def stop(self) -> None:
        """Stop consuming, give the current job ``stop_grace`` seconds to finish (else it is
        queued again), stop the runner and every task. A stopped sheep cannot be started
        again."""
        await self._deliveries.stop_consuming()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_grace
        if self._worker is not None:
            self._deliveries.end()  # the worker finishes its jobs, then sees the end
            await asyncio.wait({self._worker}, timeout=self._stop_grace)
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._finishing:  # outcomes being reported: the rest of the grace, and no more
            await asyncio.wait(self._finishing, timeout=max(0.0, deadline - loop.time()))
            for task in list(self._finishing):
                task.cancel()
            await asyncio.gather(*self._finishing, return_exceptions=True)
        await self._announcer.leave()
        await self._live_logs.stop()
        if self._gpus is not None:
            await asyncio.to_thread(self._gpus.close)
            self._gpus = None
        await self._deliveries.stop()
        await self._driver.close()
        await self._cancellations.stop()
        await briefly("closing the lease channel", self._leases.close())
        log.info("sheep %s stopped", self.sheep_id)

    def state(self) -> SheepState:
        model = self.backend.model
        return SheepState(
            sheep_id=self.sheep_id,
            sheep_class=self.member.sheep_class,
            kind=self._sheep_config.type,
            model=model,
            runner_alive=model is not None,
            current_job=self._current_job,
            devices=self._sheep_config.devices,
            interval=self._state_interval,
            **self._tally.announced(),
        )

    async def _work(self) -> None:
        """Keep the runner busy: while it works on one job, the next job of the sheep's own
        queues is admitted, its inputs fetched and handed to the runner, and the previous
        job's outputs are stored and its outcome reported (``_finish``, a task of its own).
        A job of higher priority arriving meanwhile takes the place of the one handed over,
        if the runner has not started it (``_outranked``): that one waits aside, held.

        The pool is opened whenever the runner is free and nothing waits. A pool job held by
        its unacknowledged delivery keeps it open (prefetch one: nothing more comes from the
        pool meanwhile); a job of the sheep's own queue, or a pool job about to be leased,
        closes it, so that no pool job waits behind a busy sheep."""
        await self._deliveries.open_pool()
        ahead: asyncio.Task[HeldJob | None] = asyncio.create_task(self._next_job())
        try:
            while (job := await self._turn(ahead)) is not None:
                ahead = asyncio.create_task(self._next_job())
                outranked = asyncio.create_task(self._outranked(ahead))
                self._running = True
                try:
                    ran = await self._run_held(job)
                finally:
                    self._running = False
                    outranked.cancel()
                if not (ahead.done() or self._deliveries.waiting() or self._admitting):
                    await self._deliveries.open_pool()
                if ran is not None:
                    self._finish_later(job, ran)
        finally:
            ahead.cancel()
            (left,) = await asyncio.gather(ahead, return_exceptions=True)
            for prepared in [*self._aside, *([left] if isinstance(left, HeldJob) else [])]:
                await self._give_back(prepared)  # prepared, never run
            self._aside.clear()

    async def _turn(self, ahead: asyncio.Task[HeldJob | None]) -> HeldJob | None:
        """The job to run now: the one prepared ahead, unless the runner gave it back for one
        of higher priority (it then waits aside)."""
        job = await ahead
        while job is not None and job.withdrawing:
            job.withdrawing = False
            if job.job_id in self._driver.held and not await self._driver.withdrawn(job.job_id):
                return job  # the runner had started it
            self._aside.append(job)
            job = await self._next_job()
        return job

    async def _outranked(self, ahead: asyncio.Task[HeldJob | None]) -> None:
        """While a job runs: once a job of higher priority than the one handed over ahead of
        it waits, ask the runner to give that one back."""
        try:
            job = await asyncio.shield(ahead)
        except Exception:  # the loop sees it too, and says what it was
            return
        if job is None or job.priority == PRIORITIES[0]:
            return
        await self._deliveries.outranking(job.priority)
        if self._running:
            job.withdrawing = True
            await self._driver.ask_withdraw(job.job_id)

    async def _next_job(self) -> HeldJob | None:
        """The next job that may run, held, with its inputs and handed to the runner (perhaps
        one put aside before); None at the end."""
        while (delivery := await self._deliveries.next(self._aside)) is not None:
            if isinstance(delivery, HeldJob):  # prepared before, and put aside
                await self._driver.hand_over(
                    delivery.run_request(), delivery.model, delivery.cancelled
                )
                return delivery
            self._admitting = True
            try:
                if not delivery.from_pool:
                    await self._deliveries.close_pool()
                job = await self._take(delivery)
            finally:
                self._admitting = False
            if job is not None:
                await self._driver.hand_over(job.run_request(), job.model, job.cancelled)
                return job
            if not (self._running or self._deliveries.waiting()):
                # Settled instead of run (ended, cancelled) with the runner idle:
                # the pool, closed for it, may give work again.
                await self._deliveries.open_pool()
        return None

    async def _take(self, delivery: Delivery) -> HeldJob | None:
        """Admit, hold and prepare a delivered job; None if it was settled instead."""
        message = delivery.message
        attempt = self._admission.attempt(delivery.dispatch, message)
        stored = await self._admission.admit(message, attempt)
        if stored is None:
            return None
        hold = Hold(
            self._leases,
            message,
            attempt.number,
            self._config.broker.lease_after,
            before_lease=self._deliveries.close_pool,
        )
        hold.start()
        job = HeldJob(attempt, hold, self._cancellations.watch(attempt.job_id))
        child(JOBS_IN_FLIGHT, self.sheep_id).inc()
        try:
            with stage("input_fetch", job.model).time():
                job.inputs = await prepare(self._storage, attempt, stored)
        except asyncio.CancelledError:  # the sheep stops: the job goes back, its hold ends
            await asyncio.shield(self._give_back(job))
            raise
        except Exception:
            log.exception(
                "sheep %s: cannot fetch the inputs of job %s; requeueing it",
                self.sheep_id,
                attempt.job_id,
            )
            await self._give_back(job, wait=True)
            return None
        return job

    async def _run_held(self, job: HeldJob) -> StatusReport | None:
        """Run a prepared job on the runner, marking its part of the logs; the report of its
        outcome, or None if it was given back (it could not be completed, or the sheep
        stops)."""
        attempt = job.attempt
        if (ending := self._admission.ending(attempt, ())) is not None:  # cancelled while it waited
            await self._driver.take_back(job.job_id)
            return ending
        marks = log_marks(self.backend.log_files)
        self._live_logs.begin(attempt, marks)
        running = RunningReport(
            attempt.report(JobState.RUNNING, inputs=job.inputs),
            self._report_running,
            self._config.broker.report_running_after,
        )
        try:
            devices = len(self._sheep_config.devices)
            try:
                with (
                    self._tally.busy(),
                    on_runner(self.sheep_id, job.model) as timed,
                    job_gpus(self._gpus, devices) as gpus,
                ):
                    ran = await self._run(job, running)
            except JobCancelled:
                message = f"cancelled on sheep {self.sheep_id}"
                report = attempt.report(
                    JobState.CANCELLED,
                    error=ErrorInfo(type="Cancelled", message=message),
                    usage=measured(job.inputs, timed.seconds, None, gpus),
                )
                job.logs = job_span(marks, None, self.backend.log_files)
            else:
                if self._admission.runs_again(attempt, ran.error):
                    await self._give_back(job)
                    return None
                state = JobState.DONE if ran.error is None else JobState.FAILED
                usage = measured(job.inputs, timed.seconds, ran.accounting, gpus)
                report = attempt.report(state, error=ran.error, inputs=job.inputs, usage=usage)
                job.logs = job_span(marks, ran.logs, self.backend.log_files)
            await self._live_logs.end(job.logs[1])  # before its outcome can be reported
            return await running.outcome(report)
        except asyncio.CancelledError:
            log.warning("sheep %s: job %s interrupted; requeueing it", self.sheep_id, job.job_id)
            await asyncio.shield(self._give_back(job))
            raise
        except Exception:
            log.exception("sheep %s: job %s did not run; requeueing it", self.sheep_id, job.job_id)
            await self._give_back(job, wait=True)
            return None
        finally:
            running.close()
            self._live_logs.forget()
            self._set_current_job(None)

    async def _run(self, job: HeldJob, running: RunningReport) -> Ran:
        """Run the job on the runner."""
        attempt, model = job.attempt, job.model
        timeout = (
            attempt.dispatch.timeout
            or self._config.model_defaults(model.name, model.version).timeout
        )
        return await self._driver.run(
            job.run_request(), model, timeout, running.progress, job.cancelled
        )

    def _finish_later(self, job: HeldJob, report: StatusReport) -> None:
        task = asyncio.create_task(self._finish(job, report), name=f"finish-{job.job_id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, job: HeldJob, report: StatusReport) -> None:
        """Store what the job wrote, report its outcome, and only then let go of it."""
        directory = job.attempt.directory
        try:
            start, end = job.logs
            with stage("output_upload", job.model).time():
                output_bytes, _ = await asyncio.gather(
                    self._storage.upload_tree(directory / "outputs", outputs_prefix(job.job_id)),
                    store_logs(
                        self._storage,
                        self.backend.log_files,
                        start,
                        end,
                        directory / "logs",
                        job.job_id,
                    ),
                )
            report = with_outputs(report, output_bytes)
            await self._when_connected("report an outcome", partial(self._publish, report))
        except asyncio.CancelledError:  # the sheep stops before the outcome is out
            await asyncio.shield(self._give_back(job))
            raise
        except Exception:
            log.exception(
                "sheep %s: job %s could not be completed; requeueing it", self.sheep_id, job.job_id
            )
            await self._give_back(job, wait=True)
            return
        why = f" ({report.error.type}: {report.error.message})" if report.error else ""
        log.info("sheep %s: job %s %s%s", self.sheep_id, job.job_id, report.state, why)
        self._tally.ended(report.state)
        await self._let_go(job, job.hold.release())

    async def _give_back(self, job: HeldJob, *, wait: bool = False) -> None:
        """Queue the job again: at once, or (``wait``) once the servers answer, so that an
        outage does not use up its bounded deliveries in a tight loop."""
        await self._driver.take_back(job.job_id)
        if wait:
            await self._wait_for_servers()
        await self._let_go(job, job.hold.give_back())

    async def _let_go(self, job: HeldJob, settling: Awaitable[None]) -> None:
        try:
            await settling
        except Exception as exc:  # a lost channel or an expiring copy requeues the job
            log.warning("sheep %s: settling job %s: %s", self.sheep_id, job.job_id, exc)
        self._cancellations.unwatch(job.job_id)
        child(JOBS_IN_FLIGHT, self.sheep_id).dec()
        await asyncio.to_thread(shutil.rmtree, job.attempt.directory, ignore_errors=True)

    # -- the servers --------------------------------------------------------------------------

    async def _publish(self, report: StatusReport) -> None:
        await self._broker.publish(self._names.events_exchange, report.routing_key, report)

    async def _when_connected(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """``action``, tried again once RabbitMQ is back if it is away. A reconnecting broker
        delivers before it takes publishes, and a job given back for want of a broker runs
        again (another attempt), so waiting a little is better than giving up at once."""
        for _ in range(BROKER_TRIES - 1):
            try:
                return await action()
            except BrokerUnavailable as exc:
                log.warning("sheep %s: waiting for RabbitMQ to %s: %s", self.sheep_id, what, exc)
                async with asyncio.timeout(BROKER_WAIT):
                    await self._broker.wait_connected()
        return await action()

    async def _wait_for_servers(self) -> None:
        """Return once the store answers and the broker is connected."""
        first = self._config.broker.reconnect_interval
        await until_store_answers(self._storage, f"sheep {self.sheep_id}", first)
        await self._broker.wait_connected()

    def _set_current_job(self, job_id: str | None) -> None:
        if job_id != self._current_job:
            self._current_job = job_id
            self._announcer.changed()

    async def _report_running(self, report: StatusReport) -> None:
        """A job reported running (it runs a while) is announced as the sheep's current job
        too; quicker ones cost no announcement."""
        self._set_current_job(report.job_id)
        await self._publish(report)
