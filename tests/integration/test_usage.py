"""Accounting for every job: a done, a failed and a cancelled job each end with a ``usage``
object, the same in their status, their final CloudEvent and their callback webhook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from schemas.config import NotifierConfig
from tests.conftest import serving
from tests.support.polling import eventually
from tests.support.receiver import Receiver
from tests.support.stack import bare_sheep
from tests.support.webhooks import secret

CALLBACK_SECRET = secret()
PAYLOAD = {"words": ["usage"] * 200}
MODELS = {
    "done": {"name": "echo", "version": "1"},
    "failed": {"name": "fail", "version": "1"},
    "cancelled": {"name": "sleep", "version": "1"},
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        yield receiver


async def final_event(subscriber, job_id: str) -> dict[str, Any]:
    while True:
        message = await subscriber.get()
        event = json.loads(message.body)
        if event["subject"] == job_id and event["data"]["state"] in MODELS:
            return event


async def test_done_failed_and_cancelled_jobs_carry_the_same_usage_everywhere(
    config, names, broker, receiver, subscriber, job_id
):
    """``broker`` declares the namespace before ``subscriber`` binds to it."""
    config.sheep = {"s1": bare_sheep()}
    config.notifier = NotifierConfig(
        callback_secret=SecretStr(CALLBACK_SECRET), allow_private_targets=True
    )
    usage: dict[str, dict[str, Any]] = {}
    async with serving(config, names) as client:
        for state, model in MODELS.items():
            job = f"{job_id}-{state}"
            payload = {"seconds": 60, "value": 1} if state == "cancelled" else PAYLOAD
            request = {
                "job_id": job,
                "model": model,
                "payload": payload,
                "callback_url": receiver.url(f"/{job}"),
            }
            assert (await client.post("/start-job", json=request)).status_code == 202
            if state == "cancelled":  # once it runs: its sheep stops it, and tells its usage

                async def running(job: str = job) -> bool:
                    return (await client.get(f"/jobs/{job}/status")).json()["state"] == "running"

                await eventually(running, within=30)
                assert (await client.post(f"/jobs/{job}/cancel")).status_code == 202
            ready = await client.get(f"/jobs/{job}/wait_ready", params={"timeout": 30})
            assert ready.json()["state"] == state
            usage[state] = ready.json()["usage"]
            event = await final_event(subscriber, job)
            assert event["data"]["usage"] == usage[state], state
            delivery = await receiver.next(f"/{job}")
            webhook = Webhook(CALLBACK_SECRET).verify(delivery.body, delivery.headers)
            assert webhook["data"]["usage"] == usage[state], state
        result = await client.get(f"/jobs/{job_id}-done/result")

    done = usage["done"]
    assert done["wall_seconds"] > 0
    assert done["cpu_user_seconds"] >= 0 and done["cpu_system_seconds"] >= 0  # ticks: 0 when quick
    assert done["max_rss_bytes"] > 1024 * 1024  # the interpreter and the model, resident
    assert done["input_bytes"] == len(json.dumps(PAYLOAD, separators=(",", ":")))
    assert done["output_bytes"] == len(result.content) > 0
    assert done["gpu_seconds"] is None and done["max_gpu_memory_bytes"] is None  # no devices

    failed = usage["failed"]  # as far as it got: the runner counted it, nothing was written
    assert failed["cpu_user_seconds"] is not None and failed["max_rss_bytes"] is not None
    assert failed["input_bytes"] == done["input_bytes"] and failed["output_bytes"] == 0

    cancelled = usage["cancelled"]  # stopped on its runner: what the sheep could measure
    assert cancelled["wall_seconds"] > 0 and cancelled["input_bytes"] > 0
    assert cancelled["cpu_user_seconds"] is None and cancelled["max_rss_bytes"] is None
