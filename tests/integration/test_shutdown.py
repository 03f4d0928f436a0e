"""SIGTERM on a sheep process: it stops taking work, lets the job it runs finish within its
``stop_grace``, and queues it again when the job would outlast it. No job is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.config import Config
from schemas.status import JobState
from tests.support.jobs import Listener, submit
from tests.support.processes import ServiceProcess, kill_runner, write_config


@pytest.fixture
def sheep_settings() -> dict[str, Any]:
    return {"stop_grace": 4.0}


@pytest.fixture
async def sheep_process(
    configured: Config, broker, tmp_path: Path
) -> AsyncIterator[ServiceProcess]:
    config_file = write_config(configured, tmp_path / "shepherd.yml")
    process = ServiceProcess(["sheep", "s1"], config_file, tmp_path / "logs")
    await process.start()
    yield process
    await process.stop()
    kill_runner(configured, "s1")


async def test_sigterm_lets_the_running_job_finish_within_the_grace(
    sheep_process, broker, storage, reports: Listener, job_id
):
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 2, "value": "kept"}')
    await reports.report(job_id, JobState.RUNNING)
    stopping = asyncio.create_task(sheep_process.stop())

    done = await reports.report(job_id, JobState.DONE)
    assert await stopping == 0
    assert done.attempt == 1
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"value": "kept"}'


async def test_a_job_outlasting_the_grace_is_queued_again_and_runs_after_a_restart(
    sheep_process, broker, storage, reports: Listener, job_id
):
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 8, "value": 2}')
    await reports.report(job_id, JobState.RUNNING)
    started = asyncio.get_running_loop().time()
    assert await sheep_process.stop() == 0
    assert asyncio.get_running_loop().time() - started < 4.0 + 3.0  # the grace, and no more
    assert JobState.DONE not in reports.states(job_id)

    await sheep_process.start()
    again = await reports.report(job_id, JobState.RUNNING)
    done = await reports.report(job_id, JobState.DONE)
    assert (again.attempt, done.attempt) == (2, 2)
