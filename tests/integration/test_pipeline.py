"""The pipeline end to end: gateway -> RabbitMQ -> bare sheep -> runner -> MinIO -> notifier."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections import Counter
from datetime import UTC, datetime

import aio_pika
import pytest

from schemas.job import JobRequest, JobSpec
from services.common.history import EventHistory
from services.common.lookup import StatusLookup
from services.common.storage import Storage
from services.gateway.intake import Declared, Intake
from tests.support.polling import eventually
from tests.support.stack import bare_sheep


@pytest.fixture
def config(config):
    """Two sheep, so that pool jobs spread."""
    config.sheep = {"s1": bare_sheep(), "s2": bare_sheep()}
    return config


def echo(job_id: str, **extra) -> dict:
    return {"job_id": job_id, "model": {"name": "echo", "version": "1"}, **extra}


async def wait_done(client, job_id: str, seconds: float = 30) -> dict:
    response = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": seconds})
    assert response.status_code == 200, response.text
    return response.json()


async def put(minio_client, bucket: str, key: str, data: bytes) -> None:
    await asyncio.to_thread(
        minio_client.put_object,
        bucket,
        key,
        io.BytesIO(data),
        len(data),
        content_type="application/json",
    )


async def test_inline_payload_runs_and_its_result_is_the_echo(stack, job_id):
    submitted = await stack.post("/start-job", json=echo(job_id, payload={"x": [1, 2, 3]}))
    assert submitted.status_code == 202
    assert submitted.json()["links"]["status"].endswith(f"/jobs/{job_id}/status")

    status = await wait_done(stack, job_id)
    assert status["state"] == "done"
    assert status["attempt"] == 1
    assert status["model"] == {"name": "echo", "version": "1"}
    for stamp in ("accepted_at", "enqueued_at", "started_at", "finished_at"):
        assert status[stamp], stamp

    result = await stack.get(f"/jobs/{job_id}/result")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.content == b'{"x":[1,2,3]}'
    assert (await stack.get(f"/jobs/{job_id}/result/output.json")).content == result.content
    assert (await stack.get(f"/jobs/{job_id}/input")).content == b'{"x":[1,2,3]}'
    assert (await stack.get(f"/jobs/{job_id}/ready")).json() == {"ready": True, "state": "done"}


async def test_identical_repeat_is_200_and_a_different_request_is_409(stack, job_id):
    assert (await stack.post("/start-job", json=echo(job_id, payload="a"))).status_code == 202
    assert (await stack.post("/start-job", json=echo(job_id, payload="a"))).status_code == 200
    conflict = await stack.post("/start-job", json=echo(job_id, payload="b"))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert job_id in conflict.json()["detail"]
    await wait_done(stack, job_id)
    assert (await stack.get(f"/jobs/{job_id}/result")).content == b"a"


async def test_a_repeat_queues_a_job_whose_gateway_died_before_queueing_it(
    stack, config, minio_client, test_bucket, job_id
):
    """The gateway wrote job.json and died before RabbitMQ confirmed the job: the client,
    never answered, repeats the declaration, and the repeat queues the job."""
    request = JobRequest.model_validate(echo(job_id, payload={"n": 1}))
    spec = JobSpec.from_request(request, datetime.now(UTC), config.gateway.dispatch_payload_bytes)
    await put(minio_client, test_bucket, f"{job_id}/job.json", spec.model_dump_json().encode())
    repeat = await stack.post("/start-job", json=echo(job_id, payload={"n": 1}))
    assert repeat.status_code == 200 and repeat.json()["state"] == "queued"
    assert (await wait_done(stack, job_id))["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).json() == {"n": 1}
    # A repeat of a job that ended queues nothing.
    again = await stack.post("/start-job", json=echo(job_id, payload={"n": 1}))
    assert again.status_code == 200 and again.json()["state"] == "done"


async def test_a_repeat_through_another_gateway_leaves_a_queued_job_be(
    stack, config, broker, names, job_id
):
    """A gateway that did not queue a job (another one, or itself before a restart) learns
    from the job events that it is queued, and does not queue it a second time."""
    busy, waiting = f"{job_id}-busy", f"{job_id}-waits"
    sleep = {"name": "sleep", "version": "1"}
    for one in (busy, waiting):
        body = {"job_id": one, "model": sleep, "sheep_id": "s1", "payload": {"seconds": 3}}
        assert (await stack.post("/start-job", json=body)).status_code == 202
    storage = Storage(config.storage)
    lookup = StatusLookup(storage, EventHistory(config.broker, names), names.namespace)
    await lookup.start()
    try:

        async def seen_queued() -> bool:
            return lookup.queued(waiting)

        await eventually(seen_queued, within=10)
        other = Intake(config, broker, storage, queued_elsewhere=lookup.queued)
        repeat = JobRequest(job_id=waiting, model=sleep, sheep_id="s1", payload={"seconds": 3})
        declaration = await other.declare(repeat, "http")
    finally:
        await lookup.stop()
    assert declaration.outcome is Declared.REPEATED and not declaration.queued
    for one in (busy, waiting):
        await stack.post(f"/jobs/{one}/cancel")


async def test_a_small_payload_is_kept_in_the_job_record(stack, minio_client, test_bucket, job_id):
    """Not stored under inputs/ (which would cost a notification), and the job's input all
    the same: for the runner and for GET /jobs/{id}/input."""
    assert (await stack.post("/start-job", json=echo(job_id, payload="[1]"))).status_code == 202
    assert (await wait_done(stack, job_id))["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).content == b"[1]"
    assert (await stack.get(f"/jobs/{job_id}/input")).content == b"[1]"
    stored = await asyncio.to_thread(
        lambda: [o.object_name for o in minio_client.list_objects(test_bucket, f"{job_id}/", True)]
    )
    assert f"{job_id}/inputs/input.json" not in stored


async def test_seed_flow_inputs_uploaded_first(stack, minio_client, test_bucket, job_id):
    body = b'{"uploaded": "first"}'
    await put(minio_client, test_bucket, f"{job_id}/inputs/input.json", body)
    assert (await stack.post("/start-job", json=echo(job_id))).status_code == 202
    assert (await wait_done(stack, job_id))["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).content == body


async def test_declared_inputs_queue_the_job_when_uploaded(
    stack, minio_client, test_bucket, job_id
):
    declared = await stack.post("/start-job", json=echo(job_id, inputs=["input.json"]))
    assert declared.status_code == 202
    status = (await stack.get(f"/jobs/{job_id}/status")).json()
    assert status["state"] == "accepted"
    assert status["missing_inputs"] == ["input.json"]
    waiting = await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 0.5})
    assert waiting.status_code == 202

    await put(minio_client, test_bucket, f"{job_id}/inputs/input.json", b'{"late": true}')
    assert (await wait_done(stack, job_id))["state"] == "done"
    assert (await stack.get(f"/jobs/{job_id}/result")).content == b'{"late": true}'


async def test_declaration_and_upload_racing_run_each_job_exactly_once(
    stack, config, names, minio_client, test_bucket
):
    connection = await aio_pika.connect(config.broker.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        started = await channel.declare_queue(exclusive=True)
        await started.bind(names.events_exchange, "status.#")
        runs: Counter[str] = Counter()

        async def count(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            # A run is reported running, or (a quick one) by an outcome saying it started.
            report = json.loads(message.body)
            if report["state"] == "running" or report.get("started_at"):
                runs[report["job_id"]] += 1

        await started.consume(count, no_ack=True)

        job_ids = [f"race-{uuid.uuid4().hex[:10]}" for _ in range(40)]

        async def race(job_id: str) -> None:
            body = json.dumps({"job": job_id}).encode()
            await asyncio.gather(
                stack.post("/start-job", json=echo(job_id, inputs=["input.json"])),
                put(minio_client, test_bucket, f"{job_id}/inputs/input.json", body),
            )

        await asyncio.gather(*(race(j) for j in job_ids))
        statuses = await asyncio.gather(*(wait_done(stack, j, 60) for j in job_ids))
        assert {s["state"] for s in statuses} == {"done"}
        # A second copy of any of them would be queued before this job, and the one sheep
        # takes the pool's jobs in order: once it is done, late duplicates have shown up.
        last = f"race-{uuid.uuid4().hex[:10]}"
        await race(last)
        assert (await wait_done(stack, last, 60))["state"] == "done"
        assert runs == Counter({j: 1 for j in [*job_ids, last]})


async def test_jobs_without_a_sheep_go_to_whichever_sheep_is_idle(stack, job_id):
    sleeper = f"{job_id}-sleep"
    await stack.post(
        "/start-job",
        json={
            "job_id": sleeper,
            "sheep_id": "s1",
            "model": {"name": "sleep", "version": "1"},
            "payload": {"seconds": 3, "value": 1},
        },
    )
    await stack.post("/start-job", json=echo(job_id, payload={"pool": True}))
    status = await wait_done(stack, job_id, 10)
    assert status["state"] == "done"
    assert status["sheep_id"] == "s2"  # s1 was busy
    assert (await wait_done(stack, sleeper))["sheep_id"] == "s1"


async def test_failed_job_reports_the_error_and_the_sheep_keeps_serving(stack, job_id):
    failing = f"{job_id}-fail"
    await stack.post(
        "/start-job",
        json={
            "job_id": failing,
            "sheep_id": "s1",
            "model": {"name": "fail", "version": "1"},
            "payload": {},
        },
    )
    status = await wait_done(stack, failing)
    assert status["state"] == "failed"
    assert status["error"]["type"] == "ValueError"
    assert status["error"]["message"] == "requested failure"
    assert "Traceback" in status["error"]["traceback"]
    result = await stack.get(f"/jobs/{failing}/result")
    assert result.status_code == 409
    assert result.json()["error"]["type"] == "ValueError"

    await stack.post("/start-job", json=echo(job_id, sheep_id="s1", payload=1))
    assert (await wait_done(stack, job_id))["state"] == "done"


async def test_unknown_model_fails_naming_it(stack, job_id):
    missing = f"{job_id}-missing"
    await stack.post(
        "/start-job",
        json={
            "job_id": missing,
            "sheep_id": "s1",
            "payload": 1,
            "model": {"name": "nosuchmodel", "version": "7"},
        },
    )
    status = await wait_done(stack, missing)
    assert status["state"] == "failed"
    assert "nosuchmodel" in status["error"]["message"]
    assert "7" in status["error"]["message"]
    await stack.post("/start-job", json=echo(job_id, sheep_id="s1", payload=1))
    assert (await wait_done(stack, job_id))["state"] == "done"


async def test_real_model_classifies_iris_rows(stack, job_id):
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    await stack.post(
        "/start-job",
        json={
            "job_id": job_id,
            "payload": {"rows": rows},
            "model": {"name": "iris", "version": "1"},
        },
    )
    assert (await wait_done(stack, job_id, 60))["state"] == "done"
    result = (await stack.get(f"/jobs/{job_id}/result")).json()
    assert result["predictions"] == ["setosa", "virginica", "versicolor"]


async def test_bad_requests_get_clear_problems(stack, config, job_id):
    cases = [
        (dict(content=b'{"job_id": ', headers={"content-type": "application/json"}), 400),
        (dict(content=b"job_id=x", headers={"content-type": "text/plain"}), 415),
        (dict(json=echo("../etc", payload=1)), 422),
        (dict(json=echo(job_id, sheep_id="nosuchsheep", payload=1)), 422),
        (dict(json={**echo(job_id), "colour": "red"}), 422),
        (dict(json=echo(job_id, payload="x" * (config.gateway.max_payload_bytes + 1))), 413),
    ]
    for kwargs, expected in cases:
        response = await stack.post("/start-job", **kwargs)
        assert response.status_code == expected, (kwargs, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"]
    unknown_sheep = await stack.post("/start-job", json=echo(job_id, sheep_id="nosuchsheep"))
    assert "nosuchsheep" in unknown_sheep.json()["detail"]
    extra = await stack.post("/start-job", json={**echo(job_id), "colour": "red"})
    assert extra.json()["errors"][0]["field"] == "colour"
    assert (await stack.get("/jobs/..%2Fx/status")).status_code in {400, 404}
    assert (await stack.get("/jobs/-bad/status")).status_code == 400
    assert (await stack.get(f"/jobs/{job_id}/status")).status_code == 404
    assert (await stack.get(f"/jobs/{job_id}/result")).status_code == 404
    # Nothing crashed: the next job still runs.
    await stack.post("/start-job", json=echo(job_id, payload=1))
    assert (await wait_done(stack, job_id))["state"] == "done"


async def test_missing_result_file_is_404(stack, job_id):
    await stack.post("/start-job", json=echo(job_id, payload=1))
    await wait_done(stack, job_id)
    assert (await stack.get(f"/jobs/{job_id}/result/nope.json")).status_code == 404


async def test_service_endpoints(stack):
    health = await stack.get("/health")
    assert health.json() == {"healthy": True, "broker": {"ok": True}, "storage": {"ok": True}}
    fleet = (await stack.get("/status")).json()
    assert set(fleet["sheep"]) == {"s1", "s2"}
    for sheep in fleet["sheep"].values():
        assert sheep["alive"] is True
        assert sheep["queue_depth"] == 0
    assert fleet["pool"]["queue_depth"] == 0
    spec = (await stack.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert "/start-job" in spec["paths"]
    docs = await stack.get("/docs")
    assert docs.status_code == 200
    assert "/start-job" in docs.text


async def assert_unreadable(stack, job_id: str, path: str, record: str) -> None:
    answer = await stack.get(f"/jobs/{job_id}{path}")
    assert answer.status_code == 409, (path, answer.text)
    problem = answer.json()
    assert problem["object"] == f"{job_id}/{record}"
    assert f"{job_id}/{record} is unreadable" in problem["detail"]


async def test_a_damaged_status_is_a_409_naming_it_never_a_500(
    stack, minio_client, test_bucket, job_id
):
    assert (await stack.post("/start-job", json=echo(job_id, payload={"n": 1}))).status_code == 202
    assert (await wait_done(stack, job_id))["state"] == "done"
    await put(minio_client, test_bucket, f"{job_id}/status.json", b'{"not": "a status"}')
    for path in ("/status", "/result", "/ready"):
        await assert_unreadable(stack, job_id, path, "status.json")


async def test_a_damaged_job_record_is_a_409_naming_it_never_a_500(
    stack, minio_client, test_bucket, job_id
):
    """A job.json this gateway did not write (so has not in memory), damaged."""
    await put(minio_client, test_bucket, f"{job_id}/job.json", b"\xff not json")
    await assert_unreadable(stack, job_id, "/status", "job.json")
    repeat = await stack.post("/start-job", json=echo(job_id, payload={"n": 1}))
    assert repeat.status_code == 409, repeat.text
    assert f"{job_id}/job.json is unreadable" in repeat.json()["detail"]
