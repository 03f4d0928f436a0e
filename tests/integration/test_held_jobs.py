"""A sheep hands its runner the next job while the current one runs: the runner starts it the
moment the current one ends. What that must not change: each job's logs are its own, a held
job that is cancelled never runs and costs the runner nothing, and a held job outlives its
runner's death."""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest

from schemas.config import Config
from schemas.events import StatusReport
from schemas.job import ModelRef
from schemas.status import JobState
from services.common.broker import Broker
from services.common.storage import ObjectMissing, Storage
from services.sheep.service import Sheep
from tests.support.jobs import Listener, new_id, submit
from tests.support.polling import eventually

TALK = (
    "import json\nimport sys\nimport time\n\nfrom runner import Runner\n\n\n"
    "class Talk(Runner):\n"
    "    def process(self, inputs_dir, outputs_dir):\n"
    "        said = json.loads((inputs_dir / 'input.json').read_text())\n"
    "        print('out', said['word'], flush=True)\n"
    "        print('err', said['word'], file=sys.stderr, flush=True)\n"
    "        time.sleep(said['seconds'])\n"
    "        print('bye', said['word'])\n"
)
"""A model that prints as it starts and as it ends."""


async def held(sheep: Sheep, job_id: str) -> bool:
    return job_id in sheep._driver.held


async def test_back_to_back_jobs_each_keep_their_own_logs(
    configured: Config, broker: Broker, storage: Storage, reports: Listener, tmp_path
):
    models = tmp_path / "models"
    (models / "talk" / "1").mkdir(parents=True)
    (models / "talk" / "1" / "shepherd-runner.yaml").write_text("runner: talk:Talk\n")
    (models / "talk" / "1" / "talk.py").write_text(TALK)
    configured.sheep["s1"].working_directory = models
    sheep = Sheep("s1", configured, broker, storage)
    await sheep.start()
    words = ["first", "second", "third", "fourth"]
    jobs = [new_id() for _ in words]
    try:
        for job_id, word in zip(jobs, words, strict=True):
            payload = f'{{"word": "{word}", "seconds": 0.3}}'.encode()
            await submit(broker, storage, job_id, "talk", payload)
        await eventually(partial(held, sheep, jobs[2]), within=10, every=0.01)
        for job_id in jobs:
            await reports.report(job_id, JobState.DONE)
    finally:
        await sheep.stop()
    for job_id, word in zip(jobs, words, strict=True):
        stdout = await storage.get_bytes(f"{job_id}/logs/stdout.txt")
        assert stdout == f"out {word}\nbye {word}\n".encode()
        stderr = (await storage.get_bytes(f"{job_id}/logs/stderr.txt")).decode()
        assert stderr.endswith(f"err {word}\n")
        # Only the first job started the runner: the others' logs hold nothing else.
        assert ("serving talk:1" in stderr) is (job_id == jobs[0])
        if job_id != jobs[0]:
            assert stderr == f"err {word}\n"


async def test_a_held_job_cancelled_never_runs_and_the_runner_goes_on(
    sheep, broker, storage, reports, names
):
    running, waiting, after = new_id(), new_id(), new_id()
    await submit(broker, storage, running, "sleep", b'{"seconds": 2, "value": 1}')
    await reports.progress(running)
    pid = sheep["s1"].backend.pid
    await submit(broker, storage, waiting, "sleep", b'{"seconds": 0, "value": 2}')
    await eventually(partial(held, sheep["s1"], waiting), within=10, every=0.01)

    cancel = StatusReport(
        job_id=waiting, model=ModelRef(name="sleep", version="1"), state=JobState.CANCELLED
    )
    await broker.publish(names.events_exchange, cancel.routing_key, cancel)

    done = await reports.report(running, JobState.DONE)
    assert done.attempt == 1  # its runner was not disturbed
    ended = await reports.report(waiting, JobState.CANCELLED)
    assert ended.sheep_id == "s1" and ended.started_at is None
    assert JobState.RUNNING not in reports.states(waiting)
    with pytest.raises(ObjectMissing):
        await storage.get_bytes(f"{waiting}/outputs/output.json")
    await submit(broker, storage, after, "sleep", b'{"seconds": 0, "value": 3}')
    await reports.report(after, JobState.DONE)
    assert sheep["s1"].backend.pid == pid  # the same runner throughout


async def test_a_held_job_outlives_its_runner(sheep, broker, storage, reports):
    doomed, waiting = new_id(), new_id()
    await submit(broker, storage, doomed, "sleep", b'{"seconds": 3, "value": 1}')
    await reports.progress(doomed)
    pid = sheep["s1"].backend.pid
    assert pid is not None
    await submit(broker, storage, waiting, "sleep", b'{"seconds": 0, "value": 2}')
    await eventually(partial(held, sheep["s1"], waiting), within=10, every=0.01)

    os.kill(pid, signal.SIGKILL)

    for job_id, value, attempt in ((waiting, 2, 1), (doomed, 1, 2)):
        done = await ended(reports, job_id)
        assert (done.state, done.attempt, done.error) == (JobState.DONE, attempt, None)
        output = await storage.get_bytes(f"{job_id}/outputs/output.json")
        assert output == f'{{"value": {value}}}'.encode()
    assert sheep["s1"].backend.pid not in (None, pid)


async def ended(reports: Listener, job_id: str) -> StatusReport:
    """The job's outcome report, whether it came already or is still to come."""
    for report in reports.seen:
        if report.job_id == job_id and report.state is not None and report.state.terminal:
            return report
    return await reports.report(job_id, JobState.DONE)
