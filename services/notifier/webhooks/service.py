"""Webhooks in the notifier role: the dispatcher and the delivery workers, started together.

    webhooks = Webhooks(config, broker, storage)
    await webhooks.start()
    ...
    await webhooks.stop()

Both consume queues of their own, so deliveries never hold up status updates; every retry
waits in RabbitMQ, so stopping loses nothing. See docs/architecture.md, "Webhooks".
"""

from __future__ import annotations

from schemas.config import Config
from services.common.broker import Broker
from services.common.ssrf_guard import check_subscriptions
from services.common.storage import Storage
from services.notifier.webhooks.attempts import AttemptRecords
from services.notifier.webhooks.client import WebhookClient
from services.notifier.webhooks.deliverer import WebhookDeliverer
from services.notifier.webhooks.disabled import DisabledSubscriptions
from services.notifier.webhooks.dispatcher import WebhookDispatcher


class Webhooks:
    def __init__(self, config: Config, broker: Broker, storage: Storage) -> None:
        self._disabled = DisabledSubscriptions(storage, config.notifier.webhooks)
        self._client = WebhookClient(config.notifier)
        self._dispatcher = WebhookDispatcher(config, broker, storage, self._disabled)
        self._deliverer = WebhookDeliverer(
            config, broker, self._client, self._disabled, AttemptRecords(storage)
        )
        self._subscriptions = config.notifier.webhooks
        self._allow_private = config.notifier.allow_private_targets

    async def start(self) -> None:
        """First refuses (ConfigError) a subscription whose every delivery the SSRF guard would
        refuse: said at start, not in a warning per delivery."""
        await check_subscriptions(self._subscriptions, self._allow_private)
        await self._disabled.load()
        await self._deliverer.start()
        await self._dispatcher.start()

    async def stop(self) -> None:
        """The dispatcher first, so that no new deliveries come while the workers stop."""
        await self._dispatcher.stop()
        await self._deliverer.stop()
        await self._client.aclose()
