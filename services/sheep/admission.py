"""Whether a delivered job may run on this sheep: it has not ended already, it has attempts
left, and it was not cancelled before it started; and whether a job whose runner died under
it runs again.

    admission = Admission("gpu0", config, storage, cancellations, publish, wait_for_servers)
    attempt = admission.attempt(dispatch, message)
    stored = await admission.admit(message, attempt)     # None: settled instead of run
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from schemas.broker_names import REDISPATCHED
from schemas.config import Config
from schemas.events import StatusReport
from schemas.job import JobDispatch
from schemas.layout import job_prefix, status_key
from schemas.status import ErrorInfo, JobState, JobStatus
from services.common.outages import settle
from services.common.storage import ObjectMissing, Storage, StoredObject
from services.sheep.cancellations import Cancellations
from services.sheep.lease import attempt_number
from services.sheep.runner_client import RUNNER_EXITED


@dataclass(frozen=True)
class Attempt:
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


log = logging.getLogger(__name__)


class Admission:
    def __init__(
        self,
        sheep_id: str,
        config: Config,
        storage: Storage,
        cancellations: Cancellations,
        publish: Callable[[StatusReport], Awaitable[None]],
        wait_for_servers: Callable[[], Awaitable[None]],
    ) -> None:
        self._sheep_id = sheep_id
        self._config = config
        self._jobs_root = (config.data_root / sheep_id).absolute()
        self._delivery_limit = config.broker.delivery_limit
        self._storage = storage
        self._cancellations = cancellations
        self._publish = publish
        self._wait_for_servers = wait_for_servers

    def attempt(self, dispatch: JobDispatch, message: AbstractIncomingMessage) -> Attempt:
        """The attempt a delivered job stands for."""
        # A directory of its own: a redelivery of the job may be prepared while it runs.
        directory = self._jobs_root / f"{dispatch.job.job_id}.{uuid.uuid4().hex[:8]}"
        return Attempt(dispatch, attempt_number(message), self._sheep_id, directory)

    async def admit(
        self, message: AbstractIncomingMessage, attempt: Attempt
    ) -> list[StoredObject] | None:
        """The job's stored objects if it may run; None if it was settled instead: a repeat
        of an ended job, out of attempts, cancelled before it started, or not checkable
        (requeued once the servers answer)."""
        job_id = attempt.job_id
        try:
            if _maybe_repeated(message, attempt):
                ended, stored = await asyncio.gather(
                    self._ended(job_id), self._storage.list(job_prefix(job_id))
                )
            elif self._knows_enough(attempt):
                ended, stored = False, []
            else:  # a first delivery cannot have ended: one request, the listing
                ended, stored = False, await self._storage.list(job_prefix(job_id))
            if ended:  # a duplicate delivery of a job that is over
                log.info("sheep %s: job %s has ended already; dropping it", self._sheep_id, job_id)
                await settle(message, "ack")
                return None
            ending = self.ending(attempt, {o.key for o in stored})
            if ending is not None:
                await self._publish(ending)
                await settle(message, "ack")
                log.info("sheep %s: job %s %s", self._sheep_id, job_id, ending.state)
                return None
        except Exception:
            log.exception("sheep %s: cannot take job %s; requeueing it", self._sheep_id, job_id)
            # Every requeue counts as a delivery: not in a tight loop while a server is away.
            await self._wait_for_servers()
            await settle(message, "requeue")
            return None
        return stored

    def _knows_enough(self, attempt: Attempt) -> bool:
        """Whether a first delivery needs nothing from the store: the job carries its only
        input, and this sheep has heard every cancellation since the job was declared (its
        marker would say nothing more)."""
        spec = attempt.dispatch.job
        return spec.payload is not None and self._cancellations.heard_all_since(spec.declared_at)

    def ending(self, attempt: Attempt, stored: Collection[str]) -> StatusReport | None:
        """The terminal report of a job that must not run (again); None if it may run.
        ``stored``: the keys under the job's prefix."""
        limit = self._delivery_limit
        if attempt.number > limit:
            error = ErrorInfo(type="GaveUp", message=f"gave up after {limit} deliveries")
            return attempt.report(JobState.FAILED, error=error)
        if self._cancellations.requested(attempt.job_id, stored):
            error = ErrorInfo(type="Cancelled", message="cancelled before it started")
            return attempt.report(JobState.CANCELLED, error=error)
        return None

    def runs_again(self, attempt: Attempt, error: ErrorInfo | None) -> bool:
        """Whether a job whose runner died under it gets another attempt (the model's
        ``max_attempts``): that is not the job's fault, as a timeout or an exception in its
        code would be."""
        if error is None or error.type != RUNNER_EXITED:
            return False
        model = attempt.dispatch.job.model
        limit = self._config.model_defaults(model.name, model.version).max_attempts
        if attempt.number >= limit:
            return False
        log.warning(
            "sheep %s: the runner died under job %s (attempt %d of %d); it runs again: %s",
            self._sheep_id,
            attempt.job_id,
            attempt.number,
            limit,
            error.message.splitlines()[0],
        )
        return True

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
            log.warning("sheep %s: unreadable status of %s: %s", self._sheep_id, job_id, exc)
            return False
        return status.state.terminal


def _maybe_repeated(message: AbstractIncomingMessage, attempt: Attempt) -> bool:
    """Whether this delivery may repeat a job that has ended meanwhile: redelivered, a later
    attempt, or published again by a gateway recovering its pending jobs. Only those are
    checked against the job's status; a first delivery cannot have ended."""
    headers = message.headers or {}
    return message.redelivered or attempt.number > 1 or bool(headers.get(REDISPATCHED))
