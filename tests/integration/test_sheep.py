"""A bare sheep against real RabbitMQ and MinIO, driving the real runner and example models."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage

from schemas.broker_names import Names
from schemas.config import ModelDefaults
from schemas.events import SheepState
from schemas.job import ModelRef
from schemas.status import ErrorInfo, JobState
from services.common.broker import Broker
from services.common.storage import ObjectMissing, Storage, StoredObject
from services.sheep.service import Sheep
from tests.support.jobs import WAIT, Listener, new_id, started, submit
from tests.support.metrics import rejected
from tests.support.stack import MODELS


async def echo_works(broker: Broker, storage: Storage, reports: Listener, **kw: Any) -> None:
    job_id = new_id()
    await submit(broker, storage, job_id, "echo", b'{"still": "serving"}', **kw)
    await reports.report(job_id, JobState.DONE)
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"still": "serving"}'


async def test_echo_job_runs_and_its_outputs_and_logs_land_in_storage(
    sheep, broker, storage, reports, job_id, channel, names
):
    states: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    state_queue = await channel.declare_queue(exclusive=True)
    await state_queue.bind(names.events_exchange, "sheep.s1")
    await state_queue.consume(states.put, no_ack=True)
    payload = b'{"text": "h\\u00e9llo",  "n": [1, 2.50]}\n'

    await submit(broker, storage, job_id, "echo", payload)

    running = await reports.report(job_id, JobState.RUNNING)
    done = await reports.report(job_id, JobState.DONE)
    assert (running.attempt, running.sheep_id, running.model) == (
        1,
        "s1",
        ModelRef(name="echo", version="1"),
    )
    assert (done.attempt, done.sheep_id, done.error) == (1, "s1", None)
    assert reports.states(job_id) == [JobState.RUNNING, JobState.DONE]
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == payload
    stderr = (await storage.get_bytes(f"{job_id}/logs/stderr.txt")).decode()
    assert "serving echo:1" in stderr  # the runner this job started, starting up
    with pytest.raises(ObjectMissing):  # echo prints nothing: no empty log is stored
        await storage.stat(f"{job_id}/logs/stdout.txt")
    second = new_id()
    await submit(broker, storage, second, "echo", b"{}")
    await reports.report(second, JobState.DONE)
    with pytest.raises(ObjectMissing):  # nor, on a running runner, the runner's own lines
        await storage.stat(f"{second}/logs/stderr.txt")

    async with asyncio.timeout(WAIT):  # the sheep announced the model it loaded
        while True:
            state = SheepState.model_validate_json((await states.get()).body)
            if state.model is not None:
                break
    assert state.runner_alive and state.model.name == "echo" and state.kind == "bare"

    # Announcements are a sample (one a second at most): a job shows while it runs a while.
    longer = new_id()
    await submit(broker, storage, longer, "sleep", b'{"seconds": 2.5, "value": 1}')
    async with asyncio.timeout(WAIT):
        while SheepState.model_validate_json((await states.get()).body).current_job != longer:
            pass


async def test_failing_model_reports_the_error_and_the_next_job_succeeds(
    sheep, broker, storage, reports, job_id
):
    await submit(broker, storage, job_id, "fail", b"{}")

    failed = await reports.report(job_id, JobState.FAILED)
    assert failed.error is not None
    assert failed.error.type == "ValueError"
    assert failed.error.message == "requested failure"
    assert "Traceback" in (failed.error.traceback or "")
    assert "requested failure" in failed.error.traceback
    await echo_works(broker, storage, reports)


async def test_unknown_model_fails_naming_it_and_the_sheep_keeps_serving(
    sheep, broker, storage, reports, job_id
):
    await submit(broker, storage, job_id, "nosuchmodel:7", b"{}")

    failed = await reports.report(job_id, JobState.FAILED)
    assert failed.error is not None and failed.error.type == "ModelNotFound"
    assert "nosuchmodel" in failed.error.message and "7" in failed.error.message
    assert str(MODELS / "nosuchmodel" / "7") in failed.error.message
    await echo_works(broker, storage, reports)


@pytest.mark.parametrize("sheep_ids", [["s1", "s2"]])
async def test_pool_jobs_go_to_an_idle_sheep_not_behind_a_busy_one(
    sheep, broker, storage, reports, job_id
):
    sleeper = new_id()
    await submit(broker, storage, sleeper, "sleep", b'{"seconds": 4, "value": 1}', sheep_id="s1")
    await reports.report(sleeper, JobState.RUNNING)

    await submit(broker, storage, job_id, "echo", b"[1]", sheep_id=None)

    running = await reports.report(job_id, JobState.RUNNING)
    done = await reports.report(job_id, JobState.DONE)
    assert running.sheep_id == done.sheep_id == "s2"
    assert JobState.DONE not in reports.states(sleeper)  # s2 did not wait for s1
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b"[1]"
    await reports.report(sleeper, JobState.DONE)
    await echo_works(broker, storage, reports, sheep_id=None)


@pytest.mark.parametrize("sheep_ids", [["s1", "s2"]])
@pytest.mark.parametrize("lease_after", [60.0, 0.0], ids=["held-by-delivery", "leased"])
async def test_a_busy_sheep_takes_no_second_pool_job(
    sheep, configured, broker, storage, reports, job_id, lease_after
):
    """Whether its pool job is held by the delivery (prefetch one) or leased (the delivery
    acked, the pool closed), the next pool job goes to the idle sheep."""
    configured.broker.lease_after = lease_after
    sleeper = new_id()
    await submit(broker, storage, sleeper, "sleep", b'{"seconds": 4, "value": 1}', sheep_id=None)
    busy = (await reports.report(sleeper, JobState.RUNNING)).sheep_id
    if lease_after == 0:
        await reports.progress(sleeper)  # running a while: leased by now

    # Two: the broker hands pool jobs round-robin to consumers with room for one.
    echoes = [job_id, new_id()]
    for echo in echoes:
        await submit(broker, storage, echo, "echo", b"[2]", sheep_id=None)

    for echo in echoes:
        done = await reports.report(echo, JobState.DONE)
        assert done.sheep_id is not None and done.sheep_id != busy
    assert JobState.DONE not in reports.states(sleeper)
    await reports.report(sleeper, JobState.DONE)


async def test_a_job_whose_runner_is_killed_runs_again_on_a_fresh_one(
    sheep, broker, storage, reports, job_id
):
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 2, "value": 1}')
    first = await reports.report(job_id, JobState.RUNNING)  # the runner is working on it
    pid = sheep["s1"].backend.pid
    assert pid is not None

    os.kill(pid, signal.SIGKILL)

    again = await reports.report(job_id, JobState.RUNNING)
    done = await reports.report(job_id, JobState.DONE)
    assert (first.attempt, again.attempt, done.attempt) == (1, 2, 2)
    assert JobState.FAILED not in reports.states(job_id)
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"value": 1}'
    assert sheep["s1"].backend.pid not in (None, pid)


async def test_a_job_out_of_attempts_fails_with_its_runners_last_words(
    configured, broker, storage, reports, job_id
):
    configured.models = {"sleep": ModelDefaults(max_attempts=1)}
    async with started(Sheep("s1", configured, broker, storage)) as sheep:
        await submit(broker, storage, job_id, "sleep", b'{"seconds": 30, "value": 1}')
        await reports.progress(job_id)  # the runner is working on it
        pid = sheep.backend.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        failed = await reports.report(job_id, JobState.FAILED)
        await echo_works(broker, storage, reports)
        assert sheep.backend.pid not in (None, pid)
    assert failed.attempt == 1 and failed.error is not None
    assert failed.error.type == "RunnerExited"
    first_line, last_words = failed.error.message.split("\n", 1)
    assert first_line == "runner exited with code -9; its last output:"
    assert "serving sleep:1" in last_words  # the tail of the runner's stderr


@pytest.mark.parametrize("sheep_settings", [{"heartbeat_timeout": 1.5}])
async def test_a_hung_runner_is_detected_by_its_missing_heartbeats(
    sheep, broker, storage, reports, job_id
):
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 30, "value": 1}')
    await reports.progress(job_id)
    os.kill(sheep["s1"].backend.pid, signal.SIGSTOP)

    failed = await reports.report(job_id, JobState.FAILED)
    assert failed.error is not None and failed.error.type == "RunnerUnresponsive"
    assert failed.error.message == "runner stopped answering (no heartbeat for 1.5 s)"
    await echo_works(broker, storage, reports)


async def test_a_job_past_its_timeout_is_stopped_and_failed(
    sheep, broker, storage, reports, job_id
):
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 30, "value": 1}', job_timeout=1.0)

    failed = await reports.report(job_id, JobState.FAILED)
    assert failed.error is not None and failed.error.type == "Timeout"
    assert failed.error.message == "timed out after 1 s"
    with pytest.raises(ObjectMissing):
        await storage.get_bytes(f"{job_id}/outputs/output.json")
    await echo_works(broker, storage, reports)


@pytest.mark.parametrize("sheep_id", ["s1", None], ids=["own-queue", "pool"])
async def test_an_invalid_job_message_is_dead_lettered_and_the_sheep_keeps_consuming(
    sheep, broker, storage, reports, channel, names, sheep_id
):
    before = rejected("jobs", "not-json"), rejected("jobs", "invalid")
    key = Names.job_routing_key(sheep_id)
    await broker.publish(names.jobs_exchange, key, b"this is not a job")
    bad_job = json.dumps({"job": {"job_id": "../etc"}, "queued_at": "now"}).encode()
    await broker.publish(names.jobs_exchange, key, bad_job)

    dead_letters: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    dead = await channel.get_queue(names.dead_letter_queue)
    await dead.consume(dead_letters.put, no_ack=True)
    async with asyncio.timeout(WAIT):
        bodies = [(await dead_letters.get()).body for _ in range(2)]
    assert bodies == [b"this is not a job", bad_job]
    await echo_works(broker, storage, reports, sheep_id=None)  # the pool is not left closed
    await echo_works(broker, storage, reports, sheep_id=sheep_id)
    assert (rejected("jobs", "not-json"), rejected("jobs", "invalid")) == (
        before[0] + 1,
        before[1] + 1,
    )


async def test_a_job_outlasting_the_stop_grace_is_requeued_and_run_again(
    configured, broker, storage, reports, job_id
):
    first = Sheep("s1", configured, broker, storage, stop_grace=0.2)
    await first.start()
    await submit(broker, storage, job_id, "sleep", b'{"seconds": 1.5, "value": 1}')
    await reports.progress(job_id)

    await first.stop()
    assert first.backend.pid is None

    async with started(Sheep("s1", configured, broker, storage)):
        done = await reports.report(job_id, JobState.DONE)
    assert done.attempt == 2
    assert reports.states(job_id) == [JobState.RUNNING, JobState.RUNNING, JobState.DONE]
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"value": 1}'


class StoreGoingAway(Storage):
    """Loses its bucket when the first job's inputs are fetched, as if the store went down."""

    async def download(self, objects: list[StoredObject], prefix: str, target: Path) -> list[Path]:
        if not hasattr(self, "went_away"):
            self.went_away, self.bucket = self.bucket, f"gone-{uuid.uuid4().hex[:8]}"
        return await super().download(objects, prefix, target)


