"""Uploading inputs through the gateway, and the size limits of what it accepts."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

import httpx
import pytest
from minio import Minio

from services.common.storage import PART_SIZE
from tests.conftest import delete_namespace
from tests.support.jobs import unbound
from tests.support.polling import eventually
from tests.support.stack import bare_sheep, running_stack

MIB = 1024 * 1024
MAX_UPLOAD = PART_SIZE + MIB  # big enough that the last accepted upload is multipart
MAX_PAYLOAD = 16 * 1024


@pytest.fixture
def limits() -> tuple[int, int]:
    """``(max_upload_bytes, max_payload_bytes)`` of the gateway."""
    return MAX_UPLOAD, MAX_PAYLOAD


@pytest.fixture
async def stack(config, names, limits) -> AsyncIterator[httpx.AsyncClient]:
    config.sheep = {"s1": bare_sheep()}
    config.gateway.max_upload_bytes, config.gateway.max_payload_bytes = limits
    try:
        async with running_stack(config) as client:
            yield client
    finally:
        await delete_namespace(config.broker.url.get_secret_value(), names, list(config.sheep))


async def chunks(total: int, size: int = MIB) -> AsyncIterator[bytes]:
    """``total`` bytes, sent chunked (no Content-Length)."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield bytes([sent // size % 251]) * piece
        sent += piece


