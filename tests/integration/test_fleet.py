"""The fleet view (``GET /status``): who is alive, and what each sheep announces it has done."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aio_pika.abc import AbstractIncomingMessage

from schemas.events import JobEvent, SheepState
from schemas.job import ModelRef
from schemas.status import JobState, JobStatus
from services.gateway.fleet import Fleet
from services.sheep.announcer import Announcer
from services.sheep.tally import Tally
from tests.support.polling import eventually
from tests.support.stack import bare_sheep

WAIT = 10


async def test_a_sheep_named_by_job_events_is_alive_without_announcing(config, broker, names):
    config.sheep = {"s1": bare_sheep()}
    fleet = Fleet(config, broker)
    await fleet.start()
    try:
        long_ago = datetime.now(UTC) - timedelta(seconds=60)
        state = SheepState(sheep_id="s1", kind="bare", runner_alive=True, interval=5, time=long_ago)
        await broker.publish(names.events_exchange, state.routing_key, state)

        async def heard() -> bool:
            return "s1" in fleet.states

        await eventually(heard, within=WAIT)
        assert (await fleet.report())["sheep"]["s1"]["alive"] is False

        model = ModelRef(name="echo")
        done = JobStatus(job_id="j1", state=JobState.DONE, model=model, sheep_id="s1")
        # An event read long after it was published (a gateway replaying the history) is
        # no news of the sheep; one published now is.
        fleet.saw(JobEvent.of(done, "/test").model_copy(update={"time": long_ago}))
        assert (await fleet.report())["sheep"]["s1"]["alive"] is False
        fleet.saw(JobEvent.of(done, "/test"))
        sheep = (await fleet.report())["sheep"]["s1"]
        assert sheep["alive"] is True
        assert datetime.fromisoformat(sheep["last_seen"]) > long_ago
    finally:
        await fleet.stop()


async def test_a_busy_sheep_announces_what_it_has_done_every_interval(broker, names):
    announced: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(names.events_exchange, "sheep.s1")
    await queue.consume(announced.put, no_ack=True)
    tally = Tally()

    def state() -> SheepState:
        return SheepState(
            sheep_id="s1", kind="bare", runner_alive=True, interval=0.3, **tally.announced()
        )

    announcer = Announcer(broker, state, interval=0.3)
    announcer.start()
    try:
        first = SheepState.model_validate_json((await asyncio.wait_for(announced.get(), WAIT)).body)
        assert first.jobs_done == 0 and first.started_at == tally.started_at
        with tally.busy():  # a job on the runner: its time counts as it goes
            await asyncio.sleep(1.5)
            busy = SheepState.model_validate_json(
                (await asyncio.wait_for(announced.get(), WAIT)).body
            )
            assert busy.busy_seconds > 0
        tally.ended(JobState.DONE)
        tally.ended(JobState.FAILED)
        later = SheepState.model_validate_json((await asyncio.wait_for(announced.get(), WAIT)).body)
        assert (later.jobs_done, later.jobs_failed) == (1, 1)
        assert 1.5 <= later.busy_seconds < 3
        announcer.changed()  # a change is announced after the gap, not before
        await asyncio.sleep(0.5)
        assert announced.qsize() == 0
        await asyncio.wait_for(announced.get(), WAIT)
    finally:
        await announcer.stop()
        await channel.close()


async def test_the_fleet_reports_what_each_sheep_has_done(config, broker, names):
    config.sheep = {"s1": bare_sheep(devices=["0", "1"])}
    fleet = Fleet(config, broker)
    await fleet.start()
    try:
        now = datetime.now(UTC)
        state = SheepState(
            sheep_id="s1",
            kind="bare",
            runner_alive=True,
            interval=5,
            devices=["0", "1"],
            started_at=now - timedelta(seconds=100),
            time=now,
            jobs_done=7,
            jobs_failed=2,
            busy_seconds=25.0,
        )
        await broker.publish(names.events_exchange, state.routing_key, state)

        async def reported() -> dict | None:
            sheep = (await fleet.report())["sheep"]["s1"]
            return sheep if sheep["jobs_done"] else None

        sheep = await eventually(reported, within=WAIT)
        assert (sheep["jobs_done"], sheep["jobs_failed"], sheep["busy_seconds"]) == (7, 2, 25.0)
        assert sheep["duty_cycle"] == 0.25  # 25 s busy of 100 s up
        assert sheep["devices"] == ["0", "1"]
        assert datetime.fromisoformat(sheep["started_at"]) == state.started_at
    finally:
        await fleet.stop()
