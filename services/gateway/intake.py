"""Declaring jobs and queueing them exactly once.

A job that declares no ``inputs`` runs with what it has: its declaration writes job.json
(with a small payload inside) and queues it at once, one write and one message. The client's
answer waits for RabbitMQ's confirm; a client that got no answer repeats the declaration,
which queues the job again (see :meth:`Intake._queue_at_once`).

A job that declares inputs is queued when they are all in the store. Two paths can notice
that first: the declaration itself (``POST /start-job``, an AMQP submission) and the upload
of the last input (through the gateway, or the store's notification). Both call
:meth:`Intake.try_dispatch`; whichever creates ``<job_id>/dispatch.json`` (an S3 conditional
write, ``If-None-Match: *``) publishes the job, the other finds the claim taken and does
nothing. So such a job is queued once, whoever wins.

Such a job is also listed under ``_shepherd/pending/`` until RabbitMQ has confirmed its
dispatch: MinIO drops its notifications while RabbitMQ is unreachable, and a gateway may die
between claiming a job and publishing it. :meth:`Intake.reconcile` goes through that list
when the gateway starts and whenever its broker connection comes back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from pydantic import ValidationError

from schemas.broker_names import NEW_JOB, REDISPATCHED
from schemas.config import Config
from schemas.errors import format_validation_error
from schemas.events import StatusReport
from schemas.job import PAYLOAD_INPUT, JobDispatch, JobRequest, JobSpec
from schemas.layout import (
    PENDING_PREFIX,
    dispatch_key,
    inputs_prefix,
    job_key,
    pending_job,
    pending_key,
    status_key,
)
from services.common.broker import Broker, BrokerUnavailable
from services.common.job_metrics import QUEUED, SUBMITTED, Trigger, Way
from services.common.metrics import child
from services.common.problems import Problem
from services.common.recent import RecentlyUsed
from services.common.ssrf_guard import check_callback
from services.common.storage import ObjectMissing, Storage, UnreadableRecord

log = logging.getLogger(__name__)


class Declared(Enum):
    NEW = "new"
    REPEATED = "repeated"


@dataclass(frozen=True)
class Declaration:
    outcome: Declared
    spec: JobSpec
    queued: bool
    notes: list[str] = field(default_factory=list)
    """What the submitter should know of a declaration that succeeded (a callback host
    that does not resolve now)."""


SPEC_CACHE_SIZE = 10_000
"""Job specs kept in memory: job.json is written once, so a spec seen is a spec for good."""


class Intake:
    def __init__(
        self,
        config: Config,
        broker: Broker,
        storage: Storage,
        queued_elsewhere: Callable[[str], bool] = lambda job_id: False,
    ) -> None:
        """``queued_elsewhere``: whether the job events show a job queued (by any gateway)."""
        self.config = config
        self.broker = broker
        self.storage = storage
        self._specs: RecentlyUsed[JobSpec] = RecentlyUsed(SPEC_CACHE_SIZE)
        self._queued: RecentlyUsed[bool] = RecentlyUsed(SPEC_CACHE_SIZE)
        """Jobs this gateway has queued: a repeated declaration, or the store's notification
        of an input this gateway stored itself, leaves them be."""
        self._queued_elsewhere = queued_elsewhere
        self._carried_bytes = config.gateway.dispatch_payload_bytes

    async def declare(self, request: JobRequest, way: Way) -> Declaration:
        """Store the job, its payload, report it accepted, and queue it if it can run.

        Raises :class:`Problem` for an unknown sheep or a refused ``callback_url`` (422; see
        ``services.common.ssrf_guard``) or a conflicting repeat (409), and
        :class:`BrokerUnavailable` at once while RabbitMQ is unreachable, before anything is
        stored. Every step is idempotent, so a client retrying after a failure completes the
        job.
        """
        _configured("sheep_id", request.sheep_id, self.config.sheep, "sheep", "sheep")
        _configured(
            "sheep_class", request.sheep_class, self.config.sheep_classes, "sheep class", "classes"
        )
        notes: list[str] = []
        if request.callback_url is not None:
            callback = await check_callback(request.callback_url, self.config.notifier)
            if callback.refused:
                raise Problem(
                    422,
                    f"callback_url refused: {callback.refused}",
                    errors=[{"field": "callback_url", "message": callback.refused}],
                )
            if callback.note:
                notes.append(callback.note)
        if not self.broker.connected:
            raise BrokerUnavailable(self.broker.outage)
        spec = JobSpec.from_request(request, datetime.now(UTC), self._carried_bytes)
        created = await self.storage.create_bytes(
            job_key(spec.job_id), spec.model_dump_json().encode(), "application/json"
        )
        if created:
            self._specs.put(spec.job_id, spec)
            self._queued.put(spec.job_id, False)  # an earlier job of that id was removed
        else:
            spec = await self._existing(spec)
        outcome = Declared.NEW if created else Declared.REPEATED
        if created:
            child(SUBMITTED, way).inc()
        if spec.inputs is None:
            return Declaration(outcome, spec, await self._queue_at_once(spec, created), notes)
        payload = request.payload_bytes()
        await self._report_accepted(spec, new_job=created)
        if created:  # a job.json just created has no dispatch claim yet
            await self._store_inputs(payload, spec)
        else:
            await self._store_unless_claimed(payload, spec)
        stored = [PAYLOAD_INPUT] if payload is not None else []
        queued = await self.try_dispatch(
            spec.job_id, spec, declaring=True, stored=stored, trigger="declaration"
        )
        return Declaration(outcome, spec, queued, notes)

    async def _queue_at_once(self, spec: JobSpec, created: bool) -> bool:
        """Queue a job that declares no inputs: it runs with what it has (its payload, or
        what is in the store), so nothing but its declaration queues it, and no claim is
        needed. True if queued by this call.

        The client's answer waits for RabbitMQ's confirm, so a declaration that was answered
        is queued; one that was not (the gateway died in between) is repeated by its client,
        and a repeat queues the job again unless it was queued (by this gateway, or as the
        job events show) or has ended. A job queued twice runs once unless both copies are
        taken before either ends (a sheep checks redispatched copies against the job's
        status).
        """
        if not created:
            await self._report_accepted(spec)
            if (
                self._queued.get(spec.job_id)
                or self._queued_elsewhere(spec.job_id)
                or await self._ended(spec.job_id)
            ):
                return False
        await self._publish(spec, datetime.now(UTC), redispatched=not created, new_job=created)
        self._queued.put(spec.job_id, True)
        child(QUEUED, "declaration").inc()
        return True

    async def _store_unless_claimed(self, payload: bytes | None, spec: JobSpec) -> None:
        if not await self._claimed(spec.job_id):
            await self._store_inputs(payload, spec)

    async def _store_inputs(self, payload: bytes | None, spec: JobSpec) -> None:
        """The payload, then the job's entry in the pending list: listed once complete, the
        job is from here on the gateway's to queue, even if this gateway dies before it can
        (see reconcile). Never the other way round, or a reconciliation running meanwhile
        could queue a job whose payload is not stored yet."""
        if payload is not None:
            await self.storage.put_bytes(
                f"{inputs_prefix(spec.job_id)}{PAYLOAD_INPUT}", payload, "application/json"
            )
        await self.storage.put_bytes(pending_key(spec.job_id), b"", "text/plain")

    async def _existing(self, spec: JobSpec) -> JobSpec:
        stored = await self.load_spec(spec.job_id)
        if stored is None:  # removed in between; the client may simply retry
            raise Problem(409, f"job {spec.job_id} is being removed; retry later")
        if stored.request_digest != spec.request_digest:
            raise Problem(
                409,
                f"job {spec.job_id} already exists with a different request",
                title="Job exists",
            )
        return stored

    async def load_spec(self, job_id: str) -> JobSpec | None:
        if (known := self._specs.get(job_id)) is not None:
            return known
        try:
            raw = await self.storage.get_bytes(job_key(job_id))
        except ObjectMissing:
            return None
        try:
            spec = JobSpec.model_validate_json(raw)
        except ValidationError as exc:
            unreadable = UnreadableRecord(job_key(job_id), format_validation_error(exc))
            log.error("%s", unreadable)
            raise unreadable from None
        self._specs.put(job_id, spec)
        return spec

    async def queued(self, job_id: str) -> bool:
        """Whether the job has been queued (its inputs are then fixed): one without declared
        inputs as it was declared, one with them once claimed. An undeclared job has not:
        its inputs may come before its declaration."""
        if self._queued.get(job_id):
            return True
        spec = await self.load_spec(job_id)
        if spec is None:
            return False
        return spec.inputs is None or await self._claimed(job_id)

    async def try_dispatch(
        self,
        job_id: str,
        spec: JobSpec | None = None,
        *,
        declaring: bool = False,
        stored: Collection[str] = (),
        trigger: Trigger = "upload",
    ) -> bool:
        """Queue the job if it is declared, complete and not yet claimed; True if queued now.

        A job that declares no ``inputs`` runs with whatever its declaration found, so only
        the declaring call may queue it; the upload path waits for declared inputs only.
        ``stored``: inputs the caller has just stored; the store is asked for the others.
        A job this gateway has queued is left be without asking the store at all.
        """
        if self._queued.get(job_id):
            return False
        try:
            spec = spec or await self.load_spec(job_id)
        except UnreadableRecord:  # logged; nothing a retry would change
            return False
        if spec is None or (spec.inputs is None and not declaring):
            return False
        if spec.inputs is not None and not set(spec.inputs) <= set(stored):
            present = {
                o.key.removeprefix(inputs_prefix(job_id))
                for o in await self.storage.list(inputs_prefix(job_id))
            }
            if not set(spec.inputs) <= present:
                return False
        queued_at = datetime.now(UTC)
        claim = json.dumps({"queued_at": queued_at.isoformat()}).encode()
        if not await self.storage.create_bytes(dispatch_key(job_id), claim, "application/json"):
            return False
        try:
            await self._publish(spec, queued_at)
        except Exception:
            # Release the claim so that a retry (client or redelivered event) can queue it.
            await self.storage.remove(dispatch_key(job_id))
            raise
        self._queued.put(job_id, True)
        child(QUEUED, trigger).inc()
        await self.storage.remove(pending_key(job_id))
        return True

    async def _publish(
        self,
        spec: JobSpec,
        queued_at: datetime,
        *,
        redispatched: bool = False,
        new_job: bool = False,
    ) -> None:
        # One message: RabbitMQ routes it to the sheep's queue and, as the job's "queued"
        # report, to the notifier's (see schemas.topology).
        headers = {REDISPATCHED: True} if redispatched else {NEW_JOB: True} if new_job else None
        names = self.broker.names
        defaults = self.config.model_defaults(spec.model.name, spec.model.version)
        priority = spec.priority or defaults.priority
        await self.broker.publish(
            names.jobs_exchange,
            names.job_routing_key(spec.sheep_id, priority, sheep_class=spec.sheep_class),
            JobDispatch(
                job=spec,
                queued_at=queued_at,
                timeout=spec.timeout or defaults.timeout,
                priority=priority,
            ),
            message_id=spec.job_id,
            headers=headers,
        )

    async def reconcile(self) -> int:
        """Queue every job of the pending index that can run; how many.

        The index lists every declared job until its dispatch is confirmed by RabbitMQ. A job
        still listed but claimed was claimed by a gateway that died before it could publish
        (or, rarely, by one publishing right now): it is published again, as a duplicate
        delivery is harmless (a sheep drops a job that has ended; the first outcome stays)
        and a lost one is not.
        """
        queued = 0
        for marker in await self.storage.list(PENDING_PREFIX):
            job_id = pending_job(marker.key)
            try:
                spec = await self.load_spec(job_id) if job_id else None
            except UnreadableRecord:  # logged; the marker stays for whoever repairs it
                continue
            if spec is None:
                await self.storage.remove(marker.key)
                continue
            if self._queued.get(job_id):  # queued by this gateway, which lost the marker
                await self.storage.remove(marker.key)
                continue
            if await self._claimed(job_id):
                await self._publish(spec, datetime.now(UTC), redispatched=True)
                await self.storage.remove(marker.key)
                queued += 1
                continue
            queued += await self.try_dispatch(
                job_id, spec, declaring=spec.inputs is None, trigger="recovery"
            )
        if queued:
            log.info("queued %d waiting job(s) whose inputs had all arrived", queued)
        return queued

    async def _ended(self, job_id: str) -> bool:
        """Whether the job has a status: written once it has ended."""
        try:
            await self.storage.stat(status_key(job_id))
        except ObjectMissing:
            return False
        return True

    async def _claimed(self, job_id: str) -> bool:
        try:
            await self.storage.stat(dispatch_key(job_id))
        except ObjectMissing:
            return False
        return True

    async def _report_accepted(self, spec: JobSpec, *, new_job: bool = False) -> None:
        report = StatusReport.accepted(spec, new_job=new_job)
        await self.broker.publish(self.broker.names.events_exchange, report.routing_key, report)


def _configured(
    field: str, value: str | None, configured: Collection[str], what: str, listed: str
) -> None:
    """A 422 naming ``field`` if it names a ``what`` the configuration does not."""
    if value is not None and value not in configured:
        raise Problem(
            422,
            f"unknown {field} {value!r}; configured {listed}: "
            f"{', '.join(sorted(configured)) or 'none'}",
            errors=[{"field": field, "message": f"unknown {what}"}],
        )
