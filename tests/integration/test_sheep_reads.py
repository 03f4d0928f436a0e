"""What a sheep reads from the store before it runs a job that carries its payload: nothing,
once it has heard every cancellation since the job was declared; the cancel marker otherwise."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from schemas.broker_names import Names
from schemas.job import JobDispatch, JobSpec, ModelRef
from schemas.layout import cancel_key
from schemas.status import JobState
from services.common.broker import Broker
from services.common.storage import ObjectMissing, Storage, StoredObject
from services.sheep.cancellations import CLOCK_MARGIN
from services.sheep.service import Sheep
from tests.support.jobs import Listener, started


class CountingStorage(Storage):
    """The real store, counting the listings a sheep makes."""

    listings: list[str]

    async def list(self, prefix: str) -> list[StoredObject]:
        self.listings.append(prefix)
        return await super().list(prefix)


@pytest.fixture
def counting(configured) -> CountingStorage:
    storage = CountingStorage(configured.storage)
    storage.listings = []
    return storage


async def queue_carrying(broker: Broker, job_id: str, payload: str) -> None:
    """What the gateway does for a job that declares no inputs: one message, no input object."""
    now = datetime.now(UTC)
    spec = JobSpec(
        job_id=job_id,
        model=ModelRef(name="echo", version="1"),
        sheep_id="s1",
        request_digest="0" * 64,
        declared_at=now,
        payload=payload,
    )
    dispatch = JobDispatch(job=spec, queued_at=now)
    await broker.publish(broker.names.jobs_exchange, Names.job_routing_key("s1"), dispatch)


async def test_a_job_declared_while_the_sheep_listens_is_run_without_reading_the_store(
    configured, broker, counting, storage: Storage, reports: Listener, job_id
):
    async with started(Sheep("s1", configured, broker, counting)):
        await asyncio.sleep(CLOCK_MARGIN.total_seconds() + 0.1)  # listening long enough
        await queue_carrying(broker, job_id, '{"carried": true}')
        await reports.report(job_id, JobState.DONE)
    assert counting.listings == []
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"carried": true}'


async def test_a_job_cancelled_before_its_sheep_listened_never_runs(
    configured, broker, counting, storage: Storage, reports: Listener, job_id
):
    """The gateway's marker is all there is to find: the sheep was not there to hear the
    cancellation."""
    await queue_carrying(broker, job_id, "{}")
    await storage.put_bytes(cancel_key(job_id), b"{}", "application/json")
    async with started(Sheep("s1", configured, broker, counting)):
        cancelled = await reports.report(job_id, JobState.CANCELLED)
    assert cancelled.error is not None and "before it started" in cancelled.error.message
    assert reports.states(job_id) == [JobState.CANCELLED]
    assert counting.listings == [f"{job_id}/"]
    with pytest.raises(ObjectMissing):
        await storage.get_bytes(f"{job_id}/outputs/output.json")
