"""Job requests published straight to AMQP: the gateway's consumer of ``<ns>.submit``.

A message there holds the ``POST /start-job`` body and is declared exactly as the HTTP request
is, through :meth:`Intake.declare`: the same limits, validation, idempotency and events. It is
acked only once its declaration is durable. What HTTP would refuse with a 4xx is dead-lettered
instead, with the reason in a header (a plain reject cannot add one, so the gateway publishes
the dead letter itself, confirmed, and then acks), counted, and announced as ``job.rejected``.
A submission naming ``reply_to`` gets the outcome there, under its ``correlation_id``.

While RabbitMQ or MinIO is away a submission cannot be declared: it is held until both answer
and then requeued, so that an outage costs it one delivery, not a tight loop of them.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from schemas.errors import field_errors
from schemas.events import CLOUDEVENTS_CONTENT_TYPE, JobRejectedEvent, JobRejection
from schemas.job import JobRequest
from schemas.names import is_job_id
from schemas.submission import (
    DEAD_LETTER_KEY,
    REJECTION_DETAIL_HEADER,
    REJECTION_HEADER,
    SubmissionReply,
)
from services.common.consumer import QueueConsumer
from services.common.json_body import BadJson, is_json_media_type, parse_json
from services.common.metrics import reject
from services.common.outages import OUTAGES, Settlement, until_store_answers
from services.common.problems import Problem
from services.gateway.intake import Declared, Intake

log = logging.getLogger(__name__)


class Refused(Exception):
    """A submission Shepherd will not declare, and why."""

    def __init__(self, rejection: JobRejection) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


class SubmissionListener:
    def __init__(self, intake: Intake, max_payload_bytes: int) -> None:
        self.intake = intake
        self.broker = intake.broker
        self.max_payload_bytes = max_payload_bytes
        self.source = f"/{self.broker.names.namespace}/gateway"
        """CloudEvents ``source`` of the ``job.rejected`` events."""
        # Stopping lets the declarations in hand finish for a while and cancels the rest:
        # each step is idempotent, and the unacked submission is delivered again.
        self._consumer = QueueConsumer(
            self.broker, self.broker.names.submit_queue, self.handle, source="submit", prefetch=16
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def handle(self, message: AbstractIncomingMessage) -> Settlement:
        try:
            try:
                reply = await self._declare(message)
            except Refused as refused:
                await self._refuse(message, refused.rejection)
                reply = SubmissionReply(
                    outcome="rejected",
                    job_id=refused.rejection.job_id,
                    rejection=refused.rejection,
                )
            await self._reply(message, reply)
        except OUTAGES as exc:
            log.warning(
                "cannot handle submission %s now (%s: %s); requeueing it once RabbitMQ and "
                "MinIO answer",
                message.message_id or message.delivery_tag,
                type(exc).__name__,
                exc,
            )
            await self._wait_for_servers()
            return "requeue"
        return "ack"

    async def _declare(self, message: AbstractIncomingMessage) -> SubmissionReply:
        """Declare the request the message holds; raises :class:`Refused` where ``POST
        /start-job`` answers 4xx (or 500), and an outage error when a server is away. Without a
        job id it gets one made from its ``message_id`` and ``user_id`` (which RabbitMQ
        checks), so that a redelivery names the same job; without a ``message_id`` too, a
        random one."""
        request = self._parse(message.body, message.content_type).identified(
            message.message_id or None, message.user_id or ""
        )
        try:
            declaration = await self.intake.declare(request, "amqp")
        except Problem as problem:
            raise Refused(_from_problem(request.job_id, problem)) from problem
        except OUTAGES:
            raise
        except Exception as exc:
            log.exception("declaring submitted job %s failed", request.job_id)
            raise Refused(
                JobRejection(
                    job_id=request.job_id,
                    reason="error",
                    detail="internal error of the gateway; see its log",
                )
            ) from exc
        log.debug("declared job %s submitted over AMQP", request.job_id)
        return SubmissionReply(
            outcome="accepted" if declaration.outcome is Declared.NEW else "repeated",
            job_id=request.job_id,
            queued=declaration.queued,
            notes=declaration.notes,
        )

    def _parse(self, body: bytes, content_type: str | None) -> JobRequest:
        """The request, checked as ``POST /start-job`` checks its body (a submission without a
        content type is taken for JSON: AMQP clients often set none)."""
        if len(body) > self.max_payload_bytes:
            raise Refused(
                JobRejection(
                    job_id=None,
                    reason="too-large",
                    detail=f"submission of {len(body)} bytes exceeds the limit of "
                    f"{self.max_payload_bytes}",
                )
            )
        if content_type and not is_json_media_type(content_type):
            raise Refused(
                JobRejection(
                    job_id=None,
                    reason="unsupported-media-type",
                    detail=f"expected content type application/json, got {content_type}",
                )
            )
        try:
            value = parse_json(body)
        except BadJson as exc:
            rejection = JobRejection(job_id=None, reason="not-json", detail=f"submission {exc}")
            raise Refused(rejection) from None
        try:
            return JobRequest.model_validate(value)
        except ValidationError as exc:
            errors = field_errors(exc)
            raise Refused(
                JobRejection(
                    job_id=_job_id_of(value),
                    reason="invalid",
                    detail="invalid job request: "
                    + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                    errors=errors,
                )
            ) from None

    async def _refuse(self, message: AbstractIncomingMessage, rejection: JobRejection) -> None:
        """Dead-letter the submission with the reason in its headers, then announce it."""
        names = self.broker.names
        await self.broker.publish(
            names.dead_letter_exchange,
            DEAD_LETTER_KEY,
            message.body,
            content_type=message.content_type,
            headers={
                **message.headers,
                REJECTION_HEADER: rejection.reason,
                REJECTION_DETAIL_HEADER: rejection.detail,
            },
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        )
        event = JobRejectedEvent(source=self.source, subject=rejection.job_id, data=rejection)
        await self.broker.publish(
            names.events_exchange,
            event.routing_key,
            event,
            content_type=CLOUDEVENTS_CONTENT_TYPE,
            message_id=event.id,
            mandatory=False,  # an announcement: nobody need be listening
        )
        reject("submit", rejection.reason)
        log.warning(
            "rejected submission %s (%s): %s",
            message.message_id or message.delivery_tag,
            rejection.reason,
            rejection.detail,
        )

    async def _reply(self, message: AbstractIncomingMessage, reply: SubmissionReply) -> None:
        """Answer on ``reply_to``, if named. Never into Shepherd's own queues, which a reply
        would only pollute; and unconfirmed routing is fine: the client may have gone."""
        reply_to = message.reply_to
        if not reply_to:
            return
        if reply_to.startswith(f"{self.broker.names.namespace}."):
            log.warning("not replying to %s: a queue of Shepherd's own", reply_to)
            return
        await self.broker.publish(
            "",
            reply_to,
            reply,
            correlation_id=message.correlation_id,
            mandatory=False,
        )

    async def _wait_for_servers(self) -> None:
        """Until RabbitMQ is connected and MinIO answers."""
        await self.broker.wait_connected()
        await until_store_answers(self.intake.storage, "AMQP submissions")


def _from_problem(job_id: str, problem: Problem) -> JobRejection:
    """The rejection for what ``POST /start-job`` answers with ``problem``."""
    return JobRejection(
        job_id=job_id,
        reason="conflict" if problem.status == 409 else "invalid",
        detail=problem.detail,
        errors=problem.extra.get("errors", []),
    )


def _job_id_of(value: object) -> str | None:
    """The job id a refused request names, if it names a valid one."""
    job_id = value.get("job_id") if isinstance(value, dict) else None
    return job_id if isinstance(job_id, str) and is_job_id(job_id) else None
