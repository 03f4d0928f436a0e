"""A sheep's announcements of its state (``sheep.<id>`` on ``<ns>.events``), which the
gateway's fleet view (``GET /status``) is made of.

    announcer = Announcer(broker, state_of_the_sheep, interval=5.0)
    announcer.start()
    announcer.changed()        # something changed: announce soon
    await announcer.leave()    # stop, with a last announcement: the sheep is gone

It announces on a change, at most every ``ANNOUNCE_GAP`` seconds, and otherwise every
``interval``, busy or not: what it has done (jobs, busy seconds) stays that fresh in the fleet's
view. The view is a sample, not a log of every job (announcing each would cost two publishes
a job; this costs one an interval).
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

    def start(self) -> None:
        self._changed.set()  # announce the sheep at once
        self._task = asyncio.create_task(self._announce(), name="sheep-announce")

    def changed(self) -> None:
        self._changed.set()

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
