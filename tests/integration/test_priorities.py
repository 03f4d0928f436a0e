"""Priorities: a free sheep takes the highest-priority job waiting for it, passed-over work is
never starved, and a model's default priority applies to jobs that name none.

The jobs run the sleep model on one sheep, whose default priority is configured low here;
the order they started in is read from their statuses."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from schemas.broker_names import Names
from schemas.config import Config, ModelDefaults
from services.sheep.inbox import PASSED_OVER_AT_MOST
from tests.conftest import serving
from tests.support.polling import eventually
from tests.support.stack import bare_sheep

SLEEP = {"name": "sleep", "version": "1"}


@pytest.fixture
def one_sheep(config: Config) -> Config:
    config.sheep = {"s1": bare_sheep()}
    config.models = {"sleep": ModelDefaults(priority="low")}
    return config


async def submit(
    client: httpx.AsyncClient, job_id: str, seconds: float, priority: str | None
) -> None:
    body = {
        "job_id": job_id,
        "model": SLEEP,
        "sheep_id": "s1",
        "payload": {"seconds": seconds, "value": job_id},
        **({"priority": priority} if priority else {}),
    }
    answer = await client.post("/start-job", json=body)
    assert answer.status_code == 202, answer.text


async def until_running(client: httpx.AsyncClient, job_id: str) -> None:
    async def running() -> bool:
        return (await client.get(f"/jobs/{job_id}/status")).json()["state"] == "running"

    await eventually(running, within=30)


async def started_at(client: httpx.AsyncClient, job_ids: list[str]) -> dict[str, datetime]:
    """When each job started, once every one has ended done."""
    starts = {}
    for job_id in job_ids:
        answer = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 120})
        status = answer.json()
        assert status["state"] == "done", status
        starts[job_id] = datetime.fromisoformat(status["started_at"])
    return starts


async def behind_a_busy_job(
    config: Config, names: Names, job_id: str, jobs: list[tuple[str, str | None]]
) -> dict[str, datetime]:
    """Submit ``jobs`` (id, priority) of 50 ms while the only sheep runs a 2 s job, in that
    order; when each of them started (not the busy one)."""
    busy = f"{job_id}-busy"
    async with serving(config, names) as client:
        await submit(client, busy, 2.0, "normal")
        await until_running(client, busy)
        for one, priority in jobs:
            await submit(client, one, 0.05, priority)
        starts = await started_at(client, [busy, *(one for one, _ in jobs)])
    del starts[busy]
    return starts


async def test_high_priority_jobs_start_before_the_normal_ones_queued_before_them(
    one_sheep, names, job_id
):
    normal = [f"{job_id}-normal-{n:02d}" for n in range(49)]  # 50 with the busy one
    high = [f"{job_id}-high-{n}" for n in range(5)]
    starts = await behind_a_busy_job(
        one_sheep,
        names,
        job_id,
        [(one, "normal") for one in normal] + [(one, "high") for one in high],
    )

    last_high = max(starts[one] for one in high)
    first_normal = min(starts[one] for one in normal)
    assert last_high < first_normal, sorted(starts, key=starts.__getitem__)[:8]
    assert sorted(normal, key=starts.__getitem__) == normal  # first in, first out


async def test_low_priority_work_is_passed_over_at_most_ten_times_in_a_row(
    one_sheep, names, job_id
):
    low = [f"{job_id}-low-{n}" for n in range(3)]
    high = [f"{job_id}-high-{n:02d}" for n in range(40)]
    starts = await behind_a_busy_job(  # low: the model's default
        one_sheep, names, job_id, [(one, None) for one in low] + [(one, "high") for one in high]
    )

    order = sorted(starts, key=starts.__getitem__)
    runs_of_high, run = [], 0
    for job in order:
        if job in low:
            runs_of_high.append(run)
            run = 0
        else:
            run += 1
    # Each low job started after at most PASSED_OVER_AT_MOST (+1: the one already handed to
    # the runner when it arrived) high ones, and all of them before the last high one.
    assert len(runs_of_high) == 3 and max(runs_of_high) <= PASSED_OVER_AT_MOST + 1, order
    assert run > 0, order
