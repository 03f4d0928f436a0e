"""Jobs outlive the sheep that run them: kill -9 a sheep process mid-job and the job runs
again; a job that keeps killing its sheep fails after the delivery limit."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from schemas.config import Config
from schemas.events import StatusReport
from schemas.job import JobDispatch
from schemas.status import JobState
from services.common.broker import Broker
from services.notifier.gave_up import GaveUpListener
from services.sheep.service import Sheep
from tests.support.jobs import Listener, submit
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess, kill_runner, write_config
from tests.support.stack import MODELS


@pytest.fixture
def sheep_ids() -> list[str]:
    return ["s1", "s2"]


@pytest.fixture
def config_file(configured: Config, tmp_path: Path) -> Path:
    return write_config(configured, tmp_path / "shepherd.yml")


@pytest.fixture
async def first(
    configured: Config, config_file: Path, broker: Broker, tmp_path: Path
) -> AsyncIterator[ServiceProcess]:
    """Sheep s1 as a process of its own, for the test to kill."""
    process = ServiceProcess(["sheep", "s1"], config_file, tmp_path / "logs")
    yield process
    await process.stop()
    kill_runner(configured, "s1")


async def running_on(reports: Listener, job_id: str, sheep_id: str) -> StatusReport:
    report = await reports.report(job_id, JobState.RUNNING)
    assert report.sheep_id == sheep_id
    return report


@pytest.mark.parametrize("leased", [False, True], ids=["delivery", "lease"])
async def test_a_sheep_killed_mid_job_runs_the_job_again_as_soon_as_it_restarts(
    configured, first, broker, storage, reports, job_id, leased
):
    """Held by its delivery (a short job) or by a lease (a job past ``lease_after``)."""
    configured.broker.lease_time = 600  # far longer than the test: the restart gives it back
    configured.broker.lease_after = 0 if leased else 600
    write_config(configured, first.config_file)
    await first.start()
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 3, "value": "x"}')
    assert (await running_on(reports, job_id, "s1")).attempt == 1

    first.kill()
    await first.wait()
    await first.start()

    again = await running_on(reports, job_id, "s1")
    done = await reports.report(job_id, JobState.DONE)
    assert (again.attempt, done.attempt) == (2, 2)
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"value": "x"}'
    assert ("queued again 1 job(s) of its last run" in first.output()) == leased


async def test_a_runner_its_sheep_never_recorded_is_killed_when_the_sheep_starts(
    configured, first, broker, storage, reports, job_id
):
    """A sheep killed as it started its runner never wrote the runner's pid file: the sheep,
    restarted, still finds that runner by the port it holds and kills it, and its jobs run on
    a runner of its own (not on the orphan, nor failing to bind)."""
    address = f"tcp://127.0.0.1:{configured.sheep['s1'].port}"
    orphan = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "runner.cli", "--bind", address, "--model", "sleep:1"),
        cwd=MODELS / "sleep" / "1",
        start_new_session=True,
    )
    try:
        await first.start()
        assert await asyncio.wait_for(orphan.wait(), 10) == -signal.SIGKILL
        await submit(broker, storage, job_id, "sleep", b'{"seconds": 0, "value": 1}')
        await reports.report(job_id, JobState.DONE)
    finally:
        if orphan.returncode is None:
            orphan.kill()
            await orphan.wait()
    assert f"killing orphaned runner (pid {orphan.pid})" in first.output()


async def test_the_job_of_a_sheep_that_never_returns_runs_elsewhere_after_the_lease_time(
    configured, first, broker, storage, reports, job_id
):
    configured.broker.lease_time = 3
    configured.broker.lease_after = 0  # leased: its expiry, not the lost connection, requeues it
    write_config(configured, first.config_file)
    await first.start()
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 3, "value": 7}', sheep_id=None)
    await running_on(reports, job_id, "s1")
    first.kill()
    kill_runner(configured, "s1")

    other = Sheep("s2", configured, broker, storage)
    await other.start()
    try:
        started = asyncio.get_running_loop().time()
        again = await running_on(reports, job_id, "s2")
        waited = asyncio.get_running_loop().time() - started
        done = await reports.report(job_id, JobState.DONE)
    finally:
        await other.stop()
    assert waited < 3 + 2, "the lease expires after its lease time"
    assert (again.attempt, done.attempt) == (2, 2)
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"value": 7}'


@pytest.fixture
def sheep_settings(tmp_path: Path) -> dict[str, Any]:
    """Models: the examples, plus ``killer``, whose runner kills the sheep that runs it."""
    models = tmp_path / "models"
    (models / "killer" / "1").mkdir(parents=True)
    (models / "killer" / "1" / "shepherd-runner.yaml").write_text("runner: model:Killer\n")
    (models / "killer" / "1" / "model.py").write_text(
        "import os, signal\n"
        "from runner import JsonRunner\n\n"
        "class Killer(JsonRunner):\n"
        "    def predict(self, payload):\n"
        "        os.kill(os.getppid(), signal.SIGKILL)\n"
    )
    for example in MODELS.iterdir():
        (models / example.name).symlink_to(example)
    return {"working_directory": models}


async def test_a_job_that_keeps_killing_its_sheep_fails_after_the_delivery_limit(
    configured, first, broker, storage, reports, job_id
):
    limit = configured.broker.delivery_limit
    await submit(broker, storage, job_id, "killer", b"{}")
    for attempt in range(1, limit + 1):
        await first.start()  # as a supervisor would, after each death
        assert (await running_on(reports, job_id, "s1")).attempt == attempt
        assert await first.wait() == -9
        kill_runner(configured, "s1")
    await first.start()

    failed = await reports.report(job_id, JobState.FAILED)
    assert failed.error is not None
    assert (failed.error.type, failed.error.message) == (
        "GaveUp",
        f"gave up after {limit} deliveries",
    )
    assert reports.states(job_id) == [JobState.RUNNING] * limit + [JobState.FAILED]


async def test_a_job_the_broker_dead_letters_for_too_many_deliveries_is_marked_failed(
    configured, broker, storage, reports, channel, job_id
):
    """Sheep dying before they can take the job: the quorum queue gives up by itself."""
    listener = GaveUpListener(configured, broker)
    await listener.start()
    try:
        await submit(broker, storage, job_id, "echo", b"[]")
        queue = await channel.get_queue(broker.names.sheep_queue("s1"), ensure=False)
        for _ in range(configured.broker.delivery_limit + 1):
            message = await _get(queue)
            JobDispatch.model_validate_json(message.body)
            await message.nack(requeue=True)
        failed = await reports.report(job_id, JobState.FAILED)
    finally:
        await listener.stop()
    assert failed.error is not None
    assert failed.error.message == f"gave up after {configured.broker.delivery_limit} deliveries"
    assert await queue.get(fail=False) is None  # gone from its queue...
    dead = await channel.get_queue(broker.names.dead_letter_queue, ensure=False)
    kept = await dead.get(no_ack=True)  # ...and kept for inspection
    assert JobDispatch.model_validate_json(kept.body).job.job_id == job_id


async def _get(queue: Any) -> Any:
    return await eventually(partial(queue.get, fail=False), within=10)
