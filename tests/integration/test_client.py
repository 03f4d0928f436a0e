"""The Python SDK (``client/``, ``shepherd_client``) against the real stack: every method of a
job, the three ways of giving inputs, ``map`` with failures, and the blocking client.

The blocking :class:`Client` runs its own event loop, so its tests run it in a thread."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shepherd_client import (
    AsyncClient,
    Client,
    InvalidRequest,
    JobFailed,
    MapItemFailed,
    NotFound,
)
from tests.support.polling import eventually
from tests.support.stack import MODELS, bare_sheep

SERVER_MADE = re.compile(r"job-[0-9a-f]{32}")


TICKER = (
    "import time\n"
    "from runner import JsonRunner\n\n"
    "class Ticker(JsonRunner):\n"
    "    def predict(self, ticks):\n"
    "        for n in range(ticks):\n"
    "            print(f'tick {n}', flush=True)\n"
    "            time.sleep(0.3)\n"
    "        return ticks\n"
)
"""Prints a line every 0.3 s, ``payload`` times."""


@pytest.fixture
def config(config, tmp_path):
    """Two sheep (map's jobs run side by side), with the example models and ``ticker``."""
    models = tmp_path / "models"
    (models / "ticker" / "1").mkdir(parents=True)
    (models / "ticker" / "1" / "shepherd-runner.yaml").write_text("runner: ticker:Ticker\n")
    (models / "ticker" / "1" / "ticker.py").write_text(TICKER)
    for example in MODELS.iterdir():
        if example.is_dir():
            (models / example.name).symlink_to(example)
    config.sheep = {
        "s1": bare_sheep(working_directory=models),
        "s2": bare_sheep(working_directory=models),
    }
    return config


@pytest.fixture
async def client(stack) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(str(stack.base_url)) as client:
        yield client


async def test_a_job_submitted_with_a_payload_is_followed_to_its_result(client):
    job = await client.submit("echo:1", {"greeting": "hello"})
    assert SERVER_MADE.fullmatch(job.id)
    events = [event async for event in job.events()]
    assert events[0].kind == "status" and events[-1].status.state == "done", events
    status = await job.wait(timeout=30)
    assert (status.state, status.terminal, status.error) == ("done", True, None)
    assert status.usage is not None and status.usage["input_bytes"] > 0
    assert await job.result() == {"greeting": "hello"}
    again = client.job(job.id)  # found by its id
    assert (await again.status()).state == "done"
    logs = await again.logs()
    assert logs.stdout is not None and logs.stderr is not None


async def test_inputs_come_as_a_directory_as_files_or_as_names_uploaded_elsewhere(
    client, tmp_path, storage
):
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha")
    (folder / "nested" / "b.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    from_folder = await client.submit("copy:1", files=folder)
    loose = tmp_path / "c.txt"
    loose.write_bytes(b"gamma")
    from_files = await client.submit("copy:1", files=[loose, folder / "a.txt"])
    elsewhere = await client.submit("copy:1", inputs=["d.txt"])  # uploaded straight to the store
    await storage.put_bytes(f"{elsewhere.id}/inputs/d.txt", b"delta")

    downloaded = await from_folder.download(tmp_path / "out", timeout=30)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in downloaded) == [
        "a.txt",
        "nested/b.bin",
    ]
    assert (tmp_path / "out" / "nested" / "b.bin").read_bytes() == (
        folder / "nested" / "b.bin"
    ).read_bytes()
    await from_files.download(tmp_path / "files", timeout=30)
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["a.txt", "c.txt"]
    await elsewhere.download(tmp_path / "elsewhere", timeout=30)
    assert (tmp_path / "elsewhere" / "d.txt").read_bytes() == b"delta"


async def test_a_failed_job_raises_its_error_and_a_cancelled_one_says_so(client, job_id):
    failed = await client.submit("fail:1", {"x": 1})
    with pytest.raises(JobFailed) as caught:
        await failed.result(timeout=30)
    assert caught.value.state == "failed" and caught.value.job_id == failed.id
    assert caught.value.message and caught.value.traceback

    sleeping = await client.submit(("sleep", "1"), {"seconds": 30}, job_id=job_id)
    assert sleeping.id == job_id
    async for event in sleeping.events():
        if event.kind == "running":
            break
    assert (await sleeping.cancel()).state == "cancelled"
    with pytest.raises(JobFailed) as cancelled:
        await sleeping.result(timeout=30)
    assert cancelled.value.state == "cancelled"


async def test_live_output_is_followed_to_the_jobs_end(client):
    job = await client.submit("ticker:1", 4)
    printed = "".join([line.text async for line in job.follow_logs() if line.stream == "stdout"])
    assert printed == "".join(f"tick {n}\n" for n in range(4))
    assert (await job.status()).state == "done"
    assert (await job.logs(stream="stdout")).stdout == printed
    assert (await job.logs(tail=1)).stdout == "tick 3\n"


async def test_errors_are_typed_and_carry_the_problem(client):
    with pytest.raises(NotFound) as unknown:
        await client.job("no-such-job").status()
    assert unknown.value.status == 404 and "no-such-job" in unknown.value.problem["detail"]
    with pytest.raises(InvalidRequest) as invalid:
        await client.submit("echo:1", {"x": 1}, sheep="nobody")
    assert invalid.value.status == 422 and invalid.value.problem["errors"]


async def test_map_returns_results_in_input_order_with_failures_where_they_were(client):
    pairs = [(base % 7, -1 if base % 97 == 0 else base % 5) for base in range(300)]
    results = await client.map(
        "power:1", pairs, concurrency=16, progress=False, return_exceptions=True
    )
    assert len(results) == 300
    for (base, exponent), result in zip(pairs, results, strict=True):
        if exponent < 0:
            assert isinstance(result, JobFailed) and "negative" in result.message
        else:
            assert result == base**exponent

    with pytest.raises(MapItemFailed) as failed:
        await client.map("power:1", [(2, 1), (2, -1), (2, 2)], concurrency=1, progress=False)
    assert failed.value.index == 1 and isinstance(failed.value.failure, JobFailed)


async def test_a_cancelled_map_cancels_the_jobs_it_had_in_flight(client):
    submitted: list[str] = []
    all_in_flight = asyncio.Event()
    original = client.submit

    async def recorded(model, payload=None, **options):
        job = await original(model, payload, **options)
        submitted.append(job.id)
        if len(submitted) == 4:
            all_in_flight.set()
        return job

    client.submit = recorded
    mapping = asyncio.create_task(
        client.map("sleep:1", [{"seconds": 30}] * 8, concurrency=4, progress=False)
    )
    async with asyncio.timeout(30):
        await all_in_flight.wait()
    mapping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await mapping
    states = {(await client.job(job_id).wait(timeout=30)).state for job_id in submitted}
    assert states == {"cancelled"}, states
    assert len(submitted) == 4  # the rest were never submitted


async def test_jobs_are_listed_newest_first_filtered_and_paged(client):
    done = [await client.submit("echo:1", n) for n in range(3)]
    failed = await client.submit("fail:1", {})
    for job in (*done, failed):
        await job.wait(timeout=30)

    async def listed(**filters: object) -> list[str]:
        return [job.job_id async for job in client.jobs(**filters)]

    async def all_ended() -> bool:
        return len(await listed(state=["done", "failed"])) == 4

    await eventually(all_ended, within=20)
    newest_first = [failed.id, *(job.id for job in reversed(done))]
    assert await listed() == newest_first
    assert await listed(state="failed") == [failed.id]
    assert await listed(model="echo") == newest_first[1:]
    assert await listed(model=("fail", "1")) == [failed.id]
    assert await listed(since=datetime.now(UTC)) == []
    assert await listed(limit=2) == newest_first[:2]
    client_pages = [job.job_id async for job in client.jobs(limit=None)]
    assert client_pages == newest_first
    [summary] = [job async for job in client.jobs(state="failed")]
    assert summary.error is not None and summary.error["type"] == "ValueError"


async def test_the_blocking_client_does_the_same(stack, tmp_path):
    def use() -> tuple[object, list[int], list[Path], str]:
        with Client(str(stack.base_url)) as client:
            job = client.submit("echo:1", [1, 2, 3])
            result = job.result(timeout=30)
            squares = client.map("power:1", [(n, 2) for n in range(20)], progress=False)
            files = job.download(tmp_path / "out")
            kinds = [event.kind for event in client.job(job.id).events()]
            deadline = time.monotonic() + 20  # the listing follows the events
            while job.id not in (listed := [j.job_id for j in client.jobs(model="echo")]):
                assert time.monotonic() < deadline, listed
                time.sleep(0.1)
            return result, squares, files, kinds[-1]

    result, squares, files, last = await asyncio.to_thread(use)
    assert result == [1, 2, 3]
    assert squares == [n * n for n in range(20)]
    assert [f.name for f in files] == ["output.json"]
    assert last == "status"  # the job had ended: its stream is its final status