async def test_a_job_meeting_an_unreachable_store_is_held_then_retried(
    configured, broker, storage, reports, job_id
):
    flaky = StoreGoingAway(configured.storage)
    async with started(Sheep("s1", configured, broker, flaky)):
        await submit(broker, storage, job_id, "echo", b"[2]")
        # Its inputs could not be fetched: held, not run, failed nor retried while it is away.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reports.report(job_id, JobState.RUNNING), 1.5)
        assert hasattr(flaky, "went_away")

        flaky.bucket = flaky.went_away  # ...and back

        done = await reports.report(job_id, JobState.DONE)
    assert done.attempt == 2
    assert reports.states(job_id) == [JobState.RUNNING, JobState.DONE]
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b"[2]"


async def test_a_model_that_cannot_load_fails_its_job_with_the_runners_reason(
    configured, broker, storage, reports, job_id, tmp_path
):
    models = tmp_path / "models"
    (models / "broken" / "1").mkdir(parents=True)
    (models / "broken" / "1" / "shepherd-runner.yaml").write_text("runner: nosuchmodule:Nope\n")
    (models / "echo").symlink_to(MODELS / "echo")
    configured.sheep["s1"].working_directory = models
    async with started(Sheep("s1", configured, broker, storage)):
        await submit(broker, storage, job_id, "broken", b"{}")
        failed = await reports.report(job_id, JobState.FAILED)
        await echo_works(broker, storage, reports)
    assert failed.error is not None
    assert failed.error.message.startswith("runner failed to start: ")
    assert "nosuchmodule" in failed.error.message
    stderr = await storage.get_bytes(f"{job_id}/logs/stderr.txt")
    assert b"nosuchmodule" in stderr


