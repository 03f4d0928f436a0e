"""``GET /jobs``: every job, newest first, filtered and paged, read from the gateway's job
index, which follows the job events, survives a restart and is rebuilt when removed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aio_pika
import httpx
import pytest

from schemas.config import Config
from tests.conftest import serving
from tests.support.polling import eventually
from tests.support.stack import bare_sheep, running_stack

ECHO = {"name": "echo", "version": "1"}
FAIL = {"name": "fail", "version": "1"}


@pytest.fixture
def two_sheep(config: Config) -> Config:
    config.sheep = {"s1": bare_sheep(), "s2": bare_sheep()}
    return config


async def run_job(client: httpx.AsyncClient, job_id: str, model: dict, sheep: str) -> None:
    body = {"job_id": job_id, "model": model, "sheep_id": sheep, "payload": {"id": job_id}}
    assert (await client.post("/start-job", json=body)).status_code == 202
    answer = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})
    assert answer.json()["state"] in ("done", "failed"), answer.text


async def listed(client: httpx.AsyncClient, **params: object) -> list[dict]:
    answer = await client.get("/jobs", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["jobs"]


async def until_listed(client: httpx.AsyncClient, job_ids: set[str], **params: object) -> None:
    """Until the listing shows every one of ``job_ids`` ended (it follows the events)."""

    async def there() -> bool:
        ended = {
            job["job_id"]
            for job in await listed(client, limit=1000, **params)
            if job["state"] in ("done", "failed")
        }
        return job_ids <= ended

    await eventually(there, within=20)


async def test_jobs_are_listed_newest_first_filtered_and_paged(two_sheep, names, job_id):
    config = two_sheep
    plan = [
        (f"{job_id}-0", ECHO, "s1"),
        (f"{job_id}-1", FAIL, "s2"),
        (f"{job_id}-2", ECHO, "s2"),
        (f"{job_id}-3", ECHO, "s1"),
    ]
    async with serving(config, names) as client:
        before = datetime.now(UTC)
        for one in plan:
            await run_job(client, *one)
        ids = [one[0] for one in plan]
        await until_listed(client, set(ids))

        everything = await listed(client)
        assert [job["job_id"] for job in everything] == ids[::-1]
        failed = everything[ids[::-1].index(f"{job_id}-1")]
        assert failed["state"] == "failed" and failed["error"]["type"] == "ValueError"
        assert failed["model"] == FAIL and failed["sheep_id"] == "s2"

        assert [j["job_id"] for j in await listed(client, state="failed")] == [f"{job_id}-1"]
        assert [j["job_id"] for j in await listed(client, state="done,failed", sheep="s2")] == [
            f"{job_id}-2",
            f"{job_id}-1",
        ]
        assert len(await listed(client, model="echo")) == 3
        assert len(await listed(client, model="echo:1", sheep="s1")) == 2
        assert await listed(client, model="echo:2") == []
        assert await listed(client, since=datetime.now(UTC).isoformat()) == []
        assert len(await listed(client, since=before.isoformat())) == 4

        pages, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/jobs", params=params)).json()
            pages.append([job["job_id"] for job in page["jobs"]])
            if (cursor := page["next_cursor"]) is None:
                break
        assert pages == [ids[:0:-1], ids[:1]]

        async def counts(**params: object) -> dict:
            answer = await client.get("/job-counts", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

        everyone = await counts()
        assert everyone["total"] == 4 and everyone["counts"]["done"] == 3
        assert everyone["counts"]["failed"] == 1 and everyone["counts"]["queued"] == 0
        assert (await counts(sheep="s2"))["counts"] == {
            "accepted": 0,
            "queued": 0,
            "running": 0,
            "done": 1,
            "failed": 1,
            "cancelled": 0,
        }
        assert (await counts(model="echo:1", since=before.isoformat()))["total"] == 3
        assert (await counts(since=datetime.now(UTC).isoformat()))["total"] == 0
        refused = await client.get("/job-counts", params={"state": "done"})
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "state"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=finished", "state.0"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("since=yesterday", "since"),
        ("since=2026-12-01T00:00:00", "since"),  # no time zone
        ("model=echo:1:2", "model"),
        ("status=done", "status"),  # a typo filters nothing: refused
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
    ],
)
async def test_a_bad_listing_query_is_refused_naming_the_parameter(stack, query, field):
    answer = await stack.get(f"/jobs?{query}")
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in answer.json()["errors"]]


async def test_the_index_survives_a_restart_and_is_rebuilt_when_removed(config, names, job_id):
    config.sheep = {"s1": bare_sheep()}
    async with running_stack(config) as client:  # the last one deletes the namespace
        await run_job(client, f"{job_id}-a", ECHO, "s1")
        await until_listed(client, {f"{job_id}-a"})
    index = config.job_index_path()
    assert index.exists()

    async with running_stack(config) as client:  # from the file, then onwards from its offset
        assert [j["job_id"] for j in await listed(client)] == [f"{job_id}-a"]
        await run_job(client, f"{job_id}-b", ECHO, "s1")
        await until_listed(client, {f"{job_id}-a", f"{job_id}-b"})

    for file in index.parent.glob(index.name + "*"):  # with SQLite's -wal and -shm
        file.unlink()
    async with serving(config, names) as client:  # rebuilt from the event history
        await until_listed(client, {f"{job_id}-a", f"{job_id}-b"})
        assert [j["job_id"] for j in await listed(client)] == [f"{job_id}-b", f"{job_id}-a"]


async def test_a_forged_event_does_not_stop_the_listing(stack, servers, names, job_id):
    async with await aio_pika.connect(servers.amqp_url) as connection:
        channel = await connection.channel()
        events = await channel.get_exchange(names.events_exchange)
        await events.publish(aio_pika.Message(b'{"not": "an event"}'), "job.done")
    await asyncio.sleep(0.2)
    await run_job(stack, job_id, ECHO, "s1")
    await until_listed(stack, {job_id})
