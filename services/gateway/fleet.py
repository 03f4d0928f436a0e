"""What ``GET /status`` reports about every sheep, built from their ``sheep.<id>`` announcements
and the job events that name them (a sheep busy reporting on jobs skips its periodic
announcement: those reports tell that it lives)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from schemas.config import Config
from schemas.events import JobEvent, SheepState
from schemas.job import PRIORITIES
from services.common.broker import Broker
from services.common.consumer import Outcome, Subscription, TypedConsumer
from services.common.job_metrics import SHEEP_SILENCE

log = logging.getLogger(__name__)


class Fleet:
    def __init__(self, config: Config, broker: Broker) -> None:
        self.config = config
        self.broker = broker
        self.states: dict[str, SheepState] = {}
        self._started = datetime.now(UTC)
        self._heard: dict[str, datetime] = {}
        """When each sheep was last named by a job event."""
        self._announcements = TypedConsumer(
            broker,
            Subscription(("sheep.*",)),
            SheepState,
            self._on_state,
            source="sheep-state",
            bad_input="ack",
            bad_input_log="ignoring a malformed sheep announcement",
            prefetch=64,
        )

    async def start(self) -> None:
        self._started = datetime.now(UTC)
        await self._announcements.start()
        SHEEP_SILENCE.add(self.silences)

    async def stop(self) -> None:
        SHEEP_SILENCE.remove(self.silences)
        await self._announcements.stop()

    def silences(self) -> dict[tuple[str, ...], float]:
        """Seconds since each sheep was heard (since this gateway started, for a named one
        never heard), for ``shepherd_sheep_silence_seconds``."""
        now = datetime.now(UTC)
        self._forget(now)
        silences = {}
        for sheep_id in self._listed():
            state = self.states.get(sheep_id)
            seen = self._started if state is None else self._last_seen(sheep_id, state)
            silences[(sheep_id,)] = max(0.0, (now - seen).total_seconds())
        return silences

    async def _on_state(self, state: SheepState, _: AbstractIncomingMessage) -> Outcome:
        if state.sheep_class is None and state.sheep_id not in self.config.sheep:
            log.warning("ignoring the announcement of sheep %s: not configured", state.sheep_id)
        elif state.leaving and state.sheep_class is not None:  # gone for good
            self.states.pop(state.sheep_id, None)
            self._heard.pop(state.sheep_id, None)
        else:  # a named sheep that left stays listed, not alive
            self.states[state.sheep_id] = state
        return "ack"

    def _listed(self) -> list[str]:
        """The named sheep, then the sheep of classes heard from lately."""
        joined = sorted(s for s in self.states if s not in self.config.sheep)
        return [*self.config.sheep, *joined]

    def _forget(self, now: datetime) -> None:
        """Drop the sheep of classes no longer alive and silent for
        ``gateway.forget_sheep_after``: dead, or on a machine cut off (it announces again if
        it lives)."""
        forget = self.config.gateway.forget_sheep_after
        for sheep_id, state in list(self.states.items()):
            silence = timedelta(seconds=max(forget, 3 * state.interval))
            if state.sheep_class is not None and now - self._last_seen(sheep_id, state) > silence:
                del self.states[sheep_id]
                self._heard.pop(sheep_id, None)
        silence = timedelta(seconds=forget)
        for sheep_id in [s for s in self._heard if s not in self.states]:
            if now - self._heard[sheep_id] > silence:
                del self._heard[sheep_id]

    def saw(self, event: JobEvent) -> None:
        """A job event naming a sheep: it lived when the event was published."""
        sheep_id = event.data.sheep_id
        if sheep_id is not None:
            self._heard[sheep_id] = max(event.time, self._heard.get(sheep_id, event.time))

    def _last_seen(self, sheep_id: str, state: SheepState) -> datetime:
        heard = self._heard.get(sheep_id)
        return state.time if heard is None else max(state.time, heard)

    async def depth(self, queue_names: Iterable[str]) -> int | None:
        """Jobs ready in the queues of every priority; None if none could be read."""
        depths = [depth for q in queue_names if (depth := await self.queue_depth(q)) is not None]
        return sum(depths) if depths else None

    async def queue_depth(self, queue_name: str) -> int | None:
        """Messages ready in a queue (passive declare); None if it does not exist yet, or
        while RabbitMQ is unreachable (opening a channel would wait for it)."""
        if not self.broker.connected:
            return None
        channel = await self.broker.connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            return queue.declaration_result.message_count
        except aio_pika.exceptions.ChannelClosed:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()

    async def report(self) -> dict:
        names = self.broker.names
        now = datetime.now(UTC)
        self._forget(now)
        depths = {
            c: await self.depth(names.class_lane(c, p) for p in PRIORITIES)
            for c in self.config.sheep_classes
        }
        sheep = {}
        for sheep_id in self._listed():
            state = self.states.get(sheep_id)
            seen = None if state is None else self._last_seen(sheep_id, state)
            alive = bool(
                state
                and not state.leaving
                and seen
                and now - seen < timedelta(seconds=3 * state.interval)
            )
            named = self.config.sheep.get(sheep_id)
            sheep_class = None if state is None else state.sheep_class
            sheep[sheep_id] = {
                "type": state.kind if state else named and named.type,
                "sheep_class": sheep_class,
                "alive": alive,
                "runner_alive": bool(alive and state and state.runner_alive),
                "model": state.model.model_dump() if alive and state and state.model else None,
                "current_job": state.current_job if alive and state else None,
                "last_seen": seen.isoformat() if seen else None,
                "queue_depth": (
                    depths.get(sheep_class)
                    if sheep_class
                    else await self.depth(names.sheep_queue(sheep_id, p) for p in PRIORITIES)
                ),
                **_work(state, named.devices if named else []),
            }
        pool = await self.depth(names.pool_lane(p) for p in PRIORITIES)
        classes = {c: {"queue_depth": depth} for c, depth in depths.items()}
        return {"sheep": sheep, "pool": {"queue_depth": pool}, "classes": classes}


def _work(state: SheepState | None, configured_devices: list[str]) -> dict:
    """What a sheep announced it has done, and its duty cycle over its time up (for a named
    sheep not heard from yet: its configured devices)."""
    if state is None:
        return {"devices": configured_devices, "jobs_done": 0, "jobs_failed": 0}
    up = (state.time - state.started_at).total_seconds() if state.started_at else 0.0
    return {
        "devices": state.devices,
        "started_at": state.started_at.isoformat() if state.started_at else None,
        "jobs_done": state.jobs_done,
        "jobs_failed": state.jobs_failed,
        "busy_seconds": state.busy_seconds,
        "duty_cycle": min(1.0, state.busy_seconds / up) if up > 0 else None,
    }
