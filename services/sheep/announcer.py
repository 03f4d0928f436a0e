"""A sheep's announcements of its state (``sheep.<id>`` on ``<ns>.events``), which the
gateway's fleet view (``GET /status``) is made of.

    announcer = Announcer(broker, state_of_the_sheep, interval=5.0)
    announcer.start()
    announcer.changed()        # something changed: announce soon
    announcer.reported()       # a job report went out: the fleet heard of the sheep
    await announcer.leave()    # stop, with a last announcement: the sheep is gone

It announces on a change, at most every ``ANNOUNCE_GAP`` seconds, and otherwise every
``interval`` unless the sheep reported on a job meanwhile: the job's event names the sheep,
which tells the fleet it lives. The fleet's view is a sample, not a log of every job
(announcing each would cost two publishes a job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from schemas.events import SheepState
from services.common.broker import Broker

log = logging.getLogger(__name__)

ANNOUNCE_GAP = 1.0
"""Seconds at least between two announcements of a sheep's state."""


class Announcer:
    def __init__(self, broker: Broker, state: Callable[[], SheepState], interval: float) -> None:
        self._broker = broker
        self._state = state
        self._interval = interval
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reported = False

    def start(self) -> None:
        self._changed.set()  # announce the sheep at once
        self._task = asyncio.create_task(self._announce(), name="sheep-announce")

    def changed(self) -> None:
        self._changed.set()

    def reported(self) -> None:
        self._reported = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def leave(self) -> None:
        """Stop, and say the sheep is gone (``leaving``): the fleet drops a sheep of a class
        at once rather than after its silence."""
        await self.stop()
        await self._send(self._state().model_copy(update={"leaving": True}))

    async def _announce(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._interval)
            reported, self._reported = self._reported, False
            if not self._changed.is_set() and reported:
                continue  # nothing new, and the sheep's reports said it lives
            self._changed.clear()
            await self._send(self._state())
            await asyncio.sleep(ANNOUNCE_GAP)  # changes meanwhile go out together, next

    async def _send(self, state: SheepState) -> None:
        try:
            await self._broker.publish(
                self._broker.names.events_exchange, state.routing_key, state, mandatory=False
            )
        except Exception as exc:
            log.warning("sheep %s: cannot announce its state: %s", state.sheep_id, exc)
