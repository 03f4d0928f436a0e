"""The webhook dispatcher: each job event becomes one delivery message per receiver.

It consumes ``<ns>.webhook-events`` (every ``job.#`` event, in a queue of its own, so that
neither the notifier's status pipeline nor any receiver waits on it) and publishes a
:class:`~schemas.webhooks.WebhookDelivery` to ``<ns>.webhooks``/``deliver`` for

* every enabled subscription with a pattern matching the event's routing key, and
* the job's ``callback_url`` (from ``<job_id>/job.json``) when the event is terminal:
  ``job.done``, ``job.failed`` or ``job.cancelled``.

The event is acked once every delivery is confirmed. Fanned out again after a crash, an event
gives the same webhook-ids, so receivers can tell the repeat.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from pydantic import AnyHttpUrl, ValidationError

from schemas.broker_names import DELIVER
from schemas.config import Config
from schemas.job import JobSpec
from schemas.layout import job_key
from schemas.names import is_job_id
from schemas.status import TERMINAL_STATES
from schemas.topology import webhook_events_binding
from schemas.webhooks import ATTEMPT_HEADER, CloudEvent, WebhookDelivery
from services.common.broker import Broker
from services.common.consumer import TypedConsumer
from services.common.outages import Settlement, holding
from services.common.storage import ObjectMissing, Storage
from services.notifier.webhooks.disabled import DisabledSubscriptions
from services.notifier.webhooks.patterns import matches_any
from services.notifier.webhooks.signing import webhook_id

log = logging.getLogger(__name__)

CALLBACK_EVENTS = frozenset(f"job.{state.value}" for state in TERMINAL_STATES)
"""What a job's callback_url receives."""
PREFETCH = 32


class WebhookDispatcher:
    def __init__(
        self, config: Config, broker: Broker, storage: Storage, disabled: DisabledSubscriptions
    ) -> None:
        self._broker = broker
        self._storage = storage
        self._disabled = disabled
        self._subscriptions = config.notifier.webhooks
        # Without the secret the gateway accepts no callback_url: no job.json to read.
        self._callbacks = config.notifier.callback_secret is not None
        self._consumer = TypedConsumer(
            broker,
            broker.names.webhook_events_queue,
            CloudEvent,
            self._dispatch,
            source="webhook-events",
            bad_input="dead-letter",
            bad_input_log="dead-lettering a job event",
            prefetch=PREFETCH,
        )

    async def start(self) -> None:
        """Listen to job events while there is anyone to deliver them to; otherwise make
        sure the broker stops copying them into the queue."""
        listening = bool(self._subscriptions) or self._callbacks
        await self._broker.bind(webhook_events_binding(self._broker.names), bound=listening)
        if listening:
            await self._consumer.start()
        else:
            log.info("no webhooks configured: job events are not kept for webhooks")

    async def stop(self) -> None:
        await self._consumer.stop()

    async def _dispatch(self, event: CloudEvent, message: AbstractIncomingMessage) -> Settlement:
        key = message.routing_key or ""
        deliveries = [
            self._delivery(event, s.url, s.name)
            for s in self._subscriptions
            if s.name not in self._disabled and matches_any(s.events, key)
        ]
        job_id = event.subject
        if self._callbacks and key in CALLBACK_EVENTS and job_id and is_job_id(job_id):
            url = await holding([message], "reading a callback_url", lambda: self._callback(job_id))
            if url is not None:
                deliveries.append(self._delivery(event, url, None))
        for delivery in deliveries:
            await holding(
                [message], "publishing a webhook delivery", lambda d=delivery: self._publish(d)
            )
        return "ack"

    @staticmethod
    def _delivery(event: CloudEvent, url: AnyHttpUrl, subscription: str | None) -> WebhookDelivery:
        target = subscription if subscription is not None else f"callback {url}"
        return WebhookDelivery(
            id=webhook_id(event, target), subscription=subscription, url=url, event=event
        )

    async def _callback(self, job_id: str) -> AnyHttpUrl | None:
        try:
            raw = await self._storage.get_bytes(job_key(job_id))
        except ObjectMissing:
            return None
        try:
            return JobSpec.model_validate_json(raw).callback_url
        except ValidationError as exc:
            log.error("job %s has an unreadable job.json, no callback: %s", job_id, exc)
            return None

    async def _publish(self, delivery: WebhookDelivery) -> None:
        await self._broker.publish(
            self._broker.names.webhooks_exchange,
            DELIVER,
            delivery,
            headers={ATTEMPT_HEADER: 1},
            message_id=delivery.id,
        )
