"""Delivery workers: POST each delivery, signed, and settle it by the answer.

They consume ``<ns>.webhook-deliveries``, ``notifier.webhook_concurrency`` at a time: one
slow or dead receiver holds one slot for at most ``notifier.webhook_timeout`` and never the
others, nor the notifier's status pipeline, which has queues and channels of its own.

After an attempt the delivery message is always acked, having been

* delivered (2xx);
* parked for a retry (network error, timeout, 429, 5xx): copied to the retry queue of the
  delay :class:`~.retries.Backoff` chooses, with the next attempt number in its header; the
  queue's TTL brings it back here, so a restarted notifier carries on where this one was;
* gone (410): the subscription is disabled (and recorded as such), a callback is dropped;
* given up (the schedule is spent, another 4xx, a 3xx, a refused target): copied to
  ``<ns>.dlx`` with the reason in a header, so it is kept in ``<ns>.dead``; logged and
  counted.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from pydantic import AnyHttpUrl

from schemas.broker_names import retry_routing_key
from schemas.config import Config
from schemas.webhooks import ATTEMPT_HEADER, GAVE_UP_KEY, REASON_HEADER, WebhookDelivery
from services.common.broker import Broker
from services.common.consumer import TypedConsumer
from services.common.outages import Settlement, holding
from services.common.ssrf_guard import RefusedTarget
from services.notifier.webhooks.attempts import AttemptRecords, shown_url
from services.notifier.webhooks.client import WebhookClient
from services.notifier.webhooks.disabled import DisabledSubscriptions
from services.notifier.webhooks.metrics import count
from services.notifier.webhooks.retries import Backoff, Retry, ScheduleSpent, Verdict, verdict
from services.notifier.webhooks.signing import signature_headers

log = logging.getLogger(__name__)

ATTEMPTS_GRACE = 2.0
"""Seconds the attempts in flight may take to finish on stop; the rest are cancelled and
attempted again after a restart (same webhook-id)."""


class WebhookDeliverer:
    def __init__(
        self,
        config: Config,
        broker: Broker,
        client: WebhookClient,
        disabled: DisabledSubscriptions,
        records: AttemptRecords,
    ) -> None:
        self._broker = broker
        self._records = records
        self._client = client
        self._disabled = disabled
        self._subscriptions = {s.name: s for s in config.notifier.webhooks}
        self._callback_secret = config.notifier.callback_secret
        self._backoff = Backoff(config.notifier.webhook_retry_schedule)
        self._consumer = TypedConsumer(
            broker,
            broker.names.webhook_deliveries_queue,
            WebhookDelivery,
            self._attempt,
            source="webhook-deliveries",
            bad_input="dead-letter",
            bad_input_log="dead-lettering a webhook delivery",
            prefetch=config.notifier.webhook_concurrency,
            grace=ATTEMPTS_GRACE,
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._records.close()

    async def _attempt(
        self, delivery: WebhookDelivery, message: AbstractIncomingMessage
    ) -> Settlement:
        attempt = _attempt_number(message)
        target = delivery.target
        receiver = self._receiver(delivery)
        if receiver is None:
            count(target, "dropped")
            return "ack"
        secret, url = receiver
        where = f"{delivery.id} to {target} ({shown_url(url)}), attempt {attempt}"
        body = delivery.event.model_dump_json()
        headers = signature_headers(secret, delivery.id, body)
        try:
            answer = await self._client.post(str(url), headers, body.encode())
        except RefusedTarget as exc:
            reason = f"refused target: {exc}"
            await self._give_up(message, delivery, attempt, where, reason)
            self._records.record(delivery, attempt, "gave-up", None, reason)
            return "ack"
        match verdict(answer.status):
            case Verdict.DELIVERED:
                log.debug("delivered %s", where)
                count(target, "delivered")
                self._records.record(delivery, attempt, "delivered", answer.status, str(answer))
            case Verdict.GONE:
                await self._gone(message, delivery, where)
                self._records.record(delivery, attempt, "gone", answer.status, str(answer))
            case Verdict.RETRY:
                try:
                    retry = self._backoff.after(attempt, answer.retry_after)
                except ScheduleSpent as exc:
                    reason = f"{answer}; {exc}"
                    await self._give_up(message, delivery, attempt, where, reason)
                    self._records.record(delivery, attempt, "gave-up", answer.status, reason)
                    return "ack"
                await holding(
                    [message],
                    "parking a webhook retry",
                    lambda: self._park(message, delivery, attempt + 1, retry),
                )
                detail = f"{answer}; next attempt in {retry.delay:.1f} s"
                log.info("delivery %s: %s", where, detail)
                count(target, "retried")
                self._records.record(delivery, attempt, "retrying", answer.status, detail)
            case Verdict.GIVE_UP:
                reason = f"{answer}, which no retry would change"
                await self._give_up(message, delivery, attempt, where, reason)
                self._records.record(delivery, attempt, "gave-up", answer.status, reason)
        return "ack"

    def _receiver(self, delivery: WebhookDelivery) -> tuple[str, AnyHttpUrl] | None:
        """The secret to sign with and the URL to POST to, as configured now (a
        subscription's URL may have been corrected since the event); None (logged) when the
        delivery should not go out."""
        name = delivery.subscription
        if name is None:
            if self._callback_secret is None:
                log.warning("dropping %s: notifier.callback_secret is gone", delivery.id)
                return None
            return self._callback_secret.get_secret_value(), delivery.url
        subscription = self._subscriptions.get(name)
        if subscription is None:
            log.warning("dropping %s: subscription %s is no longer configured", delivery.id, name)
            return None
        if name in self._disabled:
            log.info("dropping %s: subscription %s is disabled", delivery.id, name)
            return None
        return subscription.secret.get_secret_value(), subscription.url

    async def _gone(
        self, message: AbstractIncomingMessage, delivery: WebhookDelivery, where: str
    ) -> None:
        name = delivery.subscription
        if name is None:
            log.warning("delivery %s: 410 Gone; the callback gets no more attempts", where)
        else:
            log.warning("delivery %s: 410 Gone; disabling subscription %s", where, name)
            await holding(
                [message],
                "recording a disabled subscription",
                lambda: self._disabled.disable(name, f"410 Gone to delivery {where}"),
            )
        count(delivery.target, "gone")

    async def _park(
        self,
        message: AbstractIncomingMessage,
        delivery: WebhookDelivery,
        attempt: int,
        retry: Retry,
    ) -> None:
        await self._broker.publish(
            self._broker.names.webhooks_exchange,
            retry_routing_key(retry.queue_ms),
            message.body,
            headers={ATTEMPT_HEADER: attempt},
            message_id=delivery.id,
            expiration=retry.delay,
        )

    async def _give_up(
        self,
        message: AbstractIncomingMessage,
        delivery: WebhookDelivery,
        attempt: int,
        where: str,
        reason: str,
    ) -> None:
        """Keep the delivery in ``<ns>.dead`` with the reason (the caller acks it)."""
        await holding(
            [message],
            "keeping a given-up webhook delivery",
            lambda: self._broker.publish(
                self._broker.names.dead_letter_exchange,
                GAVE_UP_KEY,
                message.body,
                headers={ATTEMPT_HEADER: attempt, REASON_HEADER: reason},
                message_id=delivery.id,
            ),
        )
        log.warning("gave up delivery %s: %s", where, reason)
        count(delivery.target, "gave-up")


def _attempt_number(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value >= 1 else 1
