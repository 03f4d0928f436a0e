"""What a sheep knows about cancelled jobs: the ``status.cancelled`` reports it hears, and
the ``cancel.json`` marker the gateway writes before it answers a cancellation.

    cancellations = Cancellations(broker)
    await cancellations.start()
    if cancellations.requested(job_id, keys): ...      # before starting a job (keys: its objects)
    if cancellations.heard_all_since(declared_at): ... # then no need to look for the marker
    cancelled = cancellations.watch(job_id)            # while holding it
    await cancelled.wait()
    cancellations.unwatch(job_id)                      # once it is let go

The marker makes "the gateway said cancelled, so it never runs" hold even when the report
arrives late or this sheep was not listening; the reports stop a running job within moments.
A sheep that has listened without a break since before a job was declared has heard every
cancellation of it but one still on its way (published, not yet received).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Collection
from datetime import datetime, timedelta

from aio_pika.abc import AbstractIncomingMessage

from schemas.events import StatusReport, utcnow
from schemas.layout import cancel_key
from schemas.status import JobState
from services.common.broker import Broker
from services.common.consumer import Outcome, Subscription, TypedConsumer

log = logging.getLogger(__name__)

REMEMBERED = 10_000
"""Cancelled job ids kept in memory; older ones are still found through their marker."""
CLOCK_MARGIN = timedelta(seconds=1)
"""How much the gateway's clock (which stamps a job declared) may run behind this sheep's:
far more than NTP lets machines drift apart."""


class Cancellations:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._known: OrderedDict[str, None] = OrderedDict()
        self._watched: dict[str, asyncio.Event] = {}
        self._reports = TypedConsumer(
            broker,
            Subscription((f"status.{JobState.CANCELLED.value}",)),
            StatusReport,
            self._on_report,
            source="cancellations",
            bad_input="ack",
            bad_input_log="ignoring an invalid cancellation report",
            prefetch=64,
        )
        self._listening_since: datetime | None = None

    async def start(self) -> None:
        await self._reports.start()
        self._listening_since = utcnow()
        # Reports published while the channel is down are lost to it.
        self._reports.channel.close_callbacks.add(self._deaf)
        self._reports.channel.reopen_callbacks.add(self._listening)

    def _deaf(self, *_: object) -> None:
        self._listening_since = None

    def _listening(self, *_: object) -> None:
        self._listening_since = utcnow()

    def heard_all_since(self, moment: datetime) -> bool:
        """Whether every cancellation published after ``moment`` reached this sheep (or is
        about to): it has listened without a break since before then."""
        since = self._listening_since
        return since is not None and moment >= since + CLOCK_MARGIN

    async def stop(self) -> None:
        await self._reports.stop()

    def requested(self, job_id: str, stored: Collection[str]) -> bool:
        """Whether ``job_id`` was cancelled: a report heard, or its marker among the keys
        ``stored`` under the job's prefix."""
        if job_id in self._known:
            return True
        if cancel_key(job_id) not in stored:
            return False
        self._remember(job_id)
        return True

    def watch(self, job_id: str) -> asyncio.Event:
        """An event set when ``job_id`` is cancelled (at once if it already was), until
        :meth:`unwatch`."""
        event = asyncio.Event()
        if job_id in self._known:
            event.set()
        self._watched[job_id] = event
        return event

    def unwatch(self, job_id: str) -> None:
        self._watched.pop(job_id, None)

    async def _on_report(self, report: StatusReport, _: AbstractIncomingMessage) -> Outcome:
        self._remember(report.job_id)
        if (event := self._watched.get(report.job_id)) is not None:
            event.set()
        return "ack"

    def _remember(self, job_id: str) -> None:
        self._known[job_id] = None
        self._known.move_to_end(job_id)
        while len(self._known) > REMEMBERED:
            self._known.popitem(last=False)