SILENT_MODELS = {
    # The runner binds its port before loading, so the sheep connects; then nothing, ever:
    # no ready, and no heartbeat either (they start once the model is loaded).
    "mute": "import time\n\nfrom runner import Runner\n\n\nclass Model(Runner):\n"
    "    def load(self):\n        time.sleep(3600)\n\n"
    "    def process(self, inputs_dir, outputs_dir):\n        pass\n",
    # Ready, then the whole process stops mid-job: no frame at all any more.
    "frozen": "import os\nimport signal\n\nfrom runner import Runner\n\n\nclass Model(Runner):\n"
    "    def process(self, inputs_dir, outputs_dir):\n"
    "        os.kill(os.getpid(), signal.SIGSTOP)\n",
}


@pytest.mark.parametrize(
    ("model", "error"),
    [
        (
            "mute",
            ErrorInfo(type="RunnerLoadTimeout", message="runner did not become ready within 3 s"),
        ),
        (
            "frozen",
            ErrorInfo(
                type="RunnerUnresponsive",
                message="runner stopped answering (no heartbeat for 1.5 s)",
            ),
        ),
    ],
)
async def test_a_runner_that_says_nothing_fails_its_job_and_the_sheep_goes_on(
    configured, broker, storage, reports, job_id, tmp_path, model, error
):
    model_dir = tmp_path / "models" / model / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "shepherd-runner.yaml").write_text("runner: model:Model\n")
    (model_dir / "model.py").write_text(SILENT_MODELS[model])
    (tmp_path / "models" / "echo").symlink_to(MODELS / "echo")
    settings = configured.sheep["s1"]
    settings.working_directory = tmp_path / "models"
    settings.load_timeout, settings.heartbeat_timeout = 3.0, 1.5
    async with started(Sheep("s1", configured, broker, storage)):
        await submit(broker, storage, job_id, model, b"{}")
        failed = await reports.report(job_id, JobState.FAILED)
        await echo_works(broker, storage, reports)
    assert failed.error == error


async def test_a_sheep_whose_working_directory_is_missing_says_so_at_start(
    configured, broker, storage, tmp_path
):
    configured.sheep["s1"].working_directory = tmp_path / "moved-away"
    with pytest.raises(ValueError, match=r"working_directory .*moved-away is not a directory"):
        Sheep("s1", configured, broker, storage)


async def test_a_quick_job_is_reported_once_by_its_outcome_saying_when_it_started(
    configured, broker, storage, reports, job_id
):
    configured.broker.report_running_after = 30.0  # longer than the job: no running report
    async with started(Sheep("s1", configured, broker, storage)):
        await submit(broker, storage, job_id, "echo", b"{}")
        done = await reports.report(job_id, JobState.DONE)
    assert reports.states(job_id) == [JobState.DONE]
    assert done.started_at is not None and done.started_at <= done.time