def expected(total: int, size: int = MIB) -> bytes:
    return b"".join(bytes([i // size % 251]) * min(size, total - i) for i in range(0, total, size))


async def leftovers(minio_client: Minio, bucket: str, key: str) -> tuple[list[str], list[str]]:
    """Objects at ``key``, and multipart uploads of it still open."""

    def look() -> tuple[list[str], list[str]]:
        objects = [o.object_name for o in minio_client.list_objects(bucket, prefix=key)]
        uploads = minio_client._list_multipart_uploads(bucket, prefix=key).uploads
        return objects, [u.object_name for u in uploads]

    return await asyncio.to_thread(look)


def echo(job_id: str, **extra: object) -> dict:
    return {"job_id": job_id, "model": {"name": "echo", "version": "1"}, **extra}


async def test_an_uploaded_input_queues_the_declared_job(stack, job_id):
    declared = await stack.post("/start-job", json=echo(job_id, inputs=["input.json"]))
    assert declared.status_code == 202
    assert declared.json()["state"] == "accepted"  # waiting for its input
    assert (await stack.get(f"/jobs/{job_id}/status")).json()["state"] == "accepted"

    body = b'{"uploaded": "through the gateway"}'
    uploaded = await stack.put(
        f"/jobs/{job_id}/input/input.json",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json() == {"job_id": job_id, "file": "input.json", "size": len(body)}
    assert uploaded.headers["location"].endswith(f"/jobs/{job_id}/input/input.json")

    done = await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})
    assert done.json()["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).content == body
    stored = await stack.get(uploaded.headers["location"])
    assert stored.content == body
    assert stored.headers["content-type"] == "application/json"


async def test_a_jobs_inputs_and_outputs_are_listed_with_their_links(stack, job_id):
    """The payload kept in job.json is listed among the inputs like a stored one."""
    declared = echo(job_id, payload={"kept": "in job.json"}, inputs=["notes/extra.txt"])
    assert (await stack.post("/start-job", json=declared)).status_code == 202
    put = await stack.put(f"/jobs/{job_id}/input/notes/extra.txt", content=b"twelve bytes")
    assert put.status_code == 201, put.text
    assert (await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})).json()[
        "state"
    ] == "done"

    inputs = await stack.get(f"/jobs/{job_id}/input", params={"list": "true"})
    files = {f["name"]: f for f in inputs.json()["files"]}
    assert sorted(files) == ["input.json", "notes/extra.txt"]
    assert files["notes/extra.txt"]["size"] == 12
    kept = await stack.get(files["input.json"]["url"])
    assert kept.json() == {"kept": "in job.json"}
    assert files["input.json"]["size"] == len(kept.content)
    assert (await stack.get(files["notes/extra.txt"]["url"])).content == b"twelve bytes"

    outputs = await stack.get(f"/jobs/{job_id}/result", params={"list": "true"})
    (output,) = outputs.json()["files"]
    assert output["url"].endswith(f"/jobs/{job_id}/result/output.json")  # no ?list=true in it
    assert (await stack.get(output["url"])).json() == {"kept": "in job.json"}
    # Without list=, the payload itself, as before.
    assert (await stack.get(f"/jobs/{job_id}/input")).json() == {"kept": "in job.json"}


def sleep(job_id: str, seconds: float, **extra: object) -> dict:
    return {"job_id": job_id, "model": {"name": "sleep", "version": "1"}, **extra} | {
        "payload": {"seconds": seconds, "value": job_id}
    }


async def refused_upload(stack: httpx.AsyncClient, job_id: str, state: str) -> None:
    """An upload to a queued job is a 409 naming its state, and changes nothing."""
    before = (await stack.get(f"/jobs/{job_id}/input")).content
    answer = await stack.put(f"/jobs/{job_id}/input/input.json", content=b'{"rewritten": 1}')
    assert answer.status_code == 409, answer.text
    assert answer.json()["state"] == state
    assert f"job {job_id} is {state}" in answer.json()["detail"]
    assert (await stack.get(f"/jobs/{job_id}/input")).content == before


async def test_inputs_cannot_change_once_a_job_is_queued(stack, job_id):
    running, waiting, done = f"{job_id}-running", f"{job_id}-waiting", f"{job_id}-done"
    assert (await stack.post("/start-job", json=sleep(done, 0))).status_code == 202
    await stack.get(f"/jobs/{done}/wait_ready", params={"timeout": 30})
    await refused_upload(stack, done, "done")

    assert (await stack.post("/start-job", json=sleep(running, 30))).status_code == 202
    await eventually(lambda: in_state(stack, running, "running"), within=30)
    await refused_upload(stack, running, "running")
    # Queued behind it on the only sheep, with the input it declared uploaded.
    declared = sleep(waiting, 0, inputs=["input.json"])
    del declared["payload"]
    assert (await stack.post("/start-job", json=declared)).status_code == 202
    body = b'{"seconds": 0, "value": "first"}'
    assert (await stack.put(f"/jobs/{waiting}/input/input.json", content=body)).status_code == 201
    await refused_upload(stack, waiting, "queued")

    await stack.post(f"/jobs/{running}/cancel")
    # Lookups show it cancelled once its sheep has stopped it (the answer to the cancel
    # request at once): an upload is refused meanwhile too, naming the state it is in.
    await eventually(lambda: in_state(stack, running, "cancelled"), within=30)
    await refused_upload(stack, running, "cancelled")
    ended = await stack.get(f"/jobs/{waiting}/wait_ready", params={"timeout": 30})
    assert ended.json()["state"] == "done"
    assert (await stack.get(f"/jobs/{waiting}/result")).json() == {"value": "first"}


async def test_the_status_records_what_the_job_ran_on(stack, job_id, minio_client, test_bucket):
    """Size and ETag of each input as the sheep fetched it: an upload straight to the store
    after the job ran does not change what ran, and is told apart by its ETag."""
    declared = echo(job_id, inputs=["input.json"])
    assert (await stack.post("/start-job", json=declared)).status_code == 202
    body = b'{"ran": "on this"}'
    assert (await stack.put(f"/jobs/{job_id}/input/input.json", content=body)).status_code == 201
    done = (await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})).json()
    assert done["state"] == "done"
    ran_on = {"name": "input.json", "size": len(body), "etag": hashlib.md5(body).hexdigest()}
    assert done["inputs"] == [ran_on]

    later, key = b'{"ran": "on something else"}', f"{job_id}/inputs/input.json"
    put = minio_client.put_object
    await asyncio.to_thread(put, test_bucket, key, io.BytesIO(later), len(later))
    stored = await asyncio.to_thread(minio_client.stat_object, test_bucket, key)
    assert stored.etag != ran_on["etag"]
    assert (await stack.get(f"/jobs/{job_id}/status")).json()["inputs"] == [ran_on]


