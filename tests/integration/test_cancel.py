"""Cancelling jobs through the gateway: queued jobs never run, running ones stop within 2 s,
ended ones stay as they are."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest

from schemas.config import Config
from services.common.storage import ObjectMissing, Storage
from tests.support.polling import eventually
from tests.support.stack import bare_sheep, running_stack


@pytest.fixture
async def client(config: Config, broker) -> AsyncIterator[httpx.AsyncClient]:
    config.sheep = {"s1": bare_sheep()}
    async with running_stack(config) as client:
        yield client


def sleep_job(job_id: str, seconds: float) -> dict:
    return {
        "job_id": job_id,
        "model": {"name": "sleep", "version": "1"},
        "sheep_id": "s1",
        "payload": {"seconds": seconds, "value": job_id},
    }


async def state_of(client: httpx.AsyncClient, job_id: str) -> str:
    return (await client.get(f"/jobs/{job_id}/status")).json()["state"]


async def one_more_done(client: httpx.AsyncClient, job_id: str) -> None:
    """Run a 0-second job to done after everything submitted so far: the one sheep takes its
    jobs in order, and the notifier applies reports in order, so whatever an earlier job
    could still have done (wrongly) has happened by then."""
    after = f"{job_id}-after"
    assert (await client.post("/start-job", json=sleep_job(after, 0))).status_code == 202
    done = (await client.get(f"/jobs/{after}/wait_ready", params={"timeout": 20})).json()
    assert done["state"] == "done"


async def until_state(client: httpx.AsyncClient, job_id: str, state: str) -> None:
    async def reached() -> bool:
        return await state_of(client, job_id) == state

    await eventually(reached, within=20)


def runner_pid(config: Config) -> int:
    return int((config.data_root / "s1" / ".runner" / "runner.pid").read_text())


async def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("how", ["post", "delete"])
async def test_a_running_job_is_stopped_within_two_seconds(client, config, job_id, how):
    assert (await client.post("/start-job", json=sleep_job(job_id, 60))).status_code == 202
    await until_state(client, job_id, "running")
    pid = runner_pid(config)

    started = asyncio.get_running_loop().time()
    if how == "post":
        answer = await client.post(f"/jobs/{job_id}/cancel")
    else:
        answer = await client.delete(f"/jobs/{job_id}")
    assert answer.status_code == 202
    assert answer.json()["state"] == "cancelled"
    await eventually(partial(gone, pid), within=2, every=0.02)
    stopped_after = asyncio.get_running_loop().time() - started

    ended = (await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 10})).json()
    assert ended["state"] == "cancelled"
    assert stopped_after < 2
    # The sheep is free again, with a fresh runner.
    other = f"{job_id}-next"
    assert (await client.post("/start-job", json=sleep_job(other, 0))).status_code == 202
    done = (await client.get(f"/jobs/{other}/wait_ready", params={"timeout": 20})).json()
    assert done["state"] == "done"


async def test_a_queued_job_never_runs(client, config, job_id):
    busy, queued = f"{job_id}-busy", f"{job_id}-queued"
    await client.post("/start-job", json=sleep_job(busy, 60))
    await until_state(client, busy, "running")
    await client.post("/start-job", json=sleep_job(queued, 0))
    await until_state(client, queued, "queued")

    answer = await client.post(f"/jobs/{queued}/cancel")
    assert answer.status_code == 202
    await client.post(f"/jobs/{busy}/cancel")  # frees the sheep, which now sees `queued`

    for job in (busy, queued):
        ended = (await client.get(f"/jobs/{job}/wait_ready", params={"timeout": 10})).json()
        assert ended["state"] == "cancelled"
    await one_more_done(client, job_id)
    status = (await client.get(f"/jobs/{queued}/status")).json()
    assert status["state"] == "cancelled"
    assert status["started_at"] is None
    with pytest.raises(ObjectMissing):
        await Storage(config.storage).get_bytes(f"{queued}/outputs/output.json")


async def test_cancelling_an_ended_job_changes_nothing(client, job_id):
    await client.post("/start-job", json=sleep_job(job_id, 0))
    done = (await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 20})).json()
    assert done["state"] == "done"

    answer = await client.post(f"/jobs/{job_id}/cancel")
    assert answer.status_code == 200
    assert answer.json() == done
    assert (await client.delete(f"/jobs/{job_id}")).json() == done
    await one_more_done(client, job_id)
    assert (await client.get(f"/jobs/{job_id}/status")).json() == done


async def test_cancelling_an_unknown_job_is_a_404(client, job_id):
    answer = await client.post(f"/jobs/{job_id}/cancel")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert job_id in answer.json()["detail"]


async def test_a_job_cancelled_while_waiting_for_inputs_never_runs(client, config, job_id):
    declared = await client.post(
        "/start-job",
        json={"job_id": job_id, "model": {"name": "echo", "version": "1"}, "inputs": ["a.json"]},
    )
    assert declared.status_code == 202
    assert (await client.post(f"/jobs/{job_id}/cancel")).json()["state"] == "cancelled"
    storage = Storage(config.storage)
    await storage.put_bytes(f"{job_id}/inputs/a.json", b"[1]", "application/json")
    # The same way in, afterwards: once this job is done, the upload before it has been seen.
    after = {"job_id": f"{job_id}-after", "model": {"name": "echo", "version": "1"}}
    assert (await client.post("/start-job", json=after | {"inputs": ["input.json"]})).is_success
    await storage.put_bytes(f"{job_id}-after/inputs/input.json", b"[2]", "application/json")
    ready = await client.get(f"/jobs/{job_id}-after/wait_ready", params={"timeout": 20})
    assert ready.json()["state"] == "done"
    status = (await client.get(f"/jobs/{job_id}/status")).json()
    assert (status["state"], status["started_at"]) == ("cancelled", None)