async def test_a_payload_that_came_with_the_job_is_recorded_too(stack, job_id):
    payload = {"inline": True}
    assert (await stack.post("/start-job", json=echo(job_id, payload=payload))).status_code == 202
    done = (await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})).json()
    sent = (await stack.get(f"/jobs/{job_id}/input")).content
    ran_on = {"name": "input.json", "size": len(sent), "etag": hashlib.md5(sent).hexdigest()}
    assert (done["state"], done["inputs"]) == ("done", [ran_on])


async def in_state(stack: httpx.AsyncClient, job_id: str, state: str) -> bool:
    return (await stack.get(f"/jobs/{job_id}/status")).json()["state"] == state


async def test_a_large_upload_streams_up_to_the_limit(stack, job_id, minio_client, test_bucket):
    uploaded = await stack.put(f"/jobs/{job_id}/input/data/big.bin", content=chunks(MAX_UPLOAD))
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["size"] == MAX_UPLOAD
    response = await asyncio.to_thread(
        minio_client.get_object, test_bucket, f"{job_id}/inputs/data/big.bin"
    )
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected(MAX_UPLOAD)).digest()


async def test_an_upload_past_the_limit_is_413_and_its_parts_are_aborted(
    stack, job_id, minio_client, test_bucket
):
    key = f"{job_id}/inputs/too-big.bin"
    response = await stack.put(f"/jobs/{job_id}/input/too-big.bin", content=chunks(MAX_UPLOAD + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert str(MAX_UPLOAD) in response.json()["detail"]
    assert await leftovers(minio_client, test_bucket, key) == ([], [])


@pytest.mark.parametrize("limits", [(1000, 1000)])
async def test_small_bodies_over_the_limit_are_413_declared_or_chunked(
    stack, job_id, minio_client, test_bucket
):
    small = [b"x" * 600] * 3

    async def chunked() -> AsyncIterator[bytes]:
        for piece in small:
            yield piece

    refused = [
        await stack.put(f"/jobs/{job_id}/input/a.bin", content=b"".join(small)),
        await stack.put(f"/jobs/{job_id}/input/a.bin", content=chunked()),
        await stack.post(
            "/start-job",
            content=b'{"job_id": "%s", "payload": "%s"}' % (job_id.encode(), b"x" * 1800),
            headers={"Content-Type": "application/json"},
        ),
        await stack.post(
            "/start-job", content=chunked(), headers={"Content-Type": "application/json"}
        ),
    ]
    assert [r.status_code for r in refused] == [413] * 4
    assert {r.headers["content-type"] for r in refused} == {"application/problem+json"}
    assert "transfer-encoding" not in refused[0].request.headers
    assert refused[1].request.headers["transfer-encoding"] == "chunked"
    assert await leftovers(minio_client, test_bucket, f"{job_id}/") == ([], [])


async def test_an_upload_through_the_gateway_queues_its_job_without_a_notification(
    stack, config, names, job_id
):
    """The gateway stored the input itself: it queues the job at once, even while no bucket
    notification reaches it."""
    echo = {"name": "echo", "version": "1"}
    declared = {"job_id": job_id, "model": echo, "inputs": ["input.json"]}
    amqp_url = config.broker.url.get_secret_value()
    async with unbound(amqp_url, names.inputs_queue, names.storage_exchange):
        assert (await stack.post("/start-job", json=declared)).status_code == 202
        put = await stack.put(f"/jobs/{job_id}/input/input.json", content=b'{"n": 1}')
        assert put.status_code == 201
        ready = await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 20})
    assert ready.json()["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).content == b'{"n": 1}'
